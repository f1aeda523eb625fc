//! NIfTI and NRRD readers (and the NIfTI writer) on real chest CT files from
//! `../shared/data` (or `$PULMO_DATA`). Without the data the tests are skipped, except in
//! CI (`CI=true`), where the data is required.

use std::path::{Path, PathBuf};
use std::time::Instant;

use pulmo::io::nifti::{read_nifti_ct, read_nifti_labels, write_nifti};
use pulmo::io::nrrd::{read_nrrd_ct, read_nrrd_i32, read_nrrd_labels};
use pulmo::volume::{Geometry, Volume};

mod common;

/// A file of the real data, or `None` (skip) when it is missing (fails in CI).
fn data_file(relative: &str) -> Option<PathBuf> {
    common::data_dir(relative)
}

fn assert_spacing(g: &Geometry, expected: [f64; 3], tol: f64) {
    for a in 0..3 {
        assert!(
            (g.spacing_mm[a] - expected[a]).abs() <= tol,
            "spacing {:?} mm, expected {expected:?}",
            g.spacing_mm
        );
    }
}

/// (sum, sum of value * x-fastest linear index modulo 1000003): a cheap fingerprint of the
/// voxels, to compare with the same numbers computed by an independent reader.
fn fingerprint<T: Copy + Into<i64>>(voxels: &[T]) -> (i64, i64) {
    let sum = voxels.iter().map(|&v| v.into()).sum();
    let weighted = voxels
        .iter()
        .enumerate()
        .map(|(i, &v)| v.into() * i as i64)
        .sum::<i64>()
        .rem_euclid(1_000_003);
    (sum, weighted)
}

fn describe(g: &Geometry) -> String {
    let d = g.direction;
    format!(
        "dims {:?}, spacing {:?} mm, origin (LPS) {:?} mm, direction columns [{:?}, {:?}, {:?}], orientation {}, obliquity {:.3} deg",
        g.dims,
        g.spacing_mm.as_slice(),
        g.origin_mm.as_slice(),
        d.column(0).as_slice(),
        d.column(1).as_slice(),
        d.column(2).as_slice(),
        g.orientation_code(),
        g.obliquity_degrees()
    )
}

/// Reads a CT and its lung mask, checks them, writes both and reads them back.
fn check_case(ct_path: &Path, mask_path: &Path, dims: [usize; 3], spacing: [f64; 3], ct_ext: &str) {
    let t = Instant::now();
    let ct = read_nifti_ct(ct_path).unwrap();
    let mask = read_nifti_labels(mask_path).unwrap();
    eprintln!("read {} + mask in {:.2?}", ct_path.display(), t.elapsed());
    assert!(ct.warnings.is_empty(), "{:?}", ct.warnings);
    assert!(mask.warnings.is_empty(), "{:?}", mask.warnings);
    let g = &ct.volume.geometry;
    eprintln!("{}: {}", ct_path.display(), describe(g));
    assert_eq!(g.dims, dims);
    assert_spacing(g, spacing, 1e-3);
    // Axial, LPS order as nibabel writes DICOM-derived volumes (RAS affine diag(-,-,+)).
    assert_eq!(g.orientation_code(), "LPS");
    assert_eq!(g.obliquity_degrees(), 0.0);
    // Same grid for the mask.
    assert_eq!(mask.volume.geometry, *g);

    // Hounsfield units: air near -1000, nothing outside the CT range.
    let (lo, hi) = ct.volume.min_max().unwrap();
    eprintln!("HU range {lo}..={hi}");
    assert!((-1100..=-900).contains(&lo), "min HU {lo}");
    assert!((0..=4095).contains(&hi), "max HU {hi}");
    let corner = ct.volume.get(0, 0, dims[2] / 2);
    assert!(
        (-1100..=-900).contains(&corner),
        "corner (outside the body) HU {corner}"
    );
    let air = ct.volume.voxels.iter().filter(|&&v| v < -900).count();
    assert!(air * 10 > ct.volume.voxels.len(), "only {air} air voxels");

    // The mask is {0, 1}, with lungs in it, where the CT is dark.
    let (mlo, mhi) = mask.volume.min_max().unwrap();
    assert_eq!((mlo, mhi), (0, 1));
    let lung: Vec<i16> = ct
        .volume
        .voxels
        .iter()
        .zip(&mask.volume.voxels)
        .filter(|&(_, &m)| m == 1)
        .map(|(&v, _)| v)
        .collect();
    assert!(lung.len() > 10_000, "{} lung voxels", lung.len());
    let mean_lung = lung.iter().map(|&v| v as f64).sum::<f64>() / lung.len() as f64;
    eprintln!("{} lung voxels, mean {mean_lung:.0} HU", lung.len());
    assert!(
        (-950.0..=-500.0).contains(&mean_lung),
        "mean lung HU {mean_lung}"
    );

    // Write both and read them back: bit-exact voxels, identical geometry.
    let dir = tempfile::tempdir().unwrap();
    let ct_out = dir.path().join(format!("ct{ct_ext}"));
    let mask_out = dir.path().join("lungs.nii.gz");
    let t = Instant::now();
    write_nifti(&ct_out, &ct.volume).unwrap();
    write_nifti(&mask_out, &mask.volume).unwrap();
    eprintln!("wrote {ct_ext} + mask in {:.2?}", t.elapsed());
    let t = Instant::now();
    let ct_back = read_nifti_ct(&ct_out).unwrap();
    let mask_back = read_nifti_labels(&mask_out).unwrap();
    eprintln!("read back in {:.2?}", t.elapsed());
    assert!(ct_back.warnings.is_empty() && mask_back.warnings.is_empty());
    assert_eq!(ct_back.volume.geometry, ct.volume.geometry);
    assert!(
        ct_back.volume.voxels == ct.volume.voxels,
        "CT voxels differ after the round trip"
    );
    assert_eq!(mask_back.volume.geometry, mask.volume.geometry);
    assert!(
        mask_back.volume.voxels == mask.volume.voxels,
        "mask voxels differ after the round trip"
    );
    assert_eq!(
        ct_back.volume.geometry.to_ras_affine(),
        ct.volume.geometry.to_ras_affine()
    );

    compare_with_nibabel(ct_path, &ct.volume);
    compare_with_nibabel(&ct_out, &ct_back.volume);
}

/// nibabel's view of the file must match ours: shape, affine, qform and sform (to float32
/// precision), voxel checksums, and its header check must find nothing to fix.
fn compare_with_nibabel<T: Copy + Into<i64>>(path: &Path, volume: &Volume<T>) {
    let script = r#"
import sys, nibabel
img = nibabel.load(sys.argv[1])
h = img.header
print(' '.join(str(int(v)) for v in img.shape))
for m in (img.affine, h.get_qform(), h.get_sform()):
    print(' '.join(repr(float(v)) for v in m[:3].ravel()))
print(repr(h.diagnose_binaryblock(h.binaryblock)))
import numpy as np
data = np.asarray(img.dataobj)
print(int(data.astype(np.int64).sum()), int((data.astype(np.int64) * np.arange(data.size).reshape(data.shape, order='F') % 7).sum()))
"#;
    // The test venv's Python has nibabel (required in CI; locally skipped when missing).
    let Some(python) = common::tools_python() else {
        return;
    };
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("the test venv's Python runs");
    assert!(
        out.status.success(),
        "nibabel failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    let shape: Vec<usize> = lines[0]
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(shape, volume.geometry.dims.to_vec(), "nibabel shape");
    let ours = volume.geometry.to_ras_affine();
    for (name, line) in ["affine", "qform", "sform"].iter().zip(&lines[1..4]) {
        let m: Vec<f64> = line
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        assert_eq!(m.len(), 12, "{name}: {line}");
        for r in 0..3 {
            for c in 0..4 {
                let tol = 1e-5 * (1.0 + ours[(r, c)].abs());
                let diff = (ours[(r, c)] - m[4 * r + c]).abs();
                assert!(
                    diff < tol,
                    "nibabel {name}[{r},{c}] = {}, ours {}",
                    m[4 * r + c],
                    ours[(r, c)]
                );
            }
        }
    }
    assert_eq!(
        lines[4],
        "''",
        "nibabel header diagnosis of {}",
        path.display()
    );
    // Voxel sums (plain, and weighted by the x-fastest linear index) agree.
    let sum: i64 = volume.voxels.iter().map(|&v| v.into()).sum();
    let weighted: i64 = volume
        .voxels
        .iter()
        .enumerate()
        .map(|(i, &v)| (v.into() * i as i64).rem_euclid(7))
        .sum();
    assert_eq!(
        lines[5],
        format!("{sum} {weighted}"),
        "nibabel voxel sums of {}",
        path.display()
    );
    eprintln!("nibabel agrees on {}", path.display());
}

#[test]
fn lctsc_full_resolution_nifti_round_trip() {
    let (Some(ct), Some(mask)) = (
        data_file("lctsc/Case_000_ct.nii.gz"),
        data_file("lctsc/Case_000_lungs.nii.gz"),
    ) else {
        return;
    };
    // The big CT is written uncompressed (fast); the compressed writer is covered by the
    // masks and by the 256 case.
    check_case(&ct, &mask, [512, 512, 154], [0.977, 0.977, 3.0], ".nii");
}

#[test]
fn lctsc256_nifti_round_trip() {
    let (Some(ct), Some(mask)) = (
        data_file("lctsc256/Case_000_ct.nii.gz"),
        data_file("lctsc256/Case_000_lungs.nii.gz"),
    ) else {
        return;
    };
    check_case(&ct, &mask, [256, 256, 154], [1.953, 1.953, 3.0], ".nii.gz");
}

#[test]
fn cip_copdgene_nrrd() {
    let (Some(ct_path), Some(lung_path), Some(lm_path)) = (
        data_file("dicom/cip-copdgene-64/ct-64.nrrd"),
        data_file("dicom/cip-copdgene-64/wholeLung-64.nrrd"),
        data_file("dicom/cip-copdgene-64/lm-64.nrrd"),
    ) else {
        return;
    };
    let ct = read_nrrd_ct(&ct_path).unwrap();
    assert!(ct.warnings.is_empty(), "{:?}", ct.warnings);
    let g = &ct.volume.geometry;
    eprintln!("ct-64.nrrd geometry: {}", describe(g));
    eprintln!("ct-64.nrrd world_from_voxel (LPS):{}", g.world_from_voxel());
    assert_eq!(g.dims, [64, 64, 79]);
    assert_spacing(g, [4.17, 4.17, 3.99], 0.01);
    assert_eq!(g.orientation_code(), "LPS");
    // The header's numbers, as written.
    assert!(
        (g.origin_mm - nalgebra::Vector3::new(-128.413806, -264.413806, -360.256329))
            .abs()
            .max()
            < 1e-5
    );
    let (lo, hi) = ct.volume.min_max().unwrap();
    eprintln!("ct-64.nrrd HU range {lo}..={hi}");
    assert!(
        (-1100..=-900).contains(&lo) && hi > 0 && hi <= 4095,
        "HU range {lo}..={hi}"
    );

    // Fingerprints of the voxels as pynrrd 1.x reads them (computed once, by hand).
    assert_eq!(fingerprint(&ct.volume.voxels), (-150_669_474, 903_846));

    let lung = read_nrrd_labels(&lung_path).unwrap();
    assert_eq!(fingerprint(&lung.volume.voxels), (65_624, 860_229));
    assert!(lung.warnings.is_empty(), "{:?}", lung.warnings);
    assert_eq!(lung.volume.geometry, *g);
    let lung_values: std::collections::BTreeSet<u8> = lung.volume.voxels.iter().copied().collect();
    eprintln!("wholeLung-64.nrrd values {lung_values:?}");
    assert!(lung_values.contains(&0) && lung_values.len() >= 2);
    let n_lung = lung.volume.voxels.iter().filter(|&&v| v != 0).count();
    let mean_lung = ct
        .volume
        .voxels
        .iter()
        .zip(&lung.volume.voxels)
        .filter(|&(_, &m)| m != 0)
        .map(|(&v, _)| v as f64)
        .sum::<f64>()
        / n_lung as f64;
    eprintln!("{n_lung} lung voxels, mean {mean_lung:.0} HU");
    assert!(
        (-1000.0..=-500.0).contains(&mean_lung),
        "mean lung HU {mean_lung}"
    );

    // lm-64 holds type * 256 + region: not a u8 label map...
    let err = read_nrrd_labels(&lm_path).unwrap_err().to_string();
    assert!(
        err.contains("lm-64.nrrd") && err.contains("0..=255"),
        "{err}"
    );
    // ...but readable as i32.
    let lm = read_nrrd_i32(&lm_path).unwrap();
    assert_eq!(fingerprint(&lm.volume.voxels), (5_177_785, 883_859));
    assert_eq!(lm.volume.geometry, *g);
    let values: std::collections::BTreeSet<i32> = lm.volume.voxels.iter().copied().collect();
    eprintln!("lm-64.nrrd values {values:?}");
    assert!(values.iter().any(|&v| v > 255));
    // Regions (low byte) are lung thirds 9..14 wherever the map is non-zero and has a region.
    assert!(
        values
            .iter()
            .all(|&v| v == 0 || (9..=14).contains(&(v % 256)) || v % 256 == 0),
        "{values:?}"
    );
    assert!(
        values
            .iter()
            .filter(|&&v| v != 0)
            .all(|&v| (0..=255 * 256 + 255).contains(&v))
    );
}

/// Oblique and left-handed grids written here read back the same, and (when nibabel is
/// installed) nibabel sees the same qform and sform. Needs no real data.
#[test]
fn oblique_and_left_handed_nifti_written_here() {
    use nalgebra::{Rotation3, Vector3};
    let dir = tempfile::tempdir().unwrap();
    let rot = *Rotation3::from_euler_angles(0.3, -0.2, 0.5).matrix();
    let mut left = rot;
    left.set_column(2, &(-rot.column(2)));
    for (name, direction) in [("oblique.nii.gz", rot), ("left_handed.nii", left)] {
        let g = Geometry {
            dims: [6, 5, 4],
            spacing_mm: Vector3::new(0.8, 0.9, 2.5),
            origin_mm: Vector3::new(-100.25, 50.5, -600.0),
            direction,
        };
        let n = g.voxel_count();
        let ct = Volume::new(g, (0..n).map(|i| i as i16 * 3 - 1000).collect()).unwrap();
        let path = dir.path().join(name);
        write_nifti(&path, &ct).unwrap();
        let back = read_nifti_ct(&path).unwrap();
        assert!(back.warnings.is_empty(), "{:?}", back.warnings);
        assert_eq!(back.volume.voxels, ct.voxels);
        let (a, b) = (&back.volume.geometry, &ct.geometry);
        assert!((a.direction - b.direction).abs().max() < 1e-6);
        assert!((a.spacing_mm - b.spacing_mm).abs().max() < 1e-6);
        assert!((a.origin_mm - b.origin_mm).abs().max() < 1e-4);
        compare_with_nibabel(&path, &back.volume);
        let labels = ct.map(|v| (v.rem_euclid(5)) as u8);
        let path = dir.path().join(format!("labels_{name}"));
        write_nifti(&path, &labels).unwrap();
        assert_eq!(
            read_nifti_labels(&path).unwrap().volume.voxels,
            labels.voxels
        );
        compare_with_nibabel(&path, &labels);
    }
}
