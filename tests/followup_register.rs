//! Registration of a follow-up to its baseline: a small synthetic chest with a known
//! deformation (recovered within a voxel), the displacement field as SimpleITK reads and
//! applies it (oblique, anisotropic grids), and the `pulmo register` / `pulmo progress`
//! commands, including their refusals.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use nalgebra::{Matrix4, Point3, Rotation3, Vector3};
use pulmo::followup::{DisplacementField, Pair, RegisterOptions, Steps, Transform, register};
use pulmo::io::nifti::{read_nifti_vectors, write_nifti, write_nifti_vectors};
use pulmo::volume::{Geometry, Volume};

/// Vessel-like blobs inside the lungs (world mm, LPS) and their radii.
fn vessels() -> Vec<(Vector3<f64>, f64)> {
    let mut out = Vec::new();
    let mut s: u64 = 12345;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f64) / (1u64 << 31) as f64
    };
    for _ in 0..60 {
        let side = if next() < 0.5 { -1.0 } else { 1.0 };
        let c = Vector3::new(
            side * (35.0 + 25.0 * (next() - 0.5)),
            -10.0 + 40.0 * (next() - 0.5),
            60.0 * (next() - 0.5),
        );
        out.push((c, 2.5 + 3.0 * next()));
    }
    out
}

/// The phantom's lungs: two ellipsoids.
fn in_lung(p: &Point3<f64>) -> bool {
    [-1.0, 1.0].iter().any(|side| {
        let q = Vector3::new(p.x - side * 38.0, p.y + 5.0, p.z);
        (q.x / 28.0).powi(2) + (q.y / 45.0).powi(2) + (q.z / 55.0).powi(2) <= 1.0
    })
}

/// HU of the phantom at world point `p`: air, a soft-tissue body, lungs with vessels.
fn phantom_hu(p: &Point3<f64>, vessels: &[(Vector3<f64>, f64)]) -> f64 {
    if (p.x / 110.0).powi(2) + ((p.y + 5.0) / 80.0).powi(2) > 1.0 {
        return -1000.0;
    }
    if !in_lung(p) {
        return 30.0;
    }
    let mut hu: f64 = -860.0;
    for (c, r) in vessels {
        let d2 = (p.coords - c).norm_squared();
        hu += 900.0 * (-d2 / (2.0 * r * r)).exp();
    }
    hu.min(60.0)
}

/// The true fixed → moving map: a rotation and translation, then a smooth bump.
fn truth(x: &Point3<f64>) -> Point3<f64> {
    let bump = Vector3::new(
        3.0 * (x.z / 25.0).sin() * (x.y / 40.0).cos(),
        2.0 * (x.x / 30.0).sin(),
        3.0 * (x.y / 35.0).cos() * (x.x / 45.0).sin(),
    );
    let rigid = Matrix4::new_translation(&Vector3::new(4.0, -3.0, 5.0))
        * Rotation3::from_euler_angles(0.03, -0.02, 0.04).to_homogeneous();
    rigid.transform_point(&(x + bump))
}

fn oblique(dims: [usize; 3], spacing: [f64; 3], angle: f64) -> Geometry {
    let mut g = Geometry::axis_aligned(dims, spacing, [0.0; 3]);
    g.direction = *Rotation3::from_euler_angles(angle, 0.5 * angle, -angle).matrix();
    // Centre the grid on the world origin.
    let half = Vector3::from_fn(|a, _| (dims[a] as f64 - 1.0) / 2.0 * spacing[a]);
    g.origin_mm = -(g.direction * half);
    g
}

/// The CT and lung mask of the phantom seen through `map` (fixed image = phantom(map(x))).
fn render(g: &Geometry, map: &dyn Fn(&Point3<f64>) -> Point3<f64>) -> (Volume<i16>, Volume<u8>) {
    let vs = vessels();
    let mut ct = Volume::filled(g.clone(), 0i16).unwrap();
    let mut lungs = Volume::filled(g.clone(), 0u8).unwrap();
    for k in 0..g.dims[2] {
        for j in 0..g.dims[1] {
            for i in 0..g.dims[0] {
                let x = g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                let y = map(&x);
                ct.set(i, j, k, phantom_hu(&y, &vs).round() as i16);
                lungs.set(i, j, k, u8::from(in_lung(&y)));
            }
        }
    }
    (ct, lungs)
}

#[test]
fn a_known_deformation_is_recovered_within_a_voxel() {
    let fixed_grid = oblique([72, 60, 40], [2.5, 2.5, 3.5], 0.1);
    let moving_grid = oblique([70, 62, 42], [2.4, 2.4, 3.2], -0.05);
    let (fixed, fixed_lungs) = render(&fixed_grid, &truth);
    let (moving, moving_lungs) = render(&moving_grid, &|p| *p);
    let cancel = AtomicBool::new(false);
    let progress = |_: &str, _: f64| {};
    let pair = Pair {
        fixed: &fixed,
        moving: &moving,
        fixed_lungs: Some(&fixed_lungs),
        moving_lungs: Some(&moving_lungs),
        fixed_lesions: None,
        moving_lesions: None,
        fixed_name: "fixed",
        moving_name: "moving",
    };
    let steps = Steps {
        cancel: &cancel,
        progress: &progress,
    };
    let r = register(&pair, &RegisterOptions::default(), &steps).unwrap();
    let mut before = Vec::new();
    let mut after = Vec::new();
    let g = &fixed_grid;
    for k in 0..g.dims[2] {
        for j in 0..g.dims[1] {
            for i in 0..g.dims[0] {
                if fixed_lungs.get(i, j, k) == 0 {
                    continue;
                }
                let x = g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                before.push((truth(&x) - x).norm());
                after.push((truth(&x) - r.transform.map(&x)).norm());
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    after.sort_by(f64::total_cmp);
    let p95 = after[after.len() * 95 / 100];
    eprintln!(
        "TRE before {:.2} mm, after mean {:.2} p95 {p95:.2} mm; {:?}",
        mean(&before),
        mean(&after),
        r.report.jacobian
    );
    assert!(mean(&before) > 5.0, "the test deformation is too small");
    assert!(mean(&after) < 1.0, "mean TRE {:.2} mm", mean(&after));
    assert!(p95 < 2.0, "p95 TRE {p95:.2} mm");
    let j = r.report.jacobian.unwrap();
    assert!(j.folded_pct < 0.1, "{j:?}");
    assert!(r.report.lung_dice_final.unwrap() > r.report.lung_dice_affine.unwrap());

    // Cancelled before it starts: an error, nothing else.
    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(register(&pair, &RegisterOptions::default(), &steps).is_err());
}

#[test]
fn simpleitk_applies_the_written_field_as_pulmo_does() {
    let Some(python) = common::tools_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Oblique, anisotropic grids that differ between fixed and moving.
    let fixed_grid = oblique([40, 36, 20], [1.7, 1.3, 3.1], 0.15);
    let moving_grid = oblique([44, 34, 22], [1.5, 1.6, 2.7], -0.1);
    let (moving, _) = render(&moving_grid, &|p| *p);
    // A transform with an affine part and a field on a coarser grid.
    let coarse = oblique([12, 11, 8], [6.0, 5.0, 8.0], 0.15);
    let mut field = DisplacementField::zeros(&coarse);
    for k in 0..8 {
        for j in 0..11 {
            for i in 0..12 {
                let x = coarse.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                field.vectors_mm[coarse.index(i, j, k)] = [
                    (2.0 * (x.y / 20.0).sin()) as f32,
                    (-1.5 * (x.z / 15.0).cos()) as f32,
                    (1.0 * (x.x / 25.0).sin()) as f32,
                ];
            }
        }
    }
    let t = Transform {
        moving_from_fixed: Matrix4::new_translation(&Vector3::new(2.0, -1.0, 3.0))
            * Rotation3::from_euler_angles(0.02, 0.03, -0.01).to_homogeneous(),
        field: Some(field),
    };
    let displacement = t.displacement_on(&fixed_grid);
    let field_path = dir.path().join("displacement.nii.gz");
    write_nifti_vectors(&field_path, &displacement.clone().into_volume()).unwrap();
    // Read back by pulmo: the same vectors and grid.
    let back = read_nifti_vectors(&field_path).unwrap();
    assert!(back.geometry.grid_difference(&fixed_grid).is_none());
    assert_eq!(back.voxels, displacement.vectors_mm);
    let fixed_ref = Volume::filled(fixed_grid.clone(), 0i16).unwrap();
    write_nifti(&dir.path().join("fixed.nii.gz"), &fixed_ref).unwrap();
    write_nifti(&dir.path().join("moving.nii.gz"), &moving).unwrap();
    let warped = t.warp_ct(&moving, &fixed_grid, -1000);
    write_nifti(&dir.path().join("warped.nii.gz"), &warped).unwrap();
    // Points: fixed voxel centres (LPS, as ITK uses), mapped by pulmo.
    let mut lines = String::new();
    for (i, j, k) in [(3, 4, 2), (20, 18, 10), (35, 30, 17), (11, 27, 6)] {
        let x = fixed_grid.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
        let y = t.map(&x);
        lines += &format!("{} {} {} {} {} {}\n", x.x, x.y, x.z, y.x, y.y, y.z);
    }
    std::fs::write(dir.path().join("points.txt"), lines).unwrap();
    let script = r#"
import sys, SimpleITK as sitk, numpy as np
d = sys.argv[1]
field = sitk.ReadImage(d + '/displacement.nii.gz')
assert field.GetNumberOfComponentsPerPixel() == 3, field.GetNumberOfComponentsPerPixel()
tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
worst = 0.0
for line in open(d + '/points.txt'):
    v = [float(s) for s in line.split()]
    got = tx.TransformPoint(tuple(v[:3]))
    worst = max(worst, float(np.linalg.norm(np.array(got) - np.array(v[3:]))))
fixed = sitk.ReadImage(d + '/fixed.nii.gz')
moving = sitk.Cast(sitk.ReadImage(d + '/moving.nii.gz'), sitk.sitkFloat32)
res = sitk.Resample(moving, fixed, tx, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
ours = sitk.GetArrayFromImage(sitk.ReadImage(d + '/warped.nii.gz')).astype(np.float64)
theirs = sitk.GetArrayFromImage(res).astype(np.float64)
inside = (theirs > -999) & (ours > -999)
print(worst, float(np.abs(ours - theirs)[inside].mean()), float(inside.mean()))
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SimpleITK failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(v.len(), 3, "{text}");
    eprintln!(
        "SimpleITK vs pulmo: point error {:.5} mm, mean |HU| {:.3}, overlap {:.2}",
        v[0], v[1], v[2]
    );
    // Points: float32 vectors and SimpleITK's linear interpolation of the field at
    // voxel centres (exact there).
    assert!(
        v[0] < 1e-3,
        "SimpleITK maps fixed points {:.5} mm away from pulmo",
        v[0]
    );
    // Images: both interpolate the moving CT linearly at the same points (pulmo
    // rounds to integer HU).
    assert!(v[1] < 1.0, "mean |HU| difference {:.3}", v[1]);
    assert!(v[2] > 0.5, "too little overlap to compare: {:.2}", v[2]);
}

fn pulmo(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pulmo"))
        .args(args)
        .output()
        .unwrap()
}

fn write_pair(dir: &Path) {
    let fixed_grid = oblique([48, 40, 28], [3.5, 3.5, 5.0], 0.05);
    let moving_grid = oblique([48, 40, 28], [3.5, 3.5, 5.0], 0.0);
    let (fixed, fixed_lungs) = render(&fixed_grid, &truth);
    let (moving, moving_lungs) = render(&moving_grid, &|p| *p);
    write_nifti(&dir.join("fixed.nii.gz"), &fixed).unwrap();
    write_nifti(&dir.join("moving.nii.gz"), &moving).unwrap();
    // Labels: lungs 1, and a "lesion" in the baseline that is consolidation later.
    let mut fl = fixed_lungs.clone();
    let mut ml = moving_lungs.clone();
    for k in 12..16 {
        for j in 16..22 {
            for i in 8..14 {
                if ml.get(i, j, k) > 0 {
                    ml.set(i, j, k, 3);
                }
            }
        }
    }
    for v in fl.voxels.iter_mut() {
        if *v > 0 {
            *v = 1;
        }
    }
    write_nifti(&dir.join("fixed_lungs.nii.gz"), &fixed_lungs).unwrap();
    write_nifti(&dir.join("moving_lungs.nii.gz"), &moving_lungs).unwrap();
    write_nifti(&dir.join("fixed_labels.nii.gz"), &fl).unwrap();
    write_nifti(&dir.join("moving_labels.nii.gz"), &ml).unwrap();
}

#[test]
fn register_and_progress_commands_write_their_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pair(d);
    let out_dir = d.join("reg");
    let o = pulmo(&[
        "register".as_ref(),
        d.join("fixed.nii.gz").as_os_str(),
        d.join("moving.nii.gz").as_os_str(),
        "-o".as_ref(),
        out_dir.as_os_str(),
        "--fixed-mask".as_ref(),
        d.join("fixed_lungs.nii.gz").as_os_str(),
        "--moving-mask".as_ref(),
        d.join("moving_lungs.nii.gz").as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "displacement.nii.gz",
        "moving_warped.nii.gz",
        "registration.json",
    ] {
        assert!(out_dir.join(f).is_file(), "{f} missing");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("registration.json")).unwrap())
            .unwrap();
    let dice = report["registration"]["lung_dice_final"].as_f64().unwrap();
    assert!(dice > 0.9, "lung Dice {dice}");
    assert!(
        report["registration"]["jacobian"]["folded_pct"]
            .as_f64()
            .unwrap()
            < 0.1
    );

    // Progress from that registration: the baseline lesion (ground-glass in the
    // baseline, healthy lung at follow-up) is resolved.
    let p_dir = d.join("progress");
    let o = pulmo(&[
        "progress".as_ref(),
        "--baseline".as_ref(),
        d.join("moving.nii.gz").as_os_str(),
        "--baseline-labels".as_ref(),
        d.join("moving_labels.nii.gz").as_os_str(),
        "--followup".as_ref(),
        d.join("fixed.nii.gz").as_os_str(),
        "--followup-labels".as_ref(),
        d.join("fixed_labels.nii.gz").as_os_str(),
        "--registration".as_ref(),
        out_dir.as_os_str(),
        "-o".as_ref(),
        p_dir.as_os_str(),
        "--json".as_ref(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let lesions = report["lesions"].as_array().unwrap();
    assert_eq!(lesions.len(), 1, "{lesions:?}");
    assert_eq!(lesions[0]["kind"], "resolved");
    let both = report["volumes"]["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["region"] == "both")
        .unwrap();
    let resolved_ggo = both["ml"][4].as_f64().unwrap();
    let truth_ml = lesions[0]["baseline_ml"].as_f64().unwrap();
    assert!(resolved_ggo > 0.0 && (resolved_ggo - truth_ml).abs() < 1e-6);
    assert!(p_dir.join("transitions.nii.gz").is_file());
    // Each time point measured on its own grid; the CSV carries the same figures.
    let points = report["time_points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert!(points[0]["ggo_ml"].as_f64().unwrap() > 0.0);
    let csv = std::fs::read_to_string(p_dir.join("progress.csv")).unwrap();
    let row = csv.lines().find(|l| l.starts_with("both,")).unwrap();
    let csv_resolved: f64 = row.split(',').nth(3).unwrap().parse().unwrap();
    assert!((csv_resolved - resolved_ggo).abs() < 1e-3, "{row}");
    assert!(csv.lines().any(|l| l.starts_with("1,resolved,")), "{csv}");
}

#[test]
fn register_refuses_lungs_that_do_not_overlap_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pair(d);
    // A "moving" lung mask at the far end of the grid: nothing overlaps the fixed lungs.
    let g = oblique([48, 40, 28], [3.5, 3.5, 5.0], 0.0);
    let mut far = Volume::filled(g, 0u8).unwrap();
    for k in 0..3 {
        for j in 0..3 {
            for i in 0..3 {
                far.set(i, j, k, 1);
            }
        }
    }
    write_nifti(&d.join("far.nii.gz"), &far).unwrap();
    let o = pulmo(&[
        "register".as_ref(),
        d.join("fixed.nii.gz").as_os_str(),
        d.join("moving.nii.gz").as_os_str(),
        "-o".as_ref(),
        d.join("out").as_os_str(),
        "--fixed-mask".as_ref(),
        d.join("fixed_lungs.nii.gz").as_os_str(),
        "--moving-mask".as_ref(),
        d.join("far.nii.gz").as_os_str(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fixed.nii.gz") && err.contains("moving.nii.gz"),
        "{err}"
    );
    assert!(err.contains("do not overlap"), "{err}");
    assert!(!d.join("out/displacement.nii.gz").exists());
}

#[test]
fn timeline_tables_each_time_point_and_refuses_unpaired_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_pair(d);
    let out = d.join("timeline");
    let o = pulmo(&[
        "timeline".as_ref(),
        "--ct".as_ref(),
        d.join("moving.nii.gz").as_os_str(),
        d.join("fixed.nii.gz").as_os_str(),
        "--labels".as_ref(),
        d.join("moving_labels.nii.gz").as_os_str(),
        d.join("fixed_labels.nii.gz").as_os_str(),
        "--names".as_ref(),
        "day 0".as_ref(),
        "day 9".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("timeline.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows[1].starts_with("day 0,") && rows[2].starts_with("day 9,"));
    // The baseline has ground-glass, the follow-up none.
    let ggo = |row: &str| row.split(',').nth(5).unwrap().parse::<f64>().unwrap();
    assert!(ggo(rows[1]) > 0.0 && ggo(rows[2]) == 0.0, "{csv}");
    // The plot: a PNG with the ground-glass colour in it.
    let plot = image::open(out.join("timeline.png")).unwrap().to_rgba8();
    assert!(plot.width() >= 600);
    assert!(plot.pixels().filter(|p| p.0 == [230, 150, 20, 255]).count() > 50);
    let o = pulmo(&[
        "timeline".as_ref(),
        "--ct".as_ref(),
        d.join("moving.nii.gz").as_os_str(),
        d.join("fixed.nii.gz").as_os_str(),
        "--labels".as_ref(),
        d.join("moving_labels.nii.gz").as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 CTs but 1 label maps"));
}
