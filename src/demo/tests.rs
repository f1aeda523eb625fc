use super::*;

/// A small study covering the default field of view (fast in debug builds).
pub(super) fn small(seed: u64) -> DemoStudy {
    generate(&DemoOptions {
        dims: [96, 96, 60],
        spacing_mm: [358.4 / 96.0, 358.4 / 96.0, 5.0],
        seed,
    })
}

/// The default study at the small size, shared by the read-only tests.
fn shared() -> &'static DemoStudy {
    static STUDY: std::sync::OnceLock<DemoStudy> = std::sync::OnceLock::new();
    STUDY.get_or_init(|| small(DEFAULT_SEED))
}

/// Mean HU and voxel count per label 0..=4.
fn label_stats(s: &DemoStudy) -> [(f64, usize); 5] {
    let mut sum = [0.0f64; 5];
    let mut n = [0usize; 5];
    for (&v, &l) in s.ct.voxels.iter().zip(&s.truth.voxels) {
        sum[l as usize] += v as f64;
        n[l as usize] += 1;
    }
    std::array::from_fn(|l| (sum[l] / n[l].max(1) as f64, n[l]))
}

/// World (LPS, mm) centre of voxel (i, j, k).
fn world(s: &DemoStudy, i: usize, j: usize, k: usize) -> [f64; 3] {
    let p =
        s.ct.geometry
            .world_at_voxel(nalgebra::Vector3::new(i as f64, j as f64, k as f64));
    [p.x, p.y, p.z]
}

/// Voxel nearest to a world position.
fn voxel(s: &DemoStudy, w: [f64; 3]) -> [usize; 3] {
    let v = s.ct.geometry.voxel_at_world(nalgebra::Point3::from(w));
    let d = s.ct.dims();
    std::array::from_fn(|a| (v[a].round().max(0.0) as usize).min(d[a] - 1))
}

#[test]
fn geometry_is_lps_centred_and_labels_are_in_the_table() {
    let s = shared();
    assert_eq!(s.ct.dims(), [96, 96, 60]);
    assert_eq!(s.ct.geometry, s.truth.geometry);
    assert_eq!(s.ct.geometry.orientation_code(), "LPS");
    assert!(s.ct.geometry.validate().is_ok());
    let c = world(s, 0, 0, 0);
    let e = world(s, 95, 95, 59);
    for a in 0..3 {
        assert!(
            (c[a] + e[a]).abs() < 1e-6,
            "volume is centred on the origin"
        );
    }
    assert!(s.truth.voxels.iter().all(|&l| l <= label::CONSOLIDATION));
    let (lo, hi) = s.ct.min_max().unwrap();
    assert!(lo >= -1024 && hi <= 3071, "{lo}..{hi}");
    assert!(hi > 500, "bone present");
    assert!(s.description.contains("ground-glass") && s.description.contains("consolidation"));
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let a = shared();
    let b = small(DEFAULT_SEED);
    assert!(a.ct.voxels == b.ct.voxels, "CT is deterministic");
    assert!(a.truth.voxels == b.truth.voxels, "labels are deterministic");
    assert_eq!(a.description, b.description);
    let c = small(DEFAULT_SEED + 1);
    assert!(a.ct.voxels != c.ct.voxels);
    assert!(
        a.truth.voxels != c.truth.voxels,
        "lesions move with the seed"
    );
}

#[test]
fn output_does_not_depend_on_thread_count() {
    let options = DemoOptions {
        dims: [64, 64, 24],
        spacing_mm: [5.6, 5.6, 12.5],
        seed: 99,
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| generate(&options));
    let many = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap()
        .install(|| generate(&options));
    assert!(one.ct.voxels == many.ct.voxels);
    assert!(one.truth.voxels == many.truth.voxels);
}

#[test]
fn hounsfield_units_match_the_labels() {
    let stats = label_stats(shared());
    let [_, left, right, ggo, cons] = stats;
    for (name, (mean, n)) in [("left lung", left), ("right lung", right)] {
        assert!(n > 1000, "{name}: {n} voxels");
        assert!((mean + 850.0).abs() < 80.0, "{name} mean {mean:.0} HU");
    }
    assert!(ggo.1 > 20, "GGO voxels: {}", ggo.1);
    assert!(ggo.0 > -750.0 && ggo.0 < -250.0, "GGO mean {:.0} HU", ggo.0);
    assert!(cons.1 > 20, "consolidation voxels: {}", cons.1);
    assert!(
        cons.0 > -150.0 && cons.0 < 80.0,
        "consolidation mean {:.0} HU",
        cons.0
    );
}

#[test]
fn left_lung_is_on_the_patients_left_and_smaller() {
    let s = shared();
    let [nx, ny, nz] = s.ct.dims();
    // Body centre: centroid (x) of everything denser than -500 HU.
    let (mut body_x, mut body_n) = (0.0, 0usize);
    let mut lung_x = [0.0f64; 3];
    let mut lung_n = [0usize; 3];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let x = world(s, i, j, k)[0];
                if s.ct.get(i, j, k) > -500 {
                    body_x += x;
                    body_n += 1;
                }
                let l = s.truth.get(i, j, k) as usize;
                if l == 1 || l == 2 {
                    lung_x[l] += x;
                    lung_n[l] += 1;
                }
            }
        }
    }
    let centre = body_x / body_n as f64;
    assert!(centre.abs() < 15.0, "body centred, got {centre:.1} mm");
    let left = lung_x[1] / lung_n[1] as f64;
    let right = lung_x[2] / lung_n[2] as f64;
    assert!(
        left > centre + 40.0,
        "left lung centroid x {left:.1} (+x = patient left)"
    );
    assert!(right < centre - 40.0, "right lung centroid x {right:.1}");
    assert!(
        lung_n[1] < lung_n[2],
        "left lung is the smaller one (the heart)"
    );
    assert!(lung_n[1] * 10 > lung_n[2] * 7, "but not much smaller");
}

#[test]
fn trachea_carries_air_above_the_carina() {
    let s = shared();
    // The trachea runs down the midline to the carina at about 40 mm above the centre
    // of the field of view; check 30-90 mm above the carina.
    for z in [70.0, 100.0, 130.0] {
        let [_, _, k] = voxel(s, [0.0, 0.0, z]);
        let mut darkest = i16::MAX;
        for y in -5..=30 {
            for x in -10..=10 {
                let [i, j, _] = voxel(s, [x as f64, y as f64, z]);
                darkest = darkest.min(s.ct.get(i, j, k));
                assert_eq!(s.truth.get(i, j, k), 0, "the trachea is not lung");
            }
        }
        assert!(
            darkest < -900,
            "air in the trachea at z = {z}: darkest {darkest} HU"
        );
    }
    // Below the carina there is no air at the midline (mediastinum, heart).
    let [_, _, k] = voxel(s, [0.0, 0.0, -20.0]);
    let [i, j, _] = voxel(s, [0.0, 0.0, -20.0]);
    assert!(s.ct.get(i, j, k) > -200);
}

#[test]
fn lesions_lie_inside_the_lungs() {
    let s = shared();
    let [nx, ny, nz] = s.ct.dims();
    let mut lung_lo = [usize::MAX; 3];
    let mut lung_hi = [0usize; 3];
    let mut lesions = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                match s.truth.get(i, j, k) {
                    1 | 2 => {
                        for (a, v) in [i, j, k].into_iter().enumerate() {
                            lung_lo[a] = lung_lo[a].min(v);
                            lung_hi[a] = lung_hi[a].max(v);
                        }
                    }
                    3 | 4 => lesions.push([i, j, k]),
                    _ => {}
                }
            }
        }
    }
    assert!(!lesions.is_empty());
    for p in &lesions {
        for a in 0..3 {
            assert!(
                p[a] >= lung_lo[a] && p[a] <= lung_hi[a],
                "lesion voxel {p:?} outside the lungs' box"
            );
        }
        // Every lesion voxel touches lung or lesion in its 26-neighbourhood... and is
        // not isolated in soft tissue.
        let [i, j, k] = *p;
        let mut lungish = 0;
        for dk in -1i64..=1 {
            for dj in -1i64..=1 {
                for di in -1i64..=1 {
                    let (a, b, c) = (i as i64 + di, j as i64 + dj, k as i64 + dk);
                    if a >= 0
                        && b >= 0
                        && c >= 0
                        && (a as usize) < nx
                        && (b as usize) < ny
                        && (c as usize) < nz
                    {
                        lungish += (s.truth.get(a as usize, b as usize, c as usize) != 0) as usize;
                    }
                }
            }
        }
        assert!(lungish > 1, "lesion voxel {p:?} is isolated");
    }
}

#[test]
fn body_is_surrounded_by_air() {
    let s = shared();
    let [nx, ny, nz] = s.ct.dims();
    for k in 0..nz {
        for t in 0..nx.max(ny) {
            for (i, j) in [
                (t.min(nx - 1), 0),
                (t.min(nx - 1), ny - 1),
                (0, t.min(ny - 1)),
                (nx - 1, t.min(ny - 1)),
            ] {
                assert!(s.ct.get(i, j, k) < -900, "air at the edge ({i}, {j}, {k})");
                assert_eq!(s.truth.get(i, j, k), 0);
            }
        }
    }
    // ... and the body itself is there: soft tissue at the centre of the chest wall.
    let mid = s.ct.get(nx / 2, ny / 2, nz / 2);
    assert!(mid > -200, "mediastinum at the centre: {mid} HU");
}

#[test]
fn coarser_grid_shows_the_same_anatomy() {
    let a = shared();
    let b = generate(&DemoOptions {
        dims: [64, 64, 40],
        spacing_mm: [5.6, 5.6, 7.5],
        seed: DEFAULT_SEED,
    });
    let volume = |s: &DemoStudy, l: u8| {
        let sp = s.ct.geometry.spacing_mm;
        s.truth.voxels.iter().filter(|&&v| v == l).count() as f64 * sp.x * sp.y * sp.z
    };
    for l in [1, 2] {
        let (va, vb) = (volume(a, l), volume(&b, l));
        assert!(
            (va - vb).abs() < 0.06 * va,
            "label {l}: {va:.0} vs {vb:.0} mm³"
        );
        // Roughly adult lung volumes (mL).
        assert!(
            va / 1000.0 > 1000.0 && va / 1000.0 < 3500.0,
            "label {l}: {:.0} mL",
            va / 1000.0
        );
    }
}

#[test]
#[ignore = "timing of the default 512 x 512 x 300 study; run with --release --nocapture"]
fn default_size_timing() {
    let options = DemoOptions::default();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let s = generate(&options);
        let dt = t.elapsed().as_secs_f64();
        best = best.min(dt);
        assert_eq!(s.ct.voxels.len(), 512 * 512 * 300);
        println!(
            "default study generated in {dt:.2} s ({} threads)",
            rayon::current_num_threads()
        );
    }
    let t = std::time::Instant::now();
    let anatomy = model::Anatomy::build(options.seed);
    println!(
        "of which the anatomy model (trees, lesions): {:.3} s, {} capsules",
        t.elapsed().as_secs_f64(),
        anatomy.capsules.len()
    );
    let s = generate(&options);
    for (l, (mean, n)) in label_stats(&s).iter().enumerate() {
        println!("label {l}: {n} voxels, mean {mean:.0} HU");
    }
    println!("best {best:.2} s");
}

/// Writes axial, coronal and sagittal lung-window PNGs of a study to /tmp/demo_*.png.
pub(super) fn save_pngs(study: &DemoStudy, prefix: &str) {
    let [nx, ny, nz] = study.ct.dims();
    let lung = |v: i16| -> u8 {
        let (w, l) = (1500.0f32, -600.0f32);
        (((v as f32 - (l - w / 2.0)) / w).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    let soft = |v: i16| -> u8 {
        let (w, l) = (400.0f32, 40.0f32);
        (((v as f32 - (l - w / 2.0)) / w).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    let sp = study.ct.geometry.spacing_mm;
    let save_w = |name: &str,
                  w: usize,
                  h: usize,
                  aspect: f64,
                  f: &dyn Fn(usize, usize) -> i16,
                  window: &dyn Fn(i16) -> u8| {
        // Stretch rows so that pixels are square in millimetres.
        let out_h = ((h as f64) * aspect).round().max(1.0) as usize;
        let mut img = image::GrayImage::new(w as u32, out_h as u32);
        for r in 0..out_h {
            let src = ((r as f64 + 0.5) / aspect).floor().min(h as f64 - 1.0) as usize;
            for c in 0..w {
                img.put_pixel(c as u32, r as u32, image::Luma([window(f(c, src))]));
            }
        }
        let path = format!("/tmp/demo_{prefix}{name}.png");
        img.save(&path).unwrap();
        println!("wrote {path}");
    };
    let save = |name: &str, w: usize, h: usize, aspect: f64, f: &dyn Fn(usize, usize) -> i16| {
        save_w(name, w, h, aspect, f, &lung);
        if name.starts_with("axial") {
            save_w(&format!("{name}_soft"), w, h, aspect, f, &soft);
        }
    };
    let ct = &study.ct;
    for (tag, k) in [
        ("axial_carina", (nz as f64 * (190.0 / 300.0)) as usize),
        ("axial_heart", (nz as f64 * (125.0 / 300.0)) as usize),
        ("axial_upper", (nz as f64 * (240.0 / 300.0)) as usize),
        ("axial_base", (nz as f64 * (75.0 / 300.0)) as usize),
    ] {
        save(tag, nx, ny, sp.y / sp.x, &|c, r| ct.get(c, r, k));
    }
    let anatomy = model::Anatomy::build(DEFAULT_SEED);
    for (n, l) in anatomy.lesions.iter().enumerate() {
        let k = (((l.center[2] + REF_FOV_MM[2] / 2.0) / REF_FOV_MM[2]) * nz as f32) as usize;
        let kind = match l.kind {
            LesionKind::GroundGlass => "ggo",
            LesionKind::Consolidation => "cons",
        };
        save_w(
            &format!("lesion{n}_{kind}"),
            nx,
            ny,
            sp.y / sp.x,
            &|c, r| ct.get(c, r, k.min(nz - 1)),
            &lung,
        );
    }
    if nx >= 256 {
        // A 2x zoom into the right lung at the level of the heart.
        let k = (nz as f64 * (125.0 / 300.0)) as usize;
        let (i0, j0, n) = (nx * 8 / 100, ny * 22 / 100, nx / 2);
        save_w(
            "zoom",
            2 * n,
            2 * n,
            1.0,
            &|c, r| ct.get(i0 + c / 2, j0 + r / 2, k),
            &lung,
        );
    }
    save("coronal", nx, nz, sp.z / sp.x, &|c, r| {
        ct.get(c, ny * 55 / 100, nz - 1 - r)
    });
    save("sagittal", ny, nz, sp.z / sp.y, &|c, r| {
        ct.get(nx * 40 / 100, c, nz - 1 - r)
    });
    save("sagittal_mid", ny, nz, sp.z / sp.y, &|c, r| {
        ct.get(nx / 2, c, nz - 1 - r)
    });
}

#[test]
#[ignore = "writes /tmp/demo_*.png for a visual check"]
fn write_pngs() {
    let s = small(DEFAULT_SEED);
    save_pngs(&s, "small_");
    let t = std::time::Instant::now();
    let s = generate(&DemoOptions::default());
    println!(
        "default size generated in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    save_pngs(&s, "");
    println!("{}", s.description);
}

#[test]
fn tiny_and_odd_grids_work() {
    for dims in [[1, 1, 1], [3, 2, 1], [7, 5, 2]] {
        let s = generate(&DemoOptions {
            dims,
            spacing_mm: [
                358.4 / dims[0] as f64,
                358.4 / dims[1] as f64,
                300.0 / dims[2] as f64,
            ],
            seed: 1,
        });
        assert_eq!(s.ct.voxels.len(), dims.iter().product::<usize>());
        assert_eq!(s.truth.voxels.len(), s.ct.voxels.len());
    }
}
