//! DICOM loading on the real series in `../shared/data/dicom` (see its README).
//! Required in CI; skipped locally with a printed reason when the data is missing.

mod common;

use pulmo::io::dicom::{self, LoadOptions, WarningKind};
use pulmo::io::nrrd;

fn load(p: &std::path::Path) -> dicom::DicomVolume {
    dicom::load(p, None, &LoadOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn lidc_16_slices_ordered_by_position_not_file_name() {
    let Some(dir) = common::data_dir("dicom/lidc-0001-16slices") else {
        return;
    };
    let v = load(&dir);
    let g = &v.volume.geometry;
    assert_eq!(g.dims, [512, 512, 16]);
    assert!((g.spacing_mm.x - 0.703125).abs() < 1e-6 && (g.spacing_mm.y - 0.703125).abs() < 1e-6);
    assert!((g.spacing_mm.z - 2.5).abs() < 1e-6);
    assert_eq!(g.orientation_code(), "LPS");
    // Ascending z: the first slice is the most inferior (-132.5 mm).
    assert!(
        (g.origin_mm.z - -132.5).abs() < 1e-6,
        "origin {:?}",
        g.origin_mm
    );
    let (lo, hi) = v.volume.min_max().unwrap();
    assert!(lo >= -2048 && hi <= 4000, "HU range {lo}..{hi}");
    // A chest: plenty of air/lung below -500 HU, and soft tissue around 0..100 HU.
    let lung = v
        .volume
        .voxels
        .iter()
        .filter(|&&x| (-1000..-500).contains(&x))
        .count();
    let soft = v
        .volume
        .voxels
        .iter()
        .filter(|&&x| (0..100).contains(&x))
        .count();
    assert!(lung > 500_000 && soft > 200_000, "lung {lung}, soft {soft}");
    assert!(v.report.warnings.is_empty(), "{:?}", v.report.warnings);
    assert_eq!(v.meta.windows.len(), 1);
    assert_eq!(v.meta.sop_instance_uids.len(), 16);
}

#[test]
fn cip_dicom_series_equals_its_nrrd() {
    let Some(dir) = common::data_dir("dicom/cip-copdgene-64") else {
        return;
    };
    let v = load(&dir.join("series"));
    let n = nrrd::read_nrrd_ct(&dir.join("ct-64.nrrd")).unwrap();
    let (a, b) = (&v.volume.geometry, &n.volume.geometry);
    assert_eq!(a.dims, [64, 64, 79]);
    assert_eq!(a.dims, b.dims);
    assert!(
        (a.spacing_mm - b.spacing_mm).norm() < 1e-4,
        "{:?} vs {:?}",
        a.spacing_mm,
        b.spacing_mm
    );
    assert!(
        (a.origin_mm - b.origin_mm).norm() < 1e-3,
        "{:?} vs {:?}",
        a.origin_mm,
        b.origin_mm
    );
    assert!((a.direction - b.direction).norm() < 1e-6);
    assert!(v.volume.voxels == n.volume.voxels, "voxels differ");
    // File numbering has gaps, but positions are contiguous: no missing slices.
    assert!(
        !v.report.has(WarningKind::MissingSlices),
        "{:?}",
        v.report.warnings
    );
}

#[test]
fn ge_head_tilt_is_reported_with_its_angle_and_spacing() {
    let Some(dir) = common::data_dir("dicom/ge-head-tilt28") else {
        return;
    };
    let v = load(&dir);
    let tilt = v
        .report
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::GantryTilt)
        .expect("tilt");
    assert!(tilt.message.contains("18.5 degrees"), "{tilt}");
    let spacing = v
        .report
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::NonUniformSpacing)
        .expect("spacing");
    assert!(
        spacing.message.contains("1.08") && spacing.message.contains("6.99"),
        "{spacing}"
    );
    assert!(!tilt.files.is_empty());
    // De-tilted onto an orthogonal grid (in the slices' own, oblique, frame).
    let g = &v.volume.geometry;
    let d = g.direction;
    assert!(
        (d.transpose() * d - nalgebra::Matrix3::identity()).norm() < 1e-9,
        "{d}"
    );
    assert!(g.dims[2] >= 28);
}

#[test]
fn dcmqi_three_slices() {
    let Some(dir) = common::data_dir("dicom/dcmqi-ct-3slice") else {
        return;
    };
    let v = load(&dir);
    let g = &v.volume.geometry;
    assert_eq!(g.dims, [512, 512, 3]);
    assert!((g.spacing_mm.z - 1.0).abs() < 1e-6);
    assert!((g.spacing_mm.x - 0.8105).abs() < 1e-3);
    assert!(v.report.warnings.is_empty(), "{:?}", v.report.warnings);
}

#[test]
fn minimal_header_loads_with_a_missing_modality_warning() {
    let Some(dir) = common::data_dir("dicom/lidc-2slice-minimal-header") else {
        return;
    };
    let v = load(&dir);
    assert_eq!(v.volume.geometry.dims, [512, 512, 2]);
    assert!(v.report.has(WarningKind::MissingModality));
    assert_eq!(v.meta.modality, None);
}

#[test]
fn single_file_opens_as_a_one_slice_volume() {
    let Some(path) = common::data_dir("dicom/ct-small-single.dcm") else {
        return;
    };
    let v = load(&path);
    let g = &v.volume.geometry;
    assert_eq!(g.dims, [128, 128, 1]);
    // NEMA CT1 as shipped with pydicom: HU -896..1167 (pydicom agrees).
    assert_eq!(v.volume.min_max(), Some((-896, 1167)));
    assert!(
        (g.spacing_mm.z - 5.0).abs() < 1e-6,
        "slice thickness as spacing"
    );
}

#[test]
fn every_real_folder_loads_or_fails_with_a_documented_message() {
    let Some(root) = common::data_dir("dicom") else {
        return;
    };
    let scan = dicom::scan(&root, &LoadOptions::default()).unwrap();
    // Five series (the 16-slice LIDC, the CIP series, dcmqi, the GE tilt, the minimal
    // header pair, the single file) -> six series UIDs.
    assert_eq!(scan.series.len(), 6, "{:#?}", scan.summaries());
    // The NRRD files are reported as skipped, not errors.
    assert!(
        scan.skipped_files
            .iter()
            .any(|p| p.path.ends_with("ct-64.nrrd"))
    );
    for (s, _) in &scan.series {
        let v = dicom::load_series(&scan, Some(&s.uid), &LoadOptions::default())
            .unwrap_or_else(|e| panic!("series {s}: {e}"));
        assert!(v.volume.geometry.voxel_count() > 0);
    }
}
