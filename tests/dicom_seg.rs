//! DICOM SEG export and import: round trips on series written in the test and on a real
//! series, interoperability with highdicom/pydicom, and errors that name the file.

mod common;

use std::path::{Path, PathBuf};

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use nalgebra::{Rotation3, Vector3};
use pulmo::annotate::LabelTable;
use pulmo::io::dicom::seg::{self, SegError, SegWriteOptions};
use pulmo::io::dicom::write::{SeriesWriteOptions, write_series};
use pulmo::io::dicom::{self, LoadOptions};
use pulmo::volume::{CtVolume, Geometry, LabelVolume, Volume};

fn ct(geometry: Geometry) -> CtVolume {
    let n = geometry.voxel_count();
    Volume::new(geometry, (0..n).map(|i| (i % 2000) as i16 - 1000).collect()).unwrap()
}

/// Writes a synthetic CT series into `dir` and loads it back (geometry and meta as the
/// loader sees them).
fn series(dir: &Path, geometry: Geometry) -> dicom::DicomVolume {
    write_series(&ct(geometry), dir, &SeriesWriteOptions::default()).unwrap();
    dicom::load(dir, None, &LoadOptions::default()).unwrap()
}

/// Labels 1 (slices 1..=4), 3 (only slice 6, inside label 1's in-plane box) and 4
/// (slices 2..=8, elsewhere); slices 0 and 9 are empty.
fn labels_on(geometry: &Geometry) -> LabelVolume {
    let mut l = Volume::filled(geometry.clone(), 0u8).unwrap();
    for k in 1..=4 {
        for j in 3..12 {
            for i in 2..14 {
                l.set(i, j, k, 1);
            }
        }
    }
    for j in 5..8 {
        for i in 4..9 {
            l.set(i, j, 6, 3);
        }
    }
    for k in 2..=8 {
        for j in 14..22 {
            for i in 18..(20 + k) {
                l.set(i, j, k, 4);
            }
        }
    }
    l
}

fn count(l: &LabelVolume, v: u8) -> usize {
    l.voxels.iter().filter(|&&x| x == v).count()
}

/// Runs scripts/check_seg_interop.py with the test venv's Python (skipped locally when
/// the venv is missing, required in CI).
fn interop(seg: &Path, ct_dir: &Path, frames: usize, segments: &[(&str, usize)]) {
    let Some(python) = common::tools_python() else {
        return;
    };
    let segs: Vec<String> = segments
        .iter()
        .map(|(name, n)| format!("{{\"label\": \"{name}\", \"voxels\": {n}}}"))
        .collect();
    let expected = format!(
        "{{\"frames\": {frames}, \"segments\": [{}]}}",
        segs.join(", ")
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check_seg_interop.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(seg)
        .arg(ct_dir)
        .arg(&expected)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "interop check failed:\n{text}");
    assert!(text.contains("OK"), "{text}");
}

fn round_trip(geometry: Geometry) {
    let tmp = tempfile::tempdir().unwrap();
    let ct_dir = tmp.path().join("ct");
    let loaded = series(&ct_dir, geometry);
    let g = loaded.volume.geometry.clone();
    let labels = labels_on(&g);
    let mut table = LabelTable::default();
    table.labels[0].color = [12, 34, 250];
    let out = tmp.path().join("labels.seg.dcm");
    seg::write_seg(
        &out,
        &labels,
        &table,
        &loaded.meta,
        &SegWriteOptions::default(),
    )
    .unwrap();

    // No temporary file left behind.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // What was written.
    let obj = dicom_object::open_file(&out).unwrap();
    let s = |tag| {
        obj.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(s(tags::SOP_CLASS_UID), seg::SEGMENTATION_STORAGE);
    assert_eq!(s(tags::SEGMENTATION_TYPE), "BINARY");
    assert_eq!(s(tags::MODALITY), "SEG");
    assert_eq!(
        Some(s(tags::FRAME_OF_REFERENCE_UID)),
        loaded.meta.frame_of_reference_uid
    );
    assert_eq!(Some(s(tags::STUDY_INSTANCE_UID)), loaded.meta.study_uid);
    assert_ne!(s(tags::SERIES_INSTANCE_UID), loaded.meta.series_uid);
    // Frames: label 1 on 4 slices, 3 on 1, 4 on 7.
    assert_eq!(s(tags::NUMBER_OF_FRAMES), "12");
    let per_frame = obj
        .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    assert_eq!(per_frame.len(), 12);
    // The first frame (segment 1, slice 1) references slice 1's SOP Instance UID.
    let source = per_frame[0]
        .element(tags::DERIVATION_IMAGE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::SOURCE_IMAGE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(source, loaded.meta.sop_instance_uids[1]);

    // Import.
    let back = seg::read_seg(&out, &g, None).unwrap();
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    assert_eq!(back.labels.geometry, g);
    assert!(back.labels.voxels == labels.voxels, "voxels differ");
    let values: Vec<u8> = back.table.labels.iter().map(|l| l.value).collect();
    assert_eq!(values, vec![1, 3, 4]);
    for l in &back.table.labels {
        let want = table.get(l.value).unwrap();
        assert_eq!(l.name, want.name);
        for c in 0..3 {
            assert!(
                (l.color[c] as i32 - want.color[c] as i32).abs() <= 1,
                "colour of {}: {:?} vs {:?}",
                l.name,
                l.color,
                want.color
            );
        }
    }

    interop(
        &out,
        &ct_dir,
        12,
        &[
            ("left lung", count(&labels, 1)),
            ("ground-glass opacity", count(&labels, 3)),
            ("consolidation", count(&labels, 4)),
        ],
    );
}

#[test]
fn round_trip_axial() {
    round_trip(Geometry::axis_aligned(
        [32, 24, 10],
        [0.7, 0.8, 2.5],
        [-120.0, -90.0, 35.0],
    ));
}

#[test]
fn round_trip_oblique() {
    let mut g = Geometry::axis_aligned([32, 24, 10], [0.75, 0.6, 1.25], [10.0, -20.0, 5.0]);
    g.direction = *Rotation3::from_euler_angles(0.2, -0.1, 0.35).matrix();
    round_trip(g);
}

#[test]
fn lab_colour_round_trip() {
    for rgb in [
        [0, 0, 0],
        [255, 255, 255],
        [64, 160, 255],
        [255, 80, 60],
        [1, 2, 3],
    ] {
        let lab = seg::srgb_to_dicom_lab(rgb);
        let back = seg::dicom_lab_to_srgb(lab);
        for c in 0..3 {
            assert!(
                (back[c] as i32 - rgb[c] as i32).abs() <= 1,
                "{rgb:?} -> {lab:?} -> {back:?}"
            );
        }
    }
    // White: L* 100, a* = b* = 0 → 65535, 32896, 32896 (PS3.3 C.10.7.1.1 scaling).
    let w = seg::srgb_to_dicom_lab([255, 255, 255]);
    assert_eq!(w[0], 65535);
    assert!(
        (w[1] as i32 - 32896).abs() <= 2 && (w[2] as i32 - 32896).abs() <= 2,
        "{w:?}"
    );
}

#[test]
fn real_series_lung_mask() {
    let Some(dir) = common::data_dir("dicom/cip-copdgene-64") else {
        return;
    };
    let ct_dir = dir.join("series");
    let loaded = dicom::load(&ct_dir, None, &LoadOptions::default()).unwrap();
    let mask = pulmo::io::nrrd::read_nrrd_labels(&dir.join("wholeLung-64.nrrd"))
        .unwrap()
        .volume;
    pulmo::metrics::check_same_grid("CT", &loaded.volume.geometry, "mask", &mask.geometry).unwrap();
    let g = loaded.volume.geometry.clone();
    let labels = Volume::new(g.clone(), mask.voxels.clone()).unwrap();
    let present: Vec<u8> = (1..=255u8).filter(|&v| count(&labels, v) > 0).collect();
    assert!(!present.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lung.dcm");
    let table = LabelTable::default();
    let options = SegWriteOptions {
        algorithm: seg::SegAlgorithm::Automatic,
        ..Default::default()
    };
    seg::write_seg(&out, &labels, &table, &loaded.meta, &options).unwrap();
    let back = seg::read_seg(&out, &g, None).unwrap();
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    assert!(back.labels.voxels == labels.voxels, "voxels differ");

    let frames: usize = present
        .iter()
        .map(|&v| {
            (0..g.dims[2])
                .filter(|&k| labels.slice_k(k).contains(&v))
                .count()
        })
        .sum();
    let names: Vec<(String, usize)> = present
        .iter()
        .map(|&v| {
            let name = table
                .get(v)
                .map(|l| l.name.clone())
                .unwrap_or_else(|| format!("label {v}"));
            (name, count(&labels, v))
        })
        .collect();
    let refs: Vec<(&str, usize)> = names.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    interop(&out, &ct_dir, frames, &refs);
}

fn replace_items(
    obj: &mut InMemDicomObject,
    tag: dicom_core::Tag,
    edit: impl FnOnce(&mut Vec<InMemDicomObject>),
) {
    let mut items = obj.element(tag).unwrap().items().unwrap().to_vec();
    edit(&mut items);
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn set_position(frame: &mut InMemDicomObject, p: [f64; 3]) {
    replace_items(frame, tags::PLANE_POSITION_SEQUENCE, |items| {
        items[0].put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::from(format!("{}\\{}\\{}", p[0], p[1], p[2])),
        ));
    });
}

/// A written SEG with its last frame (segment 2, label 3, slice 6) moved to slice 2,
/// where label 1 covers it: the later segment wins and a warning says so.
#[test]
fn overlapping_segments_later_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Geometry::axis_aligned([32, 24, 10], [0.7, 0.8, 2.5], [-120.0, -90.0, 35.0]);
    let loaded = series(&tmp.path().join("ct"), g);
    let g = loaded.volume.geometry.clone();
    let labels = labels_on(&g);
    let out = tmp.path().join("a.dcm");
    let table = LabelTable::default();
    seg::write_seg(&out, &labels, &table, &loaded.meta, &Default::default()).unwrap();
    let mut file = dicom_object::open_file(&out).unwrap();
    let p = g.world_at_voxel(Vector3::new(0.0, 0.0, 2.0));
    replace_items(
        &mut file,
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        |items| {
            // Frames: segment 1 on slices 1..=4 (4 frames), then segment 2 (1 frame).
            set_position(&mut items[4], [p.x, p.y, p.z]);
        },
    );
    let edited = tmp.path().join("b.dcm");
    file.write_to_file(&edited).unwrap();
    let back = seg::read_seg(&edited, &g, None).unwrap();
    assert_eq!(back.warnings.len(), 1, "{:?}", back.warnings);
    assert!(back.warnings[0].contains("overlap"), "{}", back.warnings[0]);
    assert_eq!(back.labels.get(5, 6, 2), 3);
    assert_eq!(back.labels.get(5, 6, 6), 0);
    assert_eq!(count(&back.labels, 3), count(&labels, 3));
}

#[test]
fn errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Geometry::axis_aligned([32, 24, 10], [0.7, 0.8, 2.5], [-120.0, -90.0, 35.0]);
    let ct_dir = tmp.path().join("ct");
    let loaded = series(&ct_dir, g);
    let g = loaded.volume.geometry.clone();
    let out = tmp.path().join("labels.dcm");
    seg::write_seg(
        &out,
        &labels_on(&g),
        &LabelTable::default(),
        &loaded.meta,
        &Default::default(),
    )
    .unwrap();
    let shown = out.display().to_string();

    // Another grid: slices elsewhere, other spacing, other orientation, other dims.
    let mut moved = g.clone();
    moved.origin_mm.z += 100.0;
    let mut spacing = g.clone();
    spacing.spacing_mm.x = 0.9;
    let mut rotated = g.clone();
    rotated.direction = *Rotation3::from_euler_angles(0.0, 0.0, 0.3).matrix();
    let mut dims = g.clone();
    dims.dims = [30, 24, 10];
    for other in [moved, spacing, rotated, dims] {
        let e = seg::read_seg(&out, &other, None).unwrap_err();
        assert!(matches!(e, SegError::GridMismatch { .. }), "{e}");
        assert!(e.to_string().contains(&shown), "{e}");
    }

    // A CT slice is DICOM but not a SEG.
    let slice = ct_dir.join("slice_0000.dcm");
    let e = seg::read_seg(&slice, &g, None).unwrap_err();
    assert!(matches!(e, SegError::NotSeg { .. }), "{e}");
    assert!(e.to_string().contains(&slice.display().to_string()), "{e}");

    // Not DICOM at all.
    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, "not dicom").unwrap();
    let e = seg::read_seg(&text, &g, None).unwrap_err();
    assert!(matches!(e, SegError::NotDicom { .. }), "{e}");
    assert!(e.to_string().contains(&text.display().to_string()), "{e}");

    // An empty label map cannot be written; nothing is left behind.
    let empty = Volume::filled(g.clone(), 0u8).unwrap();
    let none = tmp.path().join("none.dcm");
    let e = seg::write_seg(
        &none,
        &empty,
        &LabelTable::default(),
        &loaded.meta,
        &Default::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains(&none.display().to_string()), "{e}");
    assert!(!none.exists());
}

/// Writes a SEG with highdicom (scripts/check_seg_interop.py --write-highdicom) on a
/// series written here and imports it.
fn highdicom_seg(kind: &str) -> Option<(seg::SegImport, LabelVolume)> {
    let python = common::tools_python()?;
    let tmp = tempfile::tempdir().unwrap();
    let ct_dir = tmp.path().join("ct");
    let g = Geometry::axis_aligned([32, 24, 10], [0.7, 0.8, 2.5], [-120.0, -90.0, 35.0]);
    let loaded = series(&ct_dir, g);
    let g = loaded.volume.geometry.clone();
    let out = tmp.path().join("highdicom.dcm");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/check_seg_interop.py");
    let run = std::process::Command::new(python)
        .arg(script)
        .arg("--write-highdicom")
        .arg(&ct_dir)
        .arg(&out)
        .arg(kind)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "highdicom failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let imported = seg::read_seg(&out, &g, None).unwrap();
    // The boxes the script draws (i, j ranges; slices).
    let mut expected = Volume::filled(g, 0u8).unwrap();
    for k in 1..4 {
        for j in 3..9 {
            for i in 2..10 {
                expected.set(i, j, k, 1);
            }
        }
    }
    for j in 10..15 {
        for i in 20..25 {
            expected.set(i, j, 5, 2);
        }
    }
    Some((imported, expected))
}

#[test]
fn imports_highdicom_binary_seg() {
    let Some((imported, expected)) = highdicom_seg("binary") else {
        return;
    };
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    // "Right Lung" matches pulmo's label 2 by name; "Nodule" (segment 2, a default
    // value) takes the first value after the defaults.
    let names: Vec<(u8, &str)> = imported
        .table
        .labels
        .iter()
        .map(|l| (l.value, l.name.as_str()))
        .collect();
    assert_eq!(names, vec![(2, "Right Lung"), (7, "Nodule")]);
    let want: Vec<u8> = expected
        .voxels
        .iter()
        .map(|&v| match v {
            1 => 2,
            2 => 7,
            _ => 0,
        })
        .collect();
    assert!(imported.labels.voxels == want, "voxels differ");
}

#[test]
fn imports_highdicom_fractional_seg_thresholded() {
    let Some((imported, expected)) = highdicom_seg("fractional") else {
        return;
    };
    assert_eq!(imported.warnings.len(), 1, "{:?}", imported.warnings);
    assert!(imported.warnings[0].contains("FRACTIONAL"));
    assert_eq!(imported.table.labels.len(), 1);
    let value = imported.table.labels[0].value;
    // 0.75 kept, 0.25 dropped.
    let want: Vec<u8> = expected
        .voxels
        .iter()
        .map(|&v| if v == 1 { value } else { 0 })
        .collect();
    assert!(imported.labels.voxels == want, "voxels differ");
}
