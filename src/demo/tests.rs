use super::*;

/// A small study covering the default field of view (fast in debug builds).
pub(super) fn small(seed: u64) -> DemoStudy {
    generate(&DemoOptions {
        dims: [96, 96, 60],
        spacing_mm: [358.4 / 96.0, 358.4 / 96.0, 5.0],
        seed,
    })
}

#[test]
fn small_study_generates() {
    let s = small(DEFAULT_SEED);
    assert_eq!(s.ct.dims(), [96, 96, 60]);
    println!("{}", s.description);
}

/// Writes axial, coronal and sagittal lung-window PNGs of a study to /tmp/demo_*.png.
pub(super) fn save_pngs(study: &DemoStudy, prefix: &str) {
    let [nx, ny, nz] = study.ct.dims();
    let window = |v: i16| -> u8 {
        let (w, l) = (1500.0f32, -600.0f32);
        (((v as f32 - (l - w / 2.0)) / w).clamp(0.0, 1.0) * 255.0).round() as u8
    };
    let sp = study.ct.geometry.spacing_mm;
    let save = |name: &str, w: usize, h: usize, aspect: f64, f: &dyn Fn(usize, usize) -> i16| {
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
    let ct = &study.ct;
    for (tag, k) in [
        ("axial_carina", (nz as f64 * (190.0 / 300.0)) as usize),
        ("axial_heart", (nz as f64 * (125.0 / 300.0)) as usize),
        ("axial_upper", (nz as f64 * (240.0 / 300.0)) as usize),
        ("axial_base", (nz as f64 * (75.0 / 300.0)) as usize),
    ] {
        save(tag, nx, ny, sp.y / sp.x, &|c, r| ct.get(c, r, k));
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
