//! Hostile and broken input (issue #16), one test per class of failure the fuzzing
//! corpus found: each must be an error or a warning naming the file, never a panic, a
//! hang, a huge allocation or a silent wrong answer.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use pulmo::io::dicom::write::{self, SeriesWriteOptions, new_uid, slice_object, with_meta};
use pulmo::io::dicom::{self, LoadOptions, WarningKind};
use pulmo::volume::{CtVolume, Geometry, Volume};

fn phantom(geometry: Geometry) -> CtVolume {
    let n = geometry.voxel_count();
    Volume::new(geometry, (0..n).map(|i| (i % 900) as i16 - 800).collect()).unwrap()
}

fn geometry() -> Geometry {
    Geometry::axis_aligned([12, 10, 6], [0.75, 0.8, 2.5], [-100.0, -80.0, 40.0])
}

/// Writes the series with `edit(k, object)` applied to each slice.
fn write_edited(dir: &Path, edit: impl Fn(usize, &mut dicom_object::InMemDicomObject)) {
    let volume = phantom(geometry());
    let options = SeriesWriteOptions::default();
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..volume.geometry.dims[2] {
        let mut obj = slice_object(&volume, k, &options, &new_uid());
        edit(k, &mut obj);
        with_meta(obj, &options.transfer_syntax)
            .unwrap()
            .write_to_file(dir.join(format!("s{k}.dcm")))
            .unwrap();
    }
}

fn put(obj: &mut dicom_object::InMemDicomObject, tag: dicom_core::Tag, vr: VR, v: &str) {
    obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
}

fn load_err(dir: &Path) -> String {
    match dicom::load(dir, None, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_slice_a_million_mm_away_is_refused_not_resampled() {
    let tmp = tempfile::tempdir().unwrap();
    write_edited(tmp.path(), |k, o| {
        if k == 5 {
            put(
                o,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                "-100\\-80\\1000000",
            );
        }
    });
    let e = load_err(tmp.path());
    assert!(e.contains("would need") && e.contains("s0.dcm"), "{e}");
}

#[test]
fn a_tiny_pixel_spacing_under_a_tilt_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    write_edited(tmp.path(), |k, o| {
        put(o, tags::PIXEL_SPACING, VR::DS, "0.001\\0.001");
        // 30 degrees of tilt: each slice shifted along y by its z.
        let z = 40.0 + 2.5 * k as f64;
        put(
            o,
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            &format!("-100\\{}\\{z}", -80.0 + 1.44 * k as f64),
        );
    });
    let e = load_err(tmp.path());
    assert!(e.contains("would need"), "{e}");
}

#[test]
fn huge_number_of_frames_and_rows_are_checked_against_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_edited(tmp.path(), |k, o| match k {
        0 => put(o, tags::NUMBER_OF_FRAMES, VR::IS, "1000000000000"),
        1 => {
            o.put(DataElement::new(
                tags::ROWS,
                VR::US,
                PrimitiveValue::from(65535u16),
            ));
            o.put(DataElement::new(
                tags::COLUMNS,
                VR::US,
                PrimitiveValue::from(65535u16),
            ));
        }
        _ => {}
    });
    // The two broken files are skipped by name; the rest loads.
    let loaded = dicom::load(tmp.path(), None, &LoadOptions::default()).unwrap();
    let skipped: Vec<String> = loaded
        .report
        .skipped_files
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("s0.dcm") && s.contains("1000000000000")),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("s1.dcm") && s.contains("65535 x 65535")),
        "{skipped:?}"
    );
    assert_eq!(loaded.volume.geometry.dims[2], 4);
}

#[test]
fn rescale_slope_zero_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    write_edited(tmp.path(), |k, o| {
        if k == 2 {
            put(o, tags::RESCALE_SLOPE, VR::DS, "0");
        }
    });
    let loaded = dicom::load(tmp.path(), None, &LoadOptions::default()).unwrap();
    let w: Vec<String> = loaded
        .report
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert!(
        loaded.report.has(WarningKind::InconsistentTags)
            && w.iter()
                .any(|w| w.contains("RescaleSlope is 0") && w.contains("s2.dcm")),
        "{w:?}"
    );
}

#[test]
fn rows_smaller_than_the_pixel_data_is_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    write_edited(tmp.path(), |_, o| {
        o.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(5u16),
        ));
    });
    let loaded = dicom::load(tmp.path(), None, &LoadOptions::default()).unwrap();
    let w: Vec<String> = loaded
        .report
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert!(
        w.iter().any(|w| w.contains("Pixel Data is longer")),
        "{w:?}"
    );
}

/// Explicit VR little endian file whose data set nests `depth` undefined-length sequences.
fn deeply_nested(depth: usize) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    b.extend(b"DICM");
    let ts = b"1.2.840.10008.1.2.1\0";
    let mut meta = Vec::new();
    meta.extend([2, 0, 0x10, 0]);
    meta.extend(b"UI");
    meta.extend((ts.len() as u16).to_le_bytes());
    meta.extend(ts);
    b.extend([2, 0, 0, 0]);
    b.extend(b"UL");
    b.extend(4u16.to_le_bytes());
    b.extend((meta.len() as u32).to_le_bytes());
    b.extend(meta);
    for _ in 0..depth {
        b.extend([0x08, 0x00, 0x15, 0x11]);
        b.extend(b"SQ\0\0");
        b.extend([0xFF; 4]);
        b.extend([0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        b.extend([0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    b
}

#[test]
fn sequences_nested_ten_thousand_deep_are_refused_without_a_stack_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("deep.dcm");
    std::fs::write(&path, deeply_nested(20_000)).unwrap();
    let e = dicom::read_header(&path).unwrap_err();
    assert!(e.contains("nested more than 64 levels"), "{e}");
    // A few levels are fine.
    std::fs::write(&path, deeply_nested(5)).unwrap();
    assert!(dicom::read_header(&path).is_ok());
}

#[test]
fn an_element_longer_than_the_file_is_refused_before_it_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("long.dcm");
    let mut b = deeply_nested(0);
    b.extend([0x08, 0x00, 0x00, 0x01]); // (0008,0100) with an unknown VR: 4-byte length
    b.extend(b"S\xdf\0\0");
    b.extend(0xF000_0000u32.to_le_bytes());
    b.extend(b"121322");
    std::fs::write(&path, &b).unwrap();
    let e = dicom::read_header(&path).unwrap_err();
    assert!(e.contains("beyond the end of the"), "{e}");
}

#[cfg(unix)]
#[test]
fn a_named_pipe_in_a_series_folder_is_skipped_not_waited_on() {
    let tmp = tempfile::tempdir().unwrap();
    write_edited(tmp.path(), |_, _| {});
    let fifo = tmp.path().join("pipe.dcm");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let loaded = dicom::load(tmp.path(), None, &LoadOptions::default()).unwrap();
    assert!(
        loaded
            .report
            .skipped_files
            .iter()
            .any(|p| p.path == fifo && p.problem.contains("named pipe")),
        "{:?}",
        loaded.report.skipped_files
    );
}

#[test]
fn a_dicomdir_pointing_outside_its_folder_is_refused() {
    use dicom_object::InMemDicomObject;
    let tmp = tempfile::tempdir().unwrap();
    let cd = tmp.path().join("cd");
    write_edited(&tmp.path().join("elsewhere"), |_, _| {});
    std::fs::create_dir(&cd).unwrap();
    for reference in ["..\\elsewhere\\s0.dcm", "/etc/passwd"] {
        let record = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::DIRECTORY_RECORD_TYPE,
                VR::CS,
                PrimitiveValue::from("IMAGE"),
            ),
            DataElement::new(
                tags::REFERENCED_FILE_ID,
                VR::CS,
                PrimitiveValue::from(reference),
            ),
        ]);
        let dir = InMemDicomObject::from_element_iter([DataElement::new(
            tags::DIRECTORY_RECORD_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![record]),
        )]);
        dir.with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .transfer_syntax(write::EXPLICIT_VR_LE)
                .media_storage_sop_class_uid("1.2.840.10008.1.3.10")
                .media_storage_sop_instance_uid(new_uid()),
        )
        .unwrap()
        .write_to_file(cd.join("DICOMDIR"))
        .unwrap();
        let e = load_err(&cd.join("DICOMDIR"));
        assert!(
            e.contains("leaves the DICOMDIR's folder") && e.contains("DICOMDIR"),
            "{e}"
        );
    }
}

#[test]
fn label_maps_off_the_ct_grid_are_refused_with_the_difference() {
    use pulmo::metrics::check_same_grid;
    let ct = geometry();
    let mut shifted = ct.clone();
    shifted.origin_mm.x += 1000.0;
    let e = check_same_grid("CT", &ct, "labels", &shifted)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("origins") && e.contains("1000.00 mm apart"),
        "{e}"
    );
    let mut flipped = ct.clone();
    flipped.direction[(0, 0)] = -1.0;
    let e = check_same_grid("CT", &ct, "labels", &flipped)
        .unwrap_err()
        .to_string();
    assert!(e.contains("flipped"), "{e}");
    // float32 rounding of a NIfTI header is the same grid.
    let mut rounded = ct.clone();
    rounded.origin_mm.y += 1e-4;
    rounded.spacing_mm.x *= 1.0 + 1e-6;
    assert!(check_same_grid("CT", &ct, "labels", &rounded).is_ok());
}

/// Writes the test series under `dir/ct` and a SEG of the given voxels `(i, j, k, label)`
/// on it at `dir/seg.dcm`; returns the CT grid, its FrameOfReferenceUID and the SEG path.
fn seg_on_a_series(
    dir: &Path,
    voxels: &[(usize, usize, usize, u8)],
) -> (Geometry, Option<String>, std::path::PathBuf) {
    use pulmo::annotate::LabelTable;
    use pulmo::io::dicom::seg;
    let ct_dir = dir.join("ct");
    write::write_series(
        &phantom(geometry()),
        &ct_dir,
        &SeriesWriteOptions::default(),
    )
    .unwrap();
    let loaded = dicom::load(&ct_dir, None, &LoadOptions::default()).unwrap();
    let g = loaded.volume.geometry.clone();
    let mut labels = Volume::filled(g.clone(), 0u8).unwrap();
    for &(i, j, k, v) in voxels {
        labels.set(i, j, k, v);
    }
    let out = dir.join("seg.dcm");
    seg::write_seg(
        &out,
        &labels,
        &LabelTable::default(),
        &loaded.meta,
        &Default::default(),
    )
    .unwrap();
    (g, loaded.meta.frame_of_reference_uid.clone(), out)
}

#[test]
fn seg_from_another_frame_of_reference_or_with_duplicate_segments_is_refused() {
    use pulmo::io::dicom::seg;
    let tmp = tempfile::tempdir().unwrap();
    let (g, own, out) = seg_on_a_series(tmp.path(), &[(3, 3, 2, 1), (4, 3, 3, 3)]);
    assert!(seg::read_seg(&out, &g, own.as_deref()).is_ok());
    let e = seg::read_seg(&out, &g, Some("1.2.3.4"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("FrameOfReferenceUID") && e.contains("seg.dcm"),
        "{e}"
    );

    // Both segments numbered 1.
    let mut obj = dicom_object::open_file(&out).unwrap();
    let mut items: Vec<dicom_object::InMemDicomObject> = obj
        .element(tags::SEGMENT_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .to_vec();
    for item in &mut items {
        item.put(DataElement::new(
            tags::SEGMENT_NUMBER,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
    }
    obj.put(DataElement::new(
        tags::SEGMENT_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(items),
    ));
    obj.write_to_file(&out).unwrap();
    let e = seg::read_seg(&out, &g, own.as_deref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("SegmentNumber 1 appears more than once"), "{e}");
}

#[test]
fn nan_seg_frame_positions_are_refused_not_stacked_on_one_slice() {
    use pulmo::io::dicom::seg;
    let tmp = tempfile::tempdir().unwrap();
    let (g, _, out) = seg_on_a_series(tmp.path(), &[(3, 3, 2, 1), (3, 3, 4, 1)]);
    let bytes = std::fs::read(&out).unwrap();
    // Rewrite every frame's ImagePositionPatient z as NaN (same length: DS text).
    let mut patched = bytes.clone();
    let needle = b"\x20\x00\x32\x00DS";
    let mut at = 0;
    let mut n = 0;
    while let Some(p) = patched[at..]
        .windows(needle.len())
        .position(|w| w == needle)
    {
        let start = at + p;
        let len = u16::from_le_bytes([patched[start + 6], patched[start + 7]]) as usize;
        let value = start + 8;
        let s = String::from_utf8_lossy(&patched[value..value + len]).to_string();
        let mut parts: Vec<String> = s.split('\\').map(|x| x.to_string()).collect();
        let last = parts.len() - 1;
        let width = parts[last].len();
        parts[last] = format!("{:<width$}", "NaN");
        let new = parts.join("\\");
        if new.len() == len {
            patched[value..value + len].copy_from_slice(new.as_bytes());
            n += 1;
        }
        at = value + len;
    }
    assert!(n >= 2, "patched {n} positions");
    std::fs::write(&out, &patched).unwrap();
    let e = seg::read_seg(&out, &g, None).unwrap_err().to_string();
    assert!(
        e.contains("ImagePositionPatient") && e.contains("seg.dcm"),
        "{e}"
    );
}

#[test]
fn a_slice_displaced_in_plane_is_excluded_not_stacked_as_if_aligned() {
    let tmp = tempfile::tempdir().unwrap();
    write_edited(tmp.path(), |k, o| {
        if k == 3 {
            put(o, tags::IMAGE_POSITION_PATIENT, VR::DS, "999900\\-80\\47.5");
        }
    });
    let loaded = dicom::load(tmp.path(), None, &LoadOptions::default()).unwrap();
    assert!(
        loaded.report.has(WarningKind::MixedGeometry),
        "{:?}",
        loaded.report.warnings
    );
    assert!(
        loaded
            .report
            .skipped_files
            .iter()
            .any(|p| p.path.ends_with("s3.dcm")),
        "{:?}",
        loaded.report.skipped_files
    );
}

#[test]
fn unreadable_rescale_and_orientation_values_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    write_edited(tmp.path(), |k, o| match k {
        1 => put(o, tags::RESCALE_SLOPE, VR::DS, "NaN"),
        2 => put(o, tags::RESCALE_INTERCEPT, VR::DS, "xyz"),
        4 => put(
            o,
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            "1\\0\\0\\0\\1\\0\\0",
        ),
        _ => {}
    });
    let loaded = dicom::load(tmp.path(), None, &LoadOptions::default()).unwrap();
    let w: Vec<String> = loaded
        .report
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect();
    assert!(
        w.iter().any(|w| w.contains("not a finite number")
            && w.contains("s1.dcm")
            && w.contains("s2.dcm")),
        "{w:?}"
    );
    // Seven orientation values: the slice cannot be placed and is left out by name.
    assert!(
        loaded
            .report
            .skipped_files
            .iter()
            .any(|p| p.path.ends_with("s4.dcm")),
        "{:?}",
        loaded.report.skipped_files
    );
}
