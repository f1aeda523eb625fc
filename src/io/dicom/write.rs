//! Writing a CT volume as a classic DICOM series (one file per slice). Used by the
//! benchmark, by tests that need real-looking series, and by users exporting a volume.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, FileMetaTableBuilder, InMemDicomObject};
use nalgebra::Vector3;
use rayon::prelude::*;

use super::DicomError;
use crate::volume::CtVolume;

/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// A new unique identifier under the UUID-derived root 2.25.
pub fn new_uid() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed) as u128;
    let pid = std::process::id() as u128;
    let mix = |mut z: u128| {
        z = (z ^ (z >> 61)).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        z ^ (z >> 67)
    };
    let v = mix(nanos ^ (pid << 96) ^ (c << 64) ^ c) & ((1u128 << 122) - 1);
    format!("2.25.{v}")
}

/// How to write a series.
#[derive(Debug, Clone)]
pub struct SeriesWriteOptions {
    pub transfer_syntax: String,
    /// Stored value = round((HU - intercept) / slope).
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
    /// Pixel Representation 1 (signed) or 0 (unsigned).
    pub signed: bool,
    pub patient_id: String,
    pub patient_name: String,
    pub study_uid: String,
    pub series_uid: String,
    pub frame_of_reference_uid: String,
    pub series_description: String,
    pub series_number: i64,
    pub modality: String,
    pub window: Option<(f64, f64)>,
}

impl Default for SeriesWriteOptions {
    fn default() -> Self {
        Self {
            transfer_syntax: EXPLICIT_VR_LE.into(),
            rescale_slope: 1.0,
            rescale_intercept: -1024.0,
            signed: false,
            patient_id: "PULMO-DEMO".into(),
            patient_name: "Demo^Synthetic".into(),
            study_uid: new_uid(),
            series_uid: new_uid(),
            frame_of_reference_uid: new_uid(),
            series_description: "pulmo synthetic series".into(),
            series_number: 1,
            modality: "CT".into(),
            window: Some({
                let lung = crate::volume::WindowPreset::lung();
                (lung.center_hu, lung.width_hu)
            }),
        }
    }
}

fn ds(s: impl Into<String>) -> PrimitiveValue {
    PrimitiveValue::from(s.into())
}

fn fmt_ds(v: f64) -> String {
    // DS holds at most 16 characters.
    let s = format!("{v}");
    if s.len() <= 16 {
        s
    } else {
        let s = format!("{v:.6}");
        s[..s.len().min(16)].trim_end_matches('.').to_string()
    }
}

fn ds_multi(values: &[f64]) -> PrimitiveValue {
    ds(values
        .iter()
        .map(|v| fmt_ds(*v))
        .collect::<Vec<_>>()
        .join("\\"))
}

/// The data set of slice `k` of `volume` (header and pixels), before writing. Tests
/// change elements of it to build malformed series.
pub fn slice_object(
    volume: &CtVolume,
    k: usize,
    options: &SeriesWriteOptions,
    sop_instance_uid: &str,
) -> InMemDicomObject {
    let g = &volume.geometry;
    let [nx, ny, _] = g.dims;
    let row = g.direction.column(0).into_owned();
    let col = g.direction.column(1).into_owned();
    let position = g.world_at_voxel(Vector3::new(0.0, 0.0, k as f64));
    let mut obj = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| {
        obj.put(DataElement::new(tag, vr, value));
    };
    put(tags::SPECIFIC_CHARACTER_SET, VR::CS, ds("ISO_IR 100"));
    put(tags::IMAGE_TYPE, VR::CS, ds("DERIVED\\SECONDARY\\AXIAL"));
    put(tags::SOP_CLASS_UID, VR::UI, ds(CT_IMAGE_STORAGE));
    put(tags::SOP_INSTANCE_UID, VR::UI, ds(sop_instance_uid));
    put(tags::STUDY_DATE, VR::DA, ds("20260101"));
    put(tags::MODALITY, VR::CS, ds(options.modality.clone()));
    put(tags::MANUFACTURER, VR::LO, ds("pulmo"));
    put(tags::PATIENT_NAME, VR::PN, ds(options.patient_name.clone()));
    put(tags::PATIENT_ID, VR::LO, ds(options.patient_id.clone()));
    put(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        ds(options.series_description.clone()),
    );
    put(tags::SLICE_THICKNESS, VR::DS, ds(fmt_ds(g.spacing_mm.z)));
    put(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        ds(options.study_uid.clone()),
    );
    put(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        ds(options.series_uid.clone()),
    );
    put(
        tags::SERIES_NUMBER,
        VR::IS,
        ds(options.series_number.to_string()),
    );
    put(tags::INSTANCE_NUMBER, VR::IS, ds((k + 1).to_string()));
    put(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        ds_multi(&[position.x, position.y, position.z]),
    );
    put(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        ds_multi(&[row.x, row.y, row.z, col.x, col.y, col.z]),
    );
    put(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        ds(options.frame_of_reference_uid.clone()),
    );
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, ds("MONOCHROME2"));
    put(tags::ROWS, VR::US, PrimitiveValue::from(ny as u16));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(nx as u16));
    // PixelSpacing: between rows (along the column direction) first.
    put(
        tags::PIXEL_SPACING,
        VR::DS,
        ds_multi(&[g.spacing_mm.y, g.spacing_mm.x]),
    );
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16));
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(options.signed as u16),
    );
    if let Some((c, w)) = options.window {
        put(tags::WINDOW_CENTER, VR::DS, ds(fmt_ds(c)));
        put(tags::WINDOW_WIDTH, VR::DS, ds(fmt_ds(w)));
    }
    put(
        tags::RESCALE_INTERCEPT,
        VR::DS,
        ds(fmt_ds(options.rescale_intercept)),
    );
    put(
        tags::RESCALE_SLOPE,
        VR::DS,
        ds(fmt_ds(options.rescale_slope)),
    );
    put(tags::RESCALE_TYPE, VR::LO, ds("HU"));
    let hu = volume.slice_k(k);
    let (slope, intercept) = (options.rescale_slope, options.rescale_intercept);
    let stored = |v: i16| ((v as f64 - intercept) / slope).round();
    let pixels = if options.signed {
        PrimitiveValue::I16(
            hu.iter()
                .map(|&v| stored(v).clamp(-32768.0, 32767.0) as i16)
                .collect(),
        )
    } else {
        PrimitiveValue::U16(
            hu.iter()
                .map(|&v| stored(v).clamp(0.0, 65535.0) as u16)
                .collect(),
        )
    };
    put(tags::PIXEL_DATA, VR::OW, pixels);
    obj
}

/// Wraps a data set with its file meta group.
pub fn with_meta(
    obj: InMemDicomObject,
    transfer_syntax: &str,
) -> Result<FileDicomObject<InMemDicomObject>, String> {
    obj.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax(transfer_syntax)
            .implementation_class_uid("2.25.190318440386133393493418374116325426409")
            .implementation_version_name("PULMO_0_1"),
    )
    .map_err(|e| e.to_string())
}

/// Writes `volume` as `slice_0000.dcm`, `slice_0001.dcm`, ... in `dir` (created if
/// needed), in parallel. Returns the paths in slice order.
pub fn write_series(
    volume: &CtVolume,
    dir: &Path,
    options: &SeriesWriteOptions,
) -> Result<Vec<PathBuf>, DicomError> {
    std::fs::create_dir_all(dir).map_err(|e| DicomError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let n = volume.geometry.dims[2];
    (0..n)
        .into_par_iter()
        .map(|k| {
            let path = dir.join(format!("slice_{k:04}.dcm"));
            let obj = slice_object(volume, k, options, &new_uid());
            let file =
                with_meta(obj, &options.transfer_syntax).map_err(|message| DicomError::Parse {
                    path: path.clone(),
                    message,
                })?;
            file.write_to_file(&path).map_err(|e| DicomError::Parse {
                path: path.clone(),
                message: format!("cannot write: {e}"),
            })?;
            Ok(path)
        })
        .collect()
}
