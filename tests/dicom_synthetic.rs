//! DICOM loading on series written in the test with dicom-object: ordering, geometry,
//! rescale, and every malformed case the loader must detect and report.

use std::path::{Path, PathBuf};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use nalgebra::{Matrix3, Rotation3, Vector3};
use pulmo::io::dicom::write::{self, SeriesWriteOptions, new_uid, slice_object, with_meta};
use pulmo::io::dicom::{self, DicomError, LoadOptions, WarningKind};
use pulmo::volume::{CtVolume, Geometry, Volume};

fn phantom(geometry: Geometry) -> CtVolume {
    let [nx, ny, nz] = geometry.dims;
    let mut v = Vec::with_capacity(nx * ny * nz);
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                // Distinct per slice and position; even values (exact at slope 0.5).
                v.push(((i * 7 + j * 13 + k * 101) % 3000) as i16 * 2 - 1024);
            }
        }
    }
    Volume::new(geometry, v).unwrap()
}

fn small_geometry() -> Geometry {
    Geometry::axis_aligned([12, 10, 8], [0.75, 0.8, 2.5], [-100.0, -80.0, 40.0])
}

/// Writes each slice of `volume` with `edit(k, &mut object)` applied, under `name(k)`.
fn write_custom(
    volume: &CtVolume,
    dir: &Path,
    options: &SeriesWriteOptions,
    name: impl Fn(usize) -> String,
    edit: impl Fn(usize, &mut dicom_object::InMemDicomObject),
) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..volume.geometry.dims[2])
        .map(|k| {
            let mut obj = slice_object(volume, k, options, &new_uid());
            edit(k, &mut obj);
            let path = dir.join(name(k));
            with_meta(obj, &options.transfer_syntax)
                .unwrap()
                .write_to_file(&path)
                .unwrap();
            path
        })
        .collect()
}

fn load(dir: &Path) -> dicom::DicomVolume {
    dicom::load(dir, None, &LoadOptions::default()).unwrap_or_else(|e| panic!("load failed: {e}"))
}

fn assert_geometry_close(a: &Geometry, b: &Geometry, tol: f64) {
    assert_eq!(a.dims, b.dims);
    assert!(
        (a.spacing_mm - b.spacing_mm).norm() < tol,
        "spacing {:?} vs {:?}",
        a.spacing_mm,
        b.spacing_mm
    );
    assert!(
        (a.origin_mm - b.origin_mm).norm() < tol,
        "origin {:?} vs {:?}",
        a.origin_mm,
        b.origin_mm
    );
    assert!(
        (a.direction - b.direction).norm() < tol,
        "direction {:?} vs {:?}",
        a.direction,
        b.direction
    );
}

#[test]
fn shuffled_files_and_instance_numbers_stack_by_position() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    // File names and InstanceNumbers in an order unrelated to position.
    let perm = [5usize, 2, 7, 0, 3, 6, 1, 4];
    write_custom(
        &vol,
        tmp.path(),
        &SeriesWriteOptions::default(),
        |k| format!("img{}.dcm", perm[k]),
        |k, obj| {
            obj.put(DataElement::new(
                tags::INSTANCE_NUMBER,
                VR::IS,
                PrimitiveValue::from(format!("{}", perm[(k + 3) % 8])),
            ));
        },
    );
    let loaded = load(tmp.path());
    assert_eq!(loaded.volume.voxels, vol.voxels);
    assert_geometry_close(&loaded.volume.geometry, &vol.geometry, 1e-9);
    assert!(
        loaded.report.warnings.is_empty(),
        "{:?}",
        loaded.report.warnings
    );
    assert_eq!(loaded.meta.modality.as_deref(), Some("CT"));
    assert_eq!(loaded.meta.sop_instance_uids.len(), 8);
}

#[test]
fn reversed_stacking_direction_and_oblique_orientation() {
    let tmp = tempfile::tempdir().unwrap();
    let mut g = small_geometry();
    g.direction = *Rotation3::from_euler_angles(0.25, -0.15, 0.4).matrix();
    let vol = phantom(g);
    write::write_series(&vol, tmp.path(), &SeriesWriteOptions::default()).unwrap();
    let loaded = load(tmp.path());
    assert_eq!(loaded.volume.voxels, vol.voxels);
    assert_geometry_close(&loaded.volume.geometry, &vol.geometry, 1e-6);
    assert!(
        loaded.report.warnings.is_empty(),
        "{:?}",
        loaded.report.warnings
    );

    // Slices stacked against the normal (k towards the feet): the loader orders them
    // along the normal, so the volume comes back flipped in k but at the same world
    // positions.
    let tmp2 = tempfile::tempdir().unwrap();
    let mut g2 = small_geometry();
    g2.direction = Matrix3::from_columns(&[Vector3::x(), Vector3::y(), -Vector3::z()]);
    let vol2 = phantom(g2);
    write::write_series(&vol2, tmp2.path(), &SeriesWriteOptions::default()).unwrap();
    let l2 = load(tmp2.path());
    let g = &l2.volume.geometry;
    assert_eq!(g.direction.column(2).into_owned(), Vector3::z());
    for k in 0..8 {
        assert_eq!(l2.volume.slice_k(k), vol2.slice_k(7 - k));
        let w_loaded = g.world_at_voxel(Vector3::new(0.0, 0.0, k as f64));
        let w_orig = vol2
            .geometry
            .world_at_voxel(Vector3::new(0.0, 0.0, (7 - k) as f64));
        assert!((w_loaded - w_orig).norm() < 1e-9);
    }
}

#[test]
fn rescale_slope_half_intercept_minus_1024() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    let opts = SeriesWriteOptions {
        rescale_slope: 0.5,
        rescale_intercept: -1024.0,
        ..Default::default()
    };
    write::write_series(&vol, tmp.path(), &opts).unwrap();
    let loaded = load(tmp.path());
    assert_eq!(loaded.volume.voxels, vol.voxels);
    // Signed storage with another intercept, implicit VR little endian.
    let tmp2 = tempfile::tempdir().unwrap();
    let opts2 = SeriesWriteOptions {
        rescale_slope: 1.0,
        rescale_intercept: 0.0,
        signed: true,
        transfer_syntax: write::IMPLICIT_VR_LE.into(),
        ..Default::default()
    };
    write::write_series(&vol, tmp2.path(), &opts2).unwrap();
    let l2 = load(tmp2.path());
    assert_eq!(l2.volume.voxels, vol.voxels);
    assert_eq!(l2.meta.transfer_syntaxes[0].0, write::IMPLICIT_VR_LE);
}

#[test]
fn two_series_in_one_folder_are_listed_and_chosen() {
    let tmp = tempfile::tempdir().unwrap();
    let a = phantom(small_geometry());
    let b = phantom(Geometry::axis_aligned([6, 6, 4], [1.0, 1.0, 3.0], [0.0; 3]));
    let oa = SeriesWriteOptions {
        series_number: 2,
        ..Default::default()
    };
    let ob = SeriesWriteOptions {
        series_number: 3,
        series_description: "second".into(),
        ..Default::default()
    };
    write::write_series(&a, &tmp.path().join("a"), &oa).unwrap();
    write::write_series(&b, &tmp.path().join("b"), &ob).unwrap();
    let err = dicom::load(tmp.path(), None, &LoadOptions::default()).unwrap_err();
    let DicomError::MultipleSeries { series, .. } = &err else {
        panic!("expected MultipleSeries, got {err}");
    };
    assert_eq!(series.len(), 2);
    assert_eq!(
        (series[0].columns, series[0].rows, series[0].slices),
        (12, 10, 8)
    );
    assert_eq!(
        (series[1].columns, series[1].rows, series[1].slices),
        (6, 6, 4)
    );
    assert_eq!(series[1].description.as_deref(), Some("second"));
    assert!(err.to_string().contains(&ob.series_uid));
    let loaded = dicom::load(tmp.path(), Some(&ob.series_uid), &LoadOptions::default()).unwrap();
    assert_eq!(loaded.volume.voxels, b.voxels);
}

#[test]
fn truncated_and_non_dicom_files_are_reported_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(Geometry::axis_aligned(
        [12, 10, 5],
        [0.75, 0.8, 2.0],
        [0.0; 3],
    ));
    let files = write::write_series(&vol, tmp.path(), &SeriesWriteOptions::default()).unwrap();
    std::fs::write(tmp.path().join("README.txt"), "not dicom").unwrap();
    std::fs::write(tmp.path().join("empty.dcm"), "").unwrap();
    // Cut the middle slice inside its pixel data.
    let len = std::fs::metadata(&files[2]).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&files[2])
        .unwrap();
    f.set_len(len - 50).unwrap();
    let loaded = load(tmp.path());
    let r = &loaded.report;
    let skipped: Vec<String> = r.skipped_files.iter().map(|p| p.to_string()).collect();
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("README.txt") && s.contains("not a DICOM file")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|s| s.contains("slice_0002.dcm")),
        "{skipped:?}"
    );
    assert!(r.has(WarningKind::SkippedFiles));
    // The lost slice is a gap: filled by interpolation, reported as missing.
    assert!(r.has(WarningKind::MissingSlices), "{:?}", r.warnings);
    assert_eq!(loaded.volume.geometry.dims, [12, 10, 5]);
    for i in 0..120 {
        let expected = ((vol.slice_k(1)[i] as f64 + vol.slice_k(3)[i] as f64) / 2.0).round() as i16;
        assert_eq!(loaded.volume.slice_k(2)[i], expected);
    }
    assert_eq!(loaded.volume.slice_k(4), vol.slice_k(4));
}

#[test]
fn missing_slice_is_detected_and_interpolated() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    let files = write::write_series(&vol, tmp.path(), &SeriesWriteOptions::default()).unwrap();
    std::fs::remove_file(&files[5]).unwrap();
    let loaded = load(tmp.path());
    let w: Vec<_> = loaded
        .report
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::MissingSlices)
        .collect();
    assert_eq!(w.len(), 1, "{:?}", loaded.report.warnings);
    assert!(w[0].message.contains("1 slice(s) missing"), "{}", w[0]);
    assert!(w[0].files.iter().any(|p| p.ends_with("slice_0004.dcm")));
    assert!(w[0].files.iter().any(|p| p.ends_with("slice_0006.dcm")));
    assert!(!loaded.report.has(WarningKind::NonUniformSpacing));
    assert_geometry_close(&loaded.volume.geometry, &vol.geometry, 1e-9);
    assert_eq!(loaded.volume.slice_k(4), vol.slice_k(4));
    assert_eq!(loaded.volume.slice_k(6), vol.slice_k(6));
}

#[test]
fn gantry_tilt_is_measured_and_detilted() {
    let tmp = tempfile::tempdir().unwrap();
    let tilt = 15f64.to_radians();
    let mut g = Geometry::axis_aligned([16, 16, 10], [1.0, 1.0, 2.0], [0.0; 3]);
    // Slices stay axial but each is shifted along y: the stacking direction leans.
    g.direction = Matrix3::from_columns(&[
        Vector3::x(),
        Vector3::y(),
        Vector3::new(0.0, tilt.sin(), tilt.cos()),
    ]);
    let vol = phantom(g);
    write::write_series(&vol, tmp.path(), &SeriesWriteOptions::default()).unwrap();
    let loaded = load(tmp.path());
    let w = loaded
        .report
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::GantryTilt)
        .expect("tilt reported");
    assert!(w.message.contains("15.0 degrees"), "{w}");
    let out = &loaded.volume.geometry;
    // Orthogonal result, slice spacing along the normal = 2 cos(15deg).
    assert!((out.direction - Matrix3::identity()).norm() < 1e-9);
    assert!((out.spacing_mm.z - 2.0 * tilt.cos()).abs() < 1e-6);
    // Every original slice's voxel centre carries the same value after de-tilting
    // (voxels at the original positions are hit exactly in z; in y they are
    // interpolated, so compare at a world point on an original slice).
    let k = 4usize;
    let world = vol
        .geometry
        .world_at_voxel(Vector3::new(5.0, 6.0, k as f64));
    let v = out.voxel_at_world(world);
    assert!((v.z - v.z.round()).abs() < 1e-6);
    let (i, j, kk) = (v.x.round() as usize, v.y, v.z.round() as usize);
    let j0 = j.floor() as usize;
    let f = j - j0 as f64;
    let expected = vol.get(5, 6, k) as f64;
    let got = loaded.volume.get(i, j0, kk) as f64 * (1.0 - f)
        + loaded.volume.get(i, j0 + 1, kk) as f64 * f;
    // The phantom is linear in j within a slice except where it wraps; allow rounding.
    assert!(
        (got - expected).abs() <= 14.0,
        "got {got}, expected {expected}"
    );
}

#[test]
fn non_uniform_spacing_and_duplicates_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    let opts = SeriesWriteOptions::default();
    write_custom(
        &vol,
        tmp.path(),
        &opts,
        |k| format!("s{k}.dcm"),
        |k, obj| {
            if k == 6 {
                // Move slice 6 up by 1 mm: spacing 3.5 then 1.5 mm.
                let z = 40.0 + 2.5 * 6.0 + 1.0;
                obj.put(DataElement::new(
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    PrimitiveValue::from(format!("-100\\-80\\{z}")),
                ));
            }
        },
    );
    // A duplicate of slice 3 under another name and SOP Instance UID.
    let mut dup = slice_object(&vol, 3, &opts, &new_uid());
    dup.put(DataElement::new(
        tags::INSTANCE_NUMBER,
        VR::IS,
        PrimitiveValue::from("99"),
    ));
    with_meta(dup, &opts.transfer_syntax)
        .unwrap()
        .write_to_file(tmp.path().join("zz_dup.dcm"))
        .unwrap();
    let loaded = load(tmp.path());
    let r = &loaded.report;
    assert!(r.has(WarningKind::NonUniformSpacing), "{:?}", r.warnings);
    let d = r
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::DuplicatePosition)
        .expect("duplicate reported");
    assert!(
        d.files.iter().any(|p| p.ends_with("zz_dup.dcm"))
            && d.files.iter().any(|p| p.ends_with("s3.dcm"))
    );
    // Resampled at the finest gap (1.5 mm) over the 17.5 mm span.
    assert_eq!(loaded.volume.geometry.dims[2], 13);
    assert!((loaded.volume.geometry.spacing_mm.z - 1.5).abs() < 1e-9);
}

#[test]
fn mixed_dims_and_modality_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    let opts = SeriesWriteOptions {
        modality: "MR".into(),
        ..Default::default()
    };
    write::write_series(&vol, tmp.path(), &opts).unwrap();
    // A scout-like image of another size in the same series.
    let other = phantom(Geometry::axis_aligned(
        [20, 20, 1],
        [1.0; 3],
        [0.0, 0.0, 300.0],
    ));
    let obj = slice_object(&other, 0, &opts, &new_uid());
    with_meta(obj, &opts.transfer_syntax)
        .unwrap()
        .write_to_file(tmp.path().join("scout.dcm"))
        .unwrap();
    let loaded = load(tmp.path());
    let r = &loaded.report;
    let m = r
        .warnings
        .iter()
        .find(|w| w.kind == WarningKind::MixedGeometry)
        .expect("mixed reported");
    assert!(m.files.iter().any(|p| p.ends_with("scout.dcm")));
    assert!(r.has(WarningKind::NotCt));
    assert_eq!(loaded.volume.voxels, vol.voxels);
}

#[test]
fn missing_geometry_falls_back_with_a_warning_or_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    let strip = |_: usize, obj: &mut dicom_object::InMemDicomObject| {
        obj.remove_element(tags::IMAGE_POSITION_PATIENT);
        obj.remove_element(tags::IMAGE_ORIENTATION_PATIENT);
    };
    write_custom(
        &vol,
        tmp.path(),
        &SeriesWriteOptions::default(),
        |k| format!("{}.dcm", 9 - k),
        strip,
    );
    let loaded = load(tmp.path());
    assert!(loaded.report.has(WarningKind::MissingGeometry));
    // Stacked by InstanceNumber (k + 1).
    assert_eq!(loaded.volume.voxels, vol.voxels);
    assert!(
        (loaded.volume.geometry.spacing_mm.z - 2.5).abs() < 1e-9,
        "from SliceThickness"
    );

    // Without InstanceNumber either, the order is unknown: refuse.
    let tmp2 = tempfile::tempdir().unwrap();
    write_custom(
        &vol,
        tmp2.path(),
        &SeriesWriteOptions::default(),
        |k| format!("{k}.dcm"),
        |k, obj| {
            strip(k, obj);
            obj.remove_element(tags::INSTANCE_NUMBER);
        },
    );
    let err = dicom::load(tmp2.path(), None, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("order cannot be known"), "{err}");
}

#[test]
fn empty_folder_and_unsupported_syntax_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("notes.txt"), "hello").unwrap();
    let err = dicom::load(tmp.path(), None, &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("no DICOM images found") && msg.contains("notes.txt"),
        "{msg}"
    );

    // A syntax no codec decodes.
    let tmp2 = tempfile::tempdir().unwrap();
    let vol = phantom(Geometry::axis_aligned([4, 4, 1], [1.0; 3], [0.0; 3]));
    let obj = slice_object(&vol, 0, &SeriesWriteOptions::default(), &new_uid());
    let path = tmp2.path().join("jls.dcm");
    let ts = "1.2.840.10008.1.2.4.100"; // MPEG2: never decodable as images
    if with_meta(obj, ts)
        .and_then(|f| f.write_to_file(&path).map_err(|e| e.to_string()))
        .is_ok()
    {
        let err = dicom::load(&path, None, &LoadOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("jls.dcm") && (msg.contains(ts) || msg.contains("MPEG")),
            "{msg}"
        );
    }
}

#[test]
fn progress_and_cancellation() {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    write::write_series(&vol, tmp.path(), &SeriesWriteOptions::default()).unwrap();
    let seen = Mutex::new(Vec::new());
    let progress = |stage: dicom::LoadStage, done: usize, total: usize| {
        seen.lock().unwrap().push((stage, done, total))
    };
    let opts = LoadOptions {
        progress: Some(&progress),
        cancel: None,
    };
    dicom::load(tmp.path(), None, &opts).unwrap();
    let seen = seen.into_inner().unwrap();
    assert!(seen.contains(&(dicom::LoadStage::Scanning, 8, 8)));
    assert!(seen.contains(&(dicom::LoadStage::Decoding, 8, 8)));
    let cancel = AtomicBool::new(true);
    let opts = LoadOptions {
        progress: None,
        cancel: Some(&cancel),
    };
    assert!(matches!(
        dicom::load(tmp.path(), None, &opts),
        Err(DicomError::Cancelled)
    ));
}

#[test]
fn enhanced_multiframe_ct_is_stacked_by_per_frame_positions() {
    use dicom_object::InMemDicomObject;
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(Geometry::axis_aligned(
        [8, 6, 5],
        [0.5, 0.6, 1.5],
        [10.0, 20.0, 30.0],
    ));
    let opts = SeriesWriteOptions::default();
    let mut obj = slice_object(&vol, 0, &opts, &new_uid());
    for t in [
        tags::IMAGE_POSITION_PATIENT,
        tags::IMAGE_ORIENTATION_PATIENT,
        tags::PIXEL_SPACING,
    ] {
        obj.remove_element(t);
    }
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from("5"),
    ));
    let item = |tag, vr, v: &str| {
        InMemDicomObject::from_element_iter([DataElement::new(tag, vr, PrimitiveValue::from(v))])
    };
    let seq = |tag, items: Vec<InMemDicomObject>| {
        DataElement::new(tag, VR::SQ, dicom_core::value::DataSetSequence::from(items))
    };
    let shared = InMemDicomObject::from_element_iter([
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(tags::PIXEL_SPACING, VR::DS, "0.6\\0.5")],
        ),
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "1\\0\\0\\0\\1\\0",
            )],
        ),
    ]);
    obj.put(seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]));
    // Frames stored in reverse z order.
    let per_frame: Vec<InMemDicomObject> = (0..5)
        .map(|f| {
            let z = 30.0 + 1.5 * (4 - f) as f64;
            InMemDicomObject::from_element_iter([seq(
                tags::PLANE_POSITION_SEQUENCE,
                vec![item(
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    &format!("10\\20\\{z}"),
                )],
            )])
        })
        .collect();
    obj.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
    let stored: Vec<u16> = (0..5)
        .rev()
        .flat_map(|k| vol.slice_k(k).iter().map(|&v| (v as i32 + 1024) as u16))
        .collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(stored.into()),
    ));
    let path = tmp.path().join("enhanced.dcm");
    with_meta(obj, &opts.transfer_syntax)
        .unwrap()
        .write_to_file(&path)
        .unwrap();
    let loaded = dicom::load(&path, None, &LoadOptions::default()).unwrap();
    assert!(loaded.report.has(WarningKind::MultiFrame));
    assert_eq!(loaded.volume.voxels, vol.voxels);
    assert_geometry_close(&loaded.volume.geometry, &vol.geometry, 1e-9);
}

#[test]
fn dicomdir_references_are_followed() {
    use dicom_object::InMemDicomObject;
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    let files = write::write_series(
        &vol,
        &tmp.path().join("IMG"),
        &SeriesWriteOptions::default(),
    )
    .unwrap();
    // A stray series next to the DICOMDIR that it does not reference.
    let other = phantom(Geometry::axis_aligned([4, 4, 2], [1.0; 3], [0.0; 3]));
    write::write_series(
        &other,
        &tmp.path().join("OTHER"),
        &SeriesWriteOptions::default(),
    )
    .unwrap();
    let records: Vec<InMemDicomObject> = files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            InMemDicomObject::from_element_iter([
                DataElement::new(
                    tags::DIRECTORY_RECORD_TYPE,
                    VR::CS,
                    PrimitiveValue::from("IMAGE"),
                ),
                DataElement::new(
                    tags::REFERENCED_FILE_ID,
                    VR::CS,
                    PrimitiveValue::from(format!("IMG\\{name}")),
                ),
            ])
        })
        .collect();
    let dir = InMemDicomObject::from_element_iter([DataElement::new(
        tags::DIRECTORY_RECORD_SEQUENCE,
        VR::SQ,
        dicom_core::value::DataSetSequence::from(records),
    )]);
    let file = dir
        .with_meta(
            dicom_object::FileMetaTableBuilder::new()
                .transfer_syntax(write::EXPLICIT_VR_LE)
                .media_storage_sop_class_uid("1.2.840.10008.1.3.10")
                .media_storage_sop_instance_uid(new_uid()),
        )
        .unwrap();
    file.write_to_file(tmp.path().join("DICOMDIR")).unwrap();
    let loaded = dicom::load(&tmp.path().join("DICOMDIR"), None, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.volume.voxels, vol.voxels);
}

#[test]
fn deflated_explicit_little_endian() {
    let tmp = tempfile::tempdir().unwrap();
    let vol = phantom(small_geometry());
    let opts = SeriesWriteOptions {
        transfer_syntax: "1.2.840.10008.1.2.1.99".into(),
        ..Default::default()
    };
    write::write_series(&vol, tmp.path(), &opts).unwrap();
    let loaded = load(tmp.path());
    assert_eq!(loaded.meta.transfer_syntaxes[0].0, "1.2.840.10008.1.2.1.99");
    assert_eq!(loaded.volume.voxels, vol.voxels);
}
