//! DICOM Segmentation (SEG) export and import of label maps.
//!
//! [`write_seg`] writes a label map as one binary Segmentation Storage instance
//! (SOP Class 1.2.840.10008.5.1.4.1.1.66.4, explicit VR little endian): one segment per
//! label value present, 1-bit packed frames (only the slices where that segment has at
//! least one voxel), frames ordered by segment then by slice, as highdicom writes them.
//!
//! [`read_seg`] reads a BINARY (or FRACTIONAL, thresholded at 0.5) SEG back onto a CT
//! grid by matching each frame's ImagePositionPatient to the CT's slices.
//!
//! Coding of the segments (SegmentedPropertyCategory/Type, scheme SCT = SNOMED CT):
//!
//! | pulmo label             | category                                   | type                                        |
//! |-------------------------|--------------------------------------------|---------------------------------------------|
//! | 1 left lung             | 123037004 Anatomical Structure             | 39607008 Lung, modifier 7771000 Left        |
//! | 2 right lung            | 123037004 Anatomical Structure             | 39607008 Lung, modifier 24028007 Right      |
//! | 3 ground-glass opacity  | 49755003 Morphologically Altered Structure | GGO (private scheme 99PULMO) Ground-glass opacity |
//! | 4 consolidation         | 49755003 Morphologically Altered Structure | 95436008 Lung consolidation                 |
//! | 5 pleural effusion      | 49755003 Morphologically Altered Structure | 60046008 Pleural effusion                   |
//! | 6 other lesion / others | 49755003 Morphologically Altered Structure | 52988006 Lesion                             |
//!
//! Ground-glass opacity uses a private code (scheme "99PULMO", allowed by PS3.3 8.2)
//! rather than a SNOMED CT concept id we could not verify. Each segment also carries
//! SegmentDescription "pulmo label value N" so that pulmo's own SEGs round-trip label
//! values exactly; other tools' segments are matched by name to the default table, else
//! numbered by segment number.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use dicom_core::smallvec::smallvec;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use nalgebra::{Point3, Vector3};

use super::SeriesMeta;
use super::write::{CT_IMAGE_STORAGE, EXPLICIT_VR_LE, new_uid, with_meta};
use crate::annotate::{Label, LabelTable};
use crate::volume::{Geometry, LabelVolume};

/// Segmentation Storage.
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";

/// Errors of SEG export and import; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum SegError {
    #[error("cannot write {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: cannot build the DICOM SEG: {message}", path.display())]
    Build { path: PathBuf, message: String },
    #[error("{}: the label map has no labelled voxel; a SEG needs at least one segment", path.display())]
    Empty { path: PathBuf },
    #[error("{}: not a readable DICOM file: {message}", path.display())]
    NotDicom { path: PathBuf, message: String },
    #[error("{}: not a DICOM Segmentation (SOP Class {sop_class})", path.display())]
    NotSeg { path: PathBuf, sop_class: String },
    #[error("{}: malformed SEG: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error("{}: unsupported SEG: {message}", path.display())]
    Unsupported { path: PathBuf, message: String },
    #[error("{}: the SEG does not match the CT grid: {message}", path.display())]
    GridMismatch { path: PathBuf, message: String },
}

/// SegmentAlgorithmType.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SegAlgorithm {
    #[default]
    Manual,
    Semiautomatic,
    Automatic,
}

impl SegAlgorithm {
    fn code(self) -> &'static str {
        match self {
            SegAlgorithm::Manual => "MANUAL",
            SegAlgorithm::Semiautomatic => "SEMIAUTOMATIC",
            SegAlgorithm::Automatic => "AUTOMATIC",
        }
    }
}

/// How to write a SEG.
#[derive(Debug, Clone)]
pub struct SegWriteOptions {
    pub algorithm: SegAlgorithm,
    /// SegmentAlgorithmName (written for SEMIAUTOMATIC/AUTOMATIC).
    pub algorithm_name: String,
    /// ContentLabel (CS: upper case, digits, underscore; at most 16 characters).
    pub content_label: String,
    pub content_description: String,
    /// ContentCreatorName (PN), may be empty.
    pub content_creator: String,
    pub series_description: String,
    pub series_number: i64,
}

impl Default for SegWriteOptions {
    fn default() -> Self {
        Self {
            algorithm: SegAlgorithm::Manual,
            algorithm_name: "pulmo".into(),
            content_label: "PULMO_LABELS".into(),
            content_description: "pulmo label map".into(),
            content_creator: String::new(),
            series_description: "pulmo segmentation".into(),
            series_number: 300,
        }
    }
}

/// What [`read_seg`] produced.
#[derive(Debug, Clone)]
pub struct SegImport {
    pub labels: LabelVolume,
    pub table: LabelTable,
    /// Things the user should know (fractional thresholding, overlaps), in plain words.
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// colour

/// sRGB (0..255) → DICOM scaled CIELab (PS3.3 C.10.7.1.1: L 0..100 → 0..65535,
/// a and b -128..127 → 0..65535), D65 white point.
pub fn srgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    let x = 0.4124564 * r + 0.3575761 * g + 0.1804375 * b;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = 0.0193339 * r + 0.1191920 * g + 0.9503041 * b;
    let f = |t: f64| {
        if t > (6.0f64 / 29.0).powi(3) {
            t.cbrt()
        } else {
            t / (3.0 * (6.0f64 / 29.0).powi(2)) + 4.0 / 29.0
        }
    };
    let (fx, fy, fz) = (f(x / WHITE[0]), f(y / WHITE[1]), f(z / WHITE[2]));
    let l = 116.0 * fy - 16.0;
    let a = 500.0 * (fx - fy);
    let bb = 200.0 * (fy - fz);
    let scale = |v: f64| v.round().clamp(0.0, 65535.0) as u16;
    [
        scale(l * 65535.0 / 100.0),
        scale((a + 128.0) * 65535.0 / 255.0),
        scale((bb + 128.0) * 65535.0 / 255.0),
    ]
}

const WHITE: [f64; 3] = [0.95047, 1.0, 1.08883];

/// DICOM scaled CIELab → sRGB (0..255), the inverse of [`srgb_to_dicom_lab`].
pub fn dicom_lab_to_srgb(lab: [u16; 3]) -> [u8; 3] {
    let l = lab[0] as f64 * 100.0 / 65535.0;
    let a = lab[1] as f64 * 255.0 / 65535.0 - 128.0;
    let b = lab[2] as f64 * 255.0 / 65535.0 - 128.0;
    let fy = (l + 16.0) / 116.0;
    let fx = fy + a / 500.0;
    let fz = fy - b / 200.0;
    let finv = |t: f64| {
        if t > 6.0 / 29.0 {
            t * t * t
        } else {
            3.0 * (6.0f64 / 29.0).powi(2) * (t - 4.0 / 29.0)
        }
    };
    let (x, y, z) = (
        finv(fx) * WHITE[0],
        finv(fy) * WHITE[1],
        finv(fz) * WHITE[2],
    );
    let r = 3.2404542 * x - 1.5371385 * y - 0.4985314 * z;
    let g = -0.9692660 * x + 1.8760108 * y + 0.0415560 * z;
    let bl = 0.0556434 * x - 0.2040259 * y + 1.0572252 * z;
    let enc = |c: f64| {
        let c = c.clamp(0.0, 1.0);
        let v = if c <= 0.0031308 {
            12.92 * c
        } else {
            1.055 * c.powf(1.0 / 2.4) - 0.055
        };
        (v * 255.0).round().clamp(0.0, 255.0) as u8
    };
    [enc(r), enc(g), enc(bl)]
}

// ---------------------------------------------------------------------------------------
// writing

fn fmt_ds(v: f64) -> String {
    let s = format!("{v}");
    if s.len() <= 16 {
        return s;
    }
    for prec in (0..=10).rev() {
        let s = format!("{v:.prec$}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.0}")
}

fn ds_multi(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::from(
        values
            .iter()
            .map(|v| fmt_ds(*v))
            .collect::<Vec<_>>()
            .join("\\"),
    )
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, value.into()));
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    put(obj, tag, vr, PrimitiveValue::from(value));
}

fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn item(f: impl FnOnce(&mut InMemDicomObject)) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    f(&mut o);
    o
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    item(|o| {
        put_str(o, tags::CODE_VALUE, VR::SH, value);
        put_str(o, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
        put_str(o, tags::CODE_MEANING, VR::LO, meaning);
    })
}

/// (category, type, type modifier) codes of a pulmo label value; see the module docs.
fn segment_codes(value: u8) -> (InMemDicomObject, InMemDicomObject, Option<InMemDicomObject>) {
    let anatomy = || code("123037004", "SCT", "Anatomical Structure");
    let abnormal = || code("49755003", "SCT", "Morphologically Altered Structure");
    match value {
        crate::annotate::LEFT_LUNG => (
            anatomy(),
            code("39607008", "SCT", "Lung"),
            Some(code("7771000", "SCT", "Left")),
        ),
        crate::annotate::RIGHT_LUNG => (
            anatomy(),
            code("39607008", "SCT", "Lung"),
            Some(code("24028007", "SCT", "Right")),
        ),
        crate::annotate::GGO => (
            abnormal(),
            code("GGO", "99PULMO", "Ground-glass opacity"),
            None,
        ),
        crate::annotate::CONSOLIDATION => (
            abnormal(),
            code("95436008", "SCT", "Lung consolidation"),
            None,
        ),
        crate::annotate::PLEURAL_EFFUSION => (
            abnormal(),
            code("60046008", "SCT", "Pleural effusion"),
            None,
        ),
        _ => (abnormal(), code("52988006", "SCT", "Lesion"), None),
    }
}

fn today() -> (String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Civil date from days since 1970-01-01 (UTC).
    let days = (secs / 86400) as i64;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let s = secs % 86400;
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", s / 3600, (s / 60) % 60, s % 60),
    )
}

/// Writes `labels` as a binary DICOM SEG referencing the source CT series `source`
/// (its UIDs, patient and study attributes and, when it has one per slice, each slice's
/// SOP Instance UID). The label map's grid is the CT's grid. The file is written to a
/// temporary file in the same folder and renamed.
pub fn write_seg(
    path: &Path,
    labels: &LabelVolume,
    table: &LabelTable,
    source: &SeriesMeta,
    options: &SegWriteOptions,
) -> Result<(), SegError> {
    let build = |message: String| SegError::Build {
        path: path.to_path_buf(),
        message,
    };
    let g = &labels.geometry;
    let [nx, ny, _] = g.dims;
    if nx > u16::MAX as usize || ny > u16::MAX as usize {
        return Err(build(format!("slices of {nx} x {ny} exceed 65535")));
    }
    let present = values_per_slice(labels);
    let values: Vec<u8> = (1..=255u8)
        .filter(|&v| present.iter().any(|p| p[v as usize]))
        .collect();
    if values.is_empty() {
        return Err(SegError::Empty {
            path: path.to_path_buf(),
        });
    }
    let refs = SourceRefs::of(source, g.dims[2]);
    let ids = SegIds::new(source);
    let frames = seg_frames(&values, &present);

    let mut obj = InMemDicomObject::new_empty();
    let o = &mut obj;
    put_patient_study_series(o, source, options, &ids);
    put_dimension_organization(o, &ids.dim_org_uid);
    put_image_and_content(o, [nx, ny], options);
    let segments = values
        .iter()
        .enumerate()
        .map(|(n, &v)| segment_item(n, v, table, options))
        .collect();
    put_seq(o, tags::SEGMENT_SEQUENCE, segments);
    put_seq(
        o,
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![shared_functional_groups(g)],
    );
    let per_frame = frames
        .iter()
        .map(|frame| per_frame_functional_groups(g, frame, &refs))
        .collect();
    put(o, tags::NUMBER_OF_FRAMES, VR::IS, frames.len().to_string());
    put_seq(o, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame);
    put_seq(
        o,
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![referenced_series(source, &refs)],
    );
    put(o, tags::PIXEL_DATA, VR::OB, pack_frames(labels, &frames));

    let file = with_meta(obj, EXPLICIT_VR_LE).map_err(build)?;
    crate::io::atomic::write_atomically(path, None, |w| {
        file.write_all(w)
            .map_err(|e| io::Error::other(e.to_string()))
    })
    .map_err(|e| SegError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Which label values are present on which slices: `[slice][value]`.
fn values_per_slice(labels: &LabelVolume) -> Vec<[bool; 256]> {
    let [nx, ny, nz] = labels.geometry.dims;
    let plane = nx * ny;
    let mut present = vec![[false; 256]; nz];
    for (k, slice_present) in present.iter_mut().enumerate() {
        for &v in &labels.voxels[k * plane..(k + 1) * plane] {
            slice_present[v as usize] = true;
        }
    }
    present
}

/// The source CT's instances a SEG references.
struct SourceRefs<'a> {
    /// Their SOP Class UID (CT Image Storage when the series does not say).
    sop_class: String,
    /// One SOP Instance UID per slice, when the series has exactly one per slice.
    instances: Option<&'a [String]>,
}

impl<'a> SourceRefs<'a> {
    fn of(source: &'a SeriesMeta, slices: usize) -> Self {
        SourceRefs {
            sop_class: source
                .sop_class_uid
                .clone()
                .unwrap_or_else(|| CT_IMAGE_STORAGE.to_string()),
            instances: (source.sop_instance_uids.len() == slices)
                .then_some(&source.sop_instance_uids[..]),
        }
    }

    /// A referenced image: its class and instance UID.
    fn image(&self, uid: &str, more: impl FnOnce(&mut InMemDicomObject)) -> InMemDicomObject {
        item(|i| {
            put_str(i, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &self.sop_class);
            put_str(i, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid);
            more(i);
        })
    }
}

/// The new SEG's UIDs (the study's and frame of reference's are the source's when it
/// has them) and its creation date and time.
struct SegIds {
    date: String,
    time: String,
    study_uid: String,
    frame_of_reference_uid: String,
    series_uid: String,
    sop_uid: String,
    dim_org_uid: String,
}

impl SegIds {
    fn new(source: &SeriesMeta) -> Self {
        let (date, time) = today();
        let study_uid = source.study_uid.clone().unwrap_or_else(new_uid);
        let frame_of_reference_uid = source
            .frame_of_reference_uid
            .clone()
            .unwrap_or_else(new_uid);
        SegIds {
            date,
            time,
            study_uid,
            frame_of_reference_uid,
            series_uid: new_uid(),
            sop_uid: new_uid(),
            dim_org_uid: new_uid(),
        }
    }
}

/// SOP common, patient, study, series, equipment and frame of reference attributes.
fn put_patient_study_series(
    o: &mut InMemDicomObject,
    source: &SeriesMeta,
    options: &SegWriteOptions,
    ids: &SegIds,
) {
    let or_empty = |v: &Option<String>| v.as_deref().unwrap_or("").to_string();
    put_str(o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(o, tags::IMAGE_TYPE, VR::CS, "DERIVED\\PRIMARY");
    put_str(o, tags::SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE);
    put_str(o, tags::SOP_INSTANCE_UID, VR::UI, &ids.sop_uid);
    put_str(o, tags::STUDY_DATE, VR::DA, &or_empty(&source.study_date));
    put_str(o, tags::SERIES_DATE, VR::DA, &ids.date);
    put_str(o, tags::CONTENT_DATE, VR::DA, &ids.date);
    put_str(o, tags::STUDY_TIME, VR::TM, "");
    put_str(o, tags::CONTENT_TIME, VR::TM, &ids.time);
    put_str(o, tags::ACCESSION_NUMBER, VR::SH, "");
    put_str(o, tags::MODALITY, VR::CS, "SEG");
    put_str(o, tags::MANUFACTURER, VR::LO, "pulmo");
    put_str(o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    let description = &options.series_description;
    put_str(o, tags::SERIES_DESCRIPTION, VR::LO, description);
    put_str(o, tags::MANUFACTURER_MODEL_NAME, VR::LO, "pulmo");
    put_str(
        o,
        tags::PATIENT_NAME,
        VR::PN,
        &or_empty(&source.patient_name),
    );
    put_str(o, tags::PATIENT_ID, VR::LO, &or_empty(&source.patient_id));
    put_str(o, tags::PATIENT_BIRTH_DATE, VR::DA, "");
    put_str(o, tags::PATIENT_SEX, VR::CS, "");
    put_str(o, tags::DEVICE_SERIAL_NUMBER, VR::LO, "1");
    let version = env!("CARGO_PKG_VERSION");
    put_str(o, tags::SOFTWARE_VERSIONS, VR::LO, version);
    put_str(o, tags::STUDY_INSTANCE_UID, VR::UI, &ids.study_uid);
    put_str(o, tags::SERIES_INSTANCE_UID, VR::UI, &ids.series_uid);
    put_str(o, tags::STUDY_ID, VR::SH, "");
    let number = options.series_number.to_string();
    put(o, tags::SERIES_NUMBER, VR::IS, number);
    put_str(o, tags::INSTANCE_NUMBER, VR::IS, "1");
    let for_uid = &ids.frame_of_reference_uid;
    put_str(o, tags::FRAME_OF_REFERENCE_UID, VR::UI, for_uid);
    put_str(o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
}

/// The multi-frame dimensions: segment, then position.
fn put_dimension_organization(o: &mut InMemDicomObject, dim_org_uid: &str) {
    put_seq(
        o,
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(|i| {
            put_str(i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_org_uid)
        })],
    );
    put_str(o, tags::DIMENSION_ORGANIZATION_TYPE, VR::CS, "3D");
    let dim = |index: Tag, group: Tag, label: &str| {
        item(|i| {
            let pointer = |tag: Tag| PrimitiveValue::Tags(smallvec![tag]);
            put(i, tags::DIMENSION_INDEX_POINTER, VR::AT, pointer(index));
            put(i, tags::FUNCTIONAL_GROUP_POINTER, VR::AT, pointer(group));
            put_str(i, tags::DIMENSION_ORGANIZATION_UID, VR::UI, dim_org_uid);
            put_str(i, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label);
        })
    };
    put_seq(
        o,
        tags::DIMENSION_INDEX_SEQUENCE,
        vec![
            dim(
                tags::REFERENCED_SEGMENT_NUMBER,
                tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                "ReferencedSegmentNumber",
            ),
            dim(
                tags::IMAGE_POSITION_PATIENT,
                tags::PLANE_POSITION_SEQUENCE,
                "ImagePositionPatient",
            ),
        ],
    );
}

/// Image pixel (1-bit monochrome frames of `nx` x `ny`), segmentation type and content
/// attributes.
fn put_image_and_content(
    o: &mut InMemDicomObject,
    [nx, ny]: [usize; 2],
    options: &SegWriteOptions,
) {
    let us = |v: u16| PrimitiveValue::from(v);
    put(o, tags::SAMPLES_PER_PIXEL, VR::US, us(1));
    put_str(o, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    put(o, tags::ROWS, VR::US, us(ny as u16));
    put(o, tags::COLUMNS, VR::US, us(nx as u16));
    put(o, tags::BITS_ALLOCATED, VR::US, us(1));
    put(o, tags::BITS_STORED, VR::US, us(1));
    put(o, tags::HIGH_BIT, VR::US, us(0));
    put(o, tags::PIXEL_REPRESENTATION, VR::US, us(0));
    put_str(o, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
    put_str(o, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
    put_str(o, tags::CONTENT_LABEL, VR::CS, &options.content_label);
    let description = &options.content_description;
    put_str(o, tags::CONTENT_DESCRIPTION, VR::LO, description);
    let creator = &options.content_creator;
    put_str(o, tags::CONTENT_CREATOR_NAME, VR::PN, creator);
}

/// The SegmentSequence item of label value `v`, segment number `n + 1`.
fn segment_item(
    n: usize,
    v: u8,
    table: &LabelTable,
    options: &SegWriteOptions,
) -> InMemDicomObject {
    let label = table.get(v);
    let name = label
        .map(|l| l.name.clone())
        .unwrap_or_else(|| format!("label {v}"));
    let color = label.map(|l| l.color).unwrap_or([200, 200, 200]);
    let (category, kind, modifier) = segment_codes(v);
    item(|s| {
        let number = PrimitiveValue::from((n + 1) as u16);
        put(s, tags::SEGMENT_NUMBER, VR::US, number);
        put_str(s, tags::SEGMENT_LABEL, VR::LO, &name);
        let description = format!("pulmo label value {v}");
        put_str(s, tags::SEGMENT_DESCRIPTION, VR::ST, &description);
        let algorithm = options.algorithm;
        put_str(s, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, algorithm.code());
        if algorithm != SegAlgorithm::Manual {
            let name = &options.algorithm_name;
            put_str(s, tags::SEGMENT_ALGORITHM_NAME, VR::LO, name);
        }
        let category_tag = tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE;
        put_seq(s, category_tag, vec![category]);
        let mut kind = kind;
        if let Some(m) = modifier {
            let modifier_tag = tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE;
            put_seq(&mut kind, modifier_tag, vec![m]);
        }
        put_seq(s, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![kind]);
        let lab = srgb_to_dicom_lab(color);
        let lab = PrimitiveValue::U16(smallvec![lab[0], lab[1], lab[2]]);
        put(s, tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE, VR::US, lab);
    })
}

/// The shared functional groups: orientation and pixel measures of the grid `g`.
fn shared_functional_groups(g: &Geometry) -> InMemDicomObject {
    let row = g.direction.column(0).into_owned();
    let col = g.direction.column(1).into_owned();
    item(|s| {
        let orientation = ds_multi(&[row.x, row.y, row.z, col.x, col.y, col.z]);
        put_seq(
            s,
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(|i| {
                put(i, tags::IMAGE_ORIENTATION_PATIENT, VR::DS, orientation)
            })],
        );
        put_seq(
            s,
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(|i| {
                let pixel_spacing = ds_multi(&[g.spacing_mm.y, g.spacing_mm.x]);
                put(i, tags::PIXEL_SPACING, VR::DS, pixel_spacing);
                put(i, tags::SLICE_THICKNESS, VR::DS, fmt_ds(g.spacing_mm.z));
                let between = fmt_ds(g.spacing_mm.z);
                put(i, tags::SPACING_BETWEEN_SLICES, VR::DS, between);
            })],
        );
    })
}

/// One frame of the SEG: a segment on a slice.
#[derive(Debug, Clone, Copy)]
struct SegFrame {
    /// Segment number (1-based).
    segment: u16,
    /// Slice index in the CT.
    k: usize,
    /// The label value the segment holds.
    value: u8,
}

/// The frames: per segment, the slices holding it, in slice order.
fn seg_frames(values: &[u8], present: &[[bool; 256]]) -> Vec<SegFrame> {
    let mut frames = Vec::new();
    for (n, &v) in values.iter().enumerate() {
        for (k, p) in present.iter().enumerate() {
            if p[v as usize] {
                frames.push(SegFrame {
                    segment: (n + 1) as u16,
                    k,
                    value: v,
                });
            }
        }
    }
    frames
}

/// A frame's functional groups: its source image (when the source has one per slice),
/// dimension index values, position and segment.
fn per_frame_functional_groups(
    g: &Geometry,
    frame: &SegFrame,
    refs: &SourceRefs,
) -> InMemDicomObject {
    let SegFrame { segment, k, .. } = *frame;
    let pos = g.world_at_voxel(Vector3::new(0.0, 0.0, k as f64));
    item(|f| {
        if let Some(instances) = refs.instances {
            put_seq(
                f,
                tags::DERIVATION_IMAGE_SEQUENCE,
                vec![derivation_image(refs, &instances[k])],
            );
        }
        let index = PrimitiveValue::U32(smallvec![segment as u32, k as u32 + 1]);
        let content = item(|c| put(c, tags::DIMENSION_INDEX_VALUES, VR::UL, index));
        put_seq(f, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
        let position = ds_multi(&[pos.x, pos.y, pos.z]);
        let plane = item(|i| put(i, tags::IMAGE_POSITION_PATIENT, VR::DS, position));
        put_seq(f, tags::PLANE_POSITION_SEQUENCE, vec![plane]);
        let number = PrimitiveValue::from(segment);
        let segment = item(|i| put(i, tags::REFERENCED_SEGMENT_NUMBER, VR::US, number));
        put_seq(f, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![segment]);
    })
}

/// The DerivationImageSequence item of a frame derived from the CT slice `uid`.
fn derivation_image(refs: &SourceRefs, uid: &str) -> InMemDicomObject {
    let source_image = refs.image(uid, |s| {
        put_seq(
            s,
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            vec![code(
                "121322",
                "DCM",
                "Source image for image processing operation",
            )],
        );
    });
    item(|d| {
        put_seq(
            d,
            tags::DERIVATION_CODE_SEQUENCE,
            vec![code("113076", "DCM", "Segmentation")],
        );
        put_seq(d, tags::SOURCE_IMAGE_SEQUENCE, vec![source_image]);
    })
}

/// The ReferencedSeriesSequence item: the source series and its instances.
fn referenced_series(source: &SeriesMeta, refs: &SourceRefs) -> InMemDicomObject {
    item(|s| {
        if let Some(instances) = refs.instances {
            let images = instances.iter().map(|uid| refs.image(uid, |_| {}));
            put_seq(s, tags::REFERENCED_INSTANCE_SEQUENCE, images.collect());
        }
        put_str(s, tags::SERIES_INSTANCE_UID, VR::UI, &source.series_uid);
    })
}

/// Pixel data: 1 bit per pixel, frames packed back to back, LSB first, padded to an
/// even length.
fn pack_frames(labels: &LabelVolume, frames: &[SegFrame]) -> PrimitiveValue {
    let [nx, ny, _] = labels.geometry.dims;
    let plane = nx * ny;
    let total_bits = frames.len() * plane;
    let mut bytes = vec![0u8; total_bits.div_ceil(8).next_multiple_of(2)];
    for (f, frame) in frames.iter().enumerate() {
        let base = f * plane;
        let k = frame.k;
        for (p, &x) in labels.voxels[k * plane..(k + 1) * plane].iter().enumerate() {
            if x == frame.value {
                let bit = base + p;
                bytes[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    PrimitiveValue::from(bytes)
}

// ---------------------------------------------------------------------------------------
// reading

struct Reader<'a> {
    path: &'a Path,
}

impl Reader<'_> {
    fn malformed(&self, message: impl Into<String>) -> SegError {
        SegError::Malformed {
            path: self.path.to_path_buf(),
            message: message.into(),
        }
    }
    fn grid(&self, message: impl Into<String>) -> SegError {
        SegError::GridMismatch {
            path: self.path.to_path_buf(),
            message: message.into(),
        }
    }
    fn str_opt(&self, o: &InMemDicomObject, tag: Tag) -> Option<String> {
        o.get(tag).and_then(|e| e.to_str().ok()).map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
    }
    fn int(&self, o: &InMemDicomObject, tag: Tag, name: &str) -> Result<i64, SegError> {
        o.get(tag)
            .ok_or_else(|| self.malformed(format!("missing {name}")))?
            .to_int::<i64>()
            .map_err(|e| self.malformed(format!("{name}: {e}")))
    }
    fn floats(&self, o: &InMemDicomObject, tag: Tag, name: &str) -> Result<Vec<f64>, SegError> {
        o.get(tag)
            .ok_or_else(|| self.malformed(format!("missing {name}")))?
            .to_multi_float64()
            .map_err(|e| self.malformed(format!("{name}: {e}")))
    }
    fn first_item<'o>(&self, o: &'o InMemDicomObject, tag: Tag) -> Option<&'o InMemDicomObject> {
        o.get(tag).and_then(|e| e.items()).and_then(|i| i.first())
    }
    /// A functional group's first item: from the frame's groups, else the shared ones.
    fn group<'o>(
        &self,
        frame: &'o InMemDicomObject,
        shared: Option<&'o InMemDicomObject>,
        tag: Tag,
    ) -> Option<&'o InMemDicomObject> {
        self.first_item(frame, tag)
            .or_else(|| shared.and_then(|s| self.first_item(s, tag)))
    }
}

struct SegmentInfo {
    number: u16,
    name: String,
    description: Option<String>,
    color: Option<[u8; 3]>,
}

/// Reads a binary (or fractional) DICOM SEG onto the CT grid `ct`: every frame's
/// ImagePositionPatient must fall on one of the CT's slices (within a quarter of the slice
/// spacing: half-way between two slices is ambiguous), with
/// the CT's orientation, pixel spacing, rows and columns. When the CT's
/// FrameOfReferenceUID is known (`ct_frame_of_reference`), the SEG's must be the same:
/// a SEG drawn on another scan of the patient can line up with the CT's slices by
/// chance and still be in another place.
pub fn read_seg(
    path: &Path,
    ct: &Geometry,
    ct_frame_of_reference: Option<&str>,
) -> Result<SegImport, SegError> {
    let r = Reader { path };
    let file = r.open_seg()?;
    let mut warnings = Vec::new();
    let seg_frame_of_reference = r.str_opt(&file, tags::FRAME_OF_REFERENCE_UID);
    match (seg_frame_of_reference.as_deref(), ct_frame_of_reference) {
        (Some(seg_for), Some(ct_for)) if seg_for != ct_for => {
            return Err(r.grid(format!(
                "its FrameOfReferenceUID {seg_for} is not the CT's ({ct_for}): it belongs to another scan or patient position"
            )));
        }
        (None | Some(""), Some(_)) => warnings.push(format!(
            "{}: the SEG has no FrameOfReferenceUID; placed by its frame positions only",
            path.display()
        )),
        _ => {}
    }
    let ts = file
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let obj: &InMemDicomObject = &file;
    let format = r.frame_format(obj, &mut warnings)?;
    let [nx, ny, _] = ct.dims;
    if format.rows != ny || format.columns != nx {
        return Err(r.grid(format!(
            "frames are {} x {} but CT slices are {nx} x {ny}",
            format.columns, format.rows
        )));
    }
    let shared = r.first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = r.per_frame_groups(obj, format.n_frames)?;
    let segments = r.segments(obj)?;
    let value_of = r.label_values(&segments)?;
    let table = label_table(&segments, &value_of);
    let data = r.pixel_data(obj, &ts, &format, &mut warnings)?;
    let frames = r.frame_slices(per_frame, shared, ct, &value_of)?;
    let (voxels, overlaps) = paint_frames(ct, &format, &data, &frames);
    push_overlap_warnings(path, &table, overlaps, &mut warnings);
    let labels = LabelVolume::new(ct.clone(), voxels).map_err(|e| r.malformed(e.to_string()))?;
    Ok(SegImport {
        labels,
        table,
        warnings,
    })
}

/// The frames' size and count, and how their pixels are stored.
struct FrameFormat {
    rows: usize,
    columns: usize,
    n_frames: usize,
    /// `None` for BINARY (1 bit per pixel); for FRACTIONAL (8 bits), the
    /// MaximumFractionalValue that stands for 1.
    fractional: Option<f64>,
}

/// Where a frame goes: its segment, its index in the file, the CT slice and the label.
#[derive(Debug, Clone, Copy)]
struct FrameSlice {
    segment: i64,
    frame: usize,
    k: usize,
    value: u8,
}

impl Reader<'_> {
    /// Opens the file and checks it is a Segmentation.
    fn open_seg(&self) -> Result<DefaultDicomObject, SegError> {
        let file =
            super::scan::open_object(self.path, None).map_err(|message| SegError::NotDicom {
                path: self.path.to_path_buf(),
                message,
            })?;
        let sop_class = self.str_opt(&file, tags::SOP_CLASS_UID).unwrap_or_else(|| {
            file.meta()
                .media_storage_sop_class_uid()
                .trim_end_matches('\0')
                .to_string()
        });
        if sop_class != SEGMENTATION_STORAGE {
            return Err(SegError::NotSeg {
                path: self.path.to_path_buf(),
                sop_class,
            });
        }
        Ok(file)
    }

    /// Rows, columns, number of frames and segmentation type (FRACTIONAL is warned
    /// about: it is thresholded at 0.5).
    fn frame_format(
        &self,
        obj: &InMemDicomObject,
        warnings: &mut Vec<String>,
    ) -> Result<FrameFormat, SegError> {
        let rows = self.int(obj, tags::ROWS, "Rows")? as usize;
        let columns = self.int(obj, tags::COLUMNS, "Columns")? as usize;
        let n_frames = self.int(obj, tags::NUMBER_OF_FRAMES, "NumberOfFrames")?;
        if n_frames < 1 {
            return Err(self.malformed(format!("NumberOfFrames {n_frames}")));
        }
        let bits = self.int(obj, tags::BITS_ALLOCATED, "BitsAllocated")?;
        let seg_type = self
            .str_opt(obj, tags::SEGMENTATION_TYPE)
            .unwrap_or_else(|| "BINARY".into());
        let fractional = match (seg_type.as_str(), bits) {
            ("BINARY", 1) => None,
            ("FRACTIONAL", 8) => {
                let max = self
                    .int(
                        obj,
                        tags::MAXIMUM_FRACTIONAL_VALUE,
                        "MaximumFractionalValue",
                    )
                    .unwrap_or(255)
                    .max(1);
                warnings.push(format!(
                    "{}: FRACTIONAL segmentation thresholded at 0.5 (stored value >= {}/2 of {max})",
                    self.path.display(),
                    max
                ));
                Some(max as f64)
            }
            (t, b) => {
                return Err(SegError::Unsupported {
                    path: self.path.to_path_buf(),
                    message: format!("SegmentationType {t} with BitsAllocated {b}"),
                });
            }
        };
        Ok(FrameFormat {
            rows,
            columns,
            n_frames: n_frames as usize,
            fractional,
        })
    }

    /// The per-frame functional groups, one per frame.
    fn per_frame_groups<'o>(
        &self,
        obj: &'o InMemDicomObject,
        n_frames: usize,
    ) -> Result<&'o [InMemDicomObject], SegError> {
        let per_frame = obj
            .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .and_then(|e| e.items())
            .ok_or_else(|| self.malformed("missing PerFrameFunctionalGroupsSequence"))?;
        if per_frame.len() != n_frames {
            return Err(self.malformed(format!(
                "{} per-frame functional groups for {n_frames} frames",
                per_frame.len()
            )));
        }
        Ok(per_frame)
    }

    /// The SegmentSequence, by segment number.
    fn segments(&self, obj: &InMemDicomObject) -> Result<Vec<SegmentInfo>, SegError> {
        let mut segments: Vec<SegmentInfo> = obj
            .get(tags::SEGMENT_SEQUENCE)
            .and_then(|e| e.items())
            .ok_or_else(|| self.malformed("missing SegmentSequence"))?
            .iter()
            .map(|s| {
                let number = self.int(s, tags::SEGMENT_NUMBER, "SegmentNumber")?;
                let number = u16::try_from(number)
                    .map_err(|_| self.malformed(format!("SegmentNumber {number}")))?;
                let color = s
                    .get(tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE)
                    .and_then(|e| e.to_multi_int::<u16>().ok())
                    .filter(|v| v.len() == 3)
                    .map(|v| dicom_lab_to_srgb([v[0], v[1], v[2]]));
                Ok(SegmentInfo {
                    number,
                    name: self
                        .str_opt(s, tags::SEGMENT_LABEL)
                        .unwrap_or_else(|| format!("segment {number}")),
                    description: self.str_opt(s, tags::SEGMENT_DESCRIPTION),
                    color,
                })
            })
            .collect::<Result<_, SegError>>()?;
        segments.sort_by_key(|s| s.number);
        if let Some(w) = segments.windows(2).find(|w| w[0].number == w[1].number) {
            return Err(self.malformed(format!(
                "SegmentNumber {} appears more than once in the SegmentSequence (\"{}\" and \"{}\"): \
                 which frames belong to which segment is ambiguous",
                w[0].number, w[0].name, w[1].name
            )));
        }
        Ok(segments)
    }

    /// The label value of each segment number: pulmo's own value (from the
    /// SegmentDescription "pulmo label value N"), else the default label of that name,
    /// else the segment number when it is free and not one of pulmo's default labels,
    /// else the first free value after the defaults (then any free one).
    fn label_values(&self, segments: &[SegmentInfo]) -> Result<BTreeMap<u16, u8>, SegError> {
        let defaults = LabelTable::default();
        let mut used = [false; 256];
        let mut value_of = BTreeMap::new();
        let mut pending = Vec::new();
        for s in segments {
            let own = s
                .description
                .as_deref()
                .and_then(|d| d.strip_prefix("pulmo label value "))
                .and_then(|v| v.trim().parse::<u8>().ok())
                .filter(|&v| v != 0 && !used[v as usize]);
            let by_name = || {
                defaults
                    .labels
                    .iter()
                    .find(|l| l.name.eq_ignore_ascii_case(&s.name))
                    .map(|l| l.value)
                    .filter(|&v| !used[v as usize])
            };
            match own.or_else(by_name) {
                Some(v) => {
                    used[v as usize] = true;
                    value_of.insert(s.number, v);
                }
                None => pending.push(s.number),
            }
        }
        let first_custom = defaults.labels.iter().map(|l| l.value).max().unwrap_or(0) as usize + 1;
        for number in pending {
            let free = |v: usize| (1..=255).contains(&v) && !used[v];
            let v = if free(number as usize) && defaults.get(number as u8).is_none() {
                number as usize
            } else {
                (first_custom..=255)
                    .chain(1..first_custom)
                    .find(|&v| free(v))
                    .ok_or_else(|| SegError::Unsupported {
                        path: self.path.to_path_buf(),
                        message: "more than 255 segments".into(),
                    })?
            };
            let v = v as u8;
            used[v as usize] = true;
            value_of.insert(number, v);
        }
        Ok(value_of)
    }

    /// The uncompressed pixel data, checked to hold all the frames.
    fn pixel_data<'o>(
        &self,
        obj: &'o InMemDicomObject,
        ts: &str,
        format: &FrameFormat,
        warnings: &mut Vec<String>,
    ) -> Result<Cow<'o, [u8]>, SegError> {
        let pixel = obj
            .get(tags::PIXEL_DATA)
            .ok_or_else(|| self.malformed("missing PixelData"))?;
        if pixel.value().fragments().is_some() {
            return Err(SegError::Unsupported {
                path: self.path.to_path_buf(),
                message: format!(
                    "compressed pixel data (transfer syntax {ts} {}) is not supported",
                    super::transfer_syntax_name(ts)
                ),
            });
        }
        let data = pixel
            .to_bytes()
            .map_err(|e| self.malformed(format!("PixelData: {e}")))?;
        let FrameFormat {
            rows,
            columns,
            n_frames,
            fractional,
        } = *format;
        let plane = rows * columns;
        let needed = match fractional {
            None => (n_frames * plane).div_ceil(8),
            Some(_) => n_frames * plane,
        };
        if data.len() < needed {
            return Err(self.malformed(format!(
                "PixelData holds {} bytes, {n_frames} frames of {columns} x {rows} need {needed}",
                data.len()
            )));
        }
        if data.len() > needed.next_multiple_of(2) {
            warnings.push(format!(
                "{}: PixelData holds {} bytes but {n_frames} frames of {columns} x {rows} need \
                 {needed}: the frame count or size in the header is probably wrong",
                self.path.display(),
                data.len()
            ));
        }
        Ok(data)
    }

    /// Where each frame goes, in segment number order (then file order), so that the
    /// later segment wins on overlap.
    fn frame_slices(
        &self,
        per_frame: &[InMemDicomObject],
        shared: Option<&InMemDicomObject>,
        ct: &Geometry,
        value_of: &BTreeMap<u16, u8>,
    ) -> Result<Vec<FrameSlice>, SegError> {
        let mut frames = Vec::with_capacity(per_frame.len());
        for (f, frame) in per_frame.iter().enumerate() {
            let groups = FrameGroups {
                reader: self,
                f,
                frame,
                shared,
            };
            let (segment, value) = groups.segment(value_of)?;
            groups.check_orientation(ct)?;
            groups.check_pixel_spacing(ct)?;
            let k = groups.slice(ct)?;
            frames.push(FrameSlice {
                segment,
                frame: f,
                k,
                value,
            });
        }
        frames.sort_by_key(|s| (s.segment, s.frame));
        Ok(frames)
    }
}

/// The label table of the segments, by label value (colours from the SEG, else pulmo's
/// defaults, else grey).
fn label_table(segments: &[SegmentInfo], value_of: &BTreeMap<u16, u8>) -> LabelTable {
    let defaults = LabelTable::default();
    let mut table = LabelTable { labels: Vec::new() };
    for s in segments {
        let v = value_of[&s.number];
        table.labels.push(Label {
            value: v,
            name: s.name.clone(),
            color: s
                .color
                .or_else(|| defaults.get(v).map(|l| l.color))
                .unwrap_or([200, 200, 200]),
            visible: true,
            locked: false,
        });
    }
    table.labels.sort_by_key(|l| l.value);
    table
}

/// One frame's functional groups (its own, else the shared ones), for the checks
/// against the CT grid.
struct FrameGroups<'a> {
    reader: &'a Reader<'a>,
    /// 0-based frame index.
    f: usize,
    frame: &'a InMemDicomObject,
    shared: Option<&'a InMemDicomObject>,
}

impl FrameGroups<'_> {
    /// The group `tag`, or a malformed-SEG error naming it as `name`.
    fn group(&self, tag: Tag, name: &str) -> Result<&InMemDicomObject, SegError> {
        self.reader
            .group(self.frame, self.shared, tag)
            .ok_or_else(|| {
                self.reader
                    .malformed(format!("frame {}: no {name}", self.f + 1))
            })
    }

    /// The frame's segment number and its label value.
    fn segment(&self, value_of: &BTreeMap<u16, u8>) -> Result<(i64, u8), SegError> {
        let r = self.reader;
        let seg_item = self.group(
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            "SegmentIdentificationSequence",
        )?;
        let number = r.int(
            seg_item,
            tags::REFERENCED_SEGMENT_NUMBER,
            "ReferencedSegmentNumber",
        )?;
        let value = u16::try_from(number)
            .ok()
            .and_then(|n| value_of.get(&n))
            .copied()
            .ok_or_else(|| {
                r.malformed(format!("frame {}: unknown segment {number}", self.f + 1))
            })?;
        Ok((number, value))
    }

    /// ImageOrientationPatient must be the CT's.
    fn check_orientation(&self, ct: &Geometry) -> Result<(), SegError> {
        let (r, f) = (self.reader, self.f);
        let orient_item =
            self.group(tags::PLANE_ORIENTATION_SEQUENCE, "PlaneOrientationSequence")?;
        let iop = r.floats(
            orient_item,
            tags::IMAGE_ORIENTATION_PATIENT,
            "ImageOrientationPatient",
        )?;
        if iop.len() != 6 {
            return Err(r.malformed(format!("frame {}: ImageOrientationPatient {iop:?}", f + 1)));
        }
        let ct_row = ct.direction.column(0).into_owned();
        let ct_col = ct.direction.column(1).into_owned();
        let row = Vector3::new(iop[0], iop[1], iop[2]);
        let col = Vector3::new(iop[3], iop[4], iop[5]);
        if !((row - ct_row).norm() <= 1e-3 && (col - ct_col).norm() <= 1e-3) {
            return Err(r.grid(format!(
                "frame {}: orientation {iop:?} differs from the CT's [{:.6}, {:.6}, {:.6}, {:.6}, {:.6}, {:.6}]",
                f + 1,
                ct_row.x, ct_row.y, ct_row.z, ct_col.x, ct_col.y, ct_col.z
            )));
        }
        Ok(())
    }

    /// PixelSpacing must be the CT's (to 0.1 %).
    fn check_pixel_spacing(&self, ct: &Geometry) -> Result<(), SegError> {
        let r = self.reader;
        let measures = self.group(tags::PIXEL_MEASURES_SEQUENCE, "PixelMeasuresSequence")?;
        let ps = r.floats(measures, tags::PIXEL_SPACING, "PixelSpacing")?;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1e-3);
        if ps.len() != 2 || !close(ps[0], ct.spacing_mm.y) || !close(ps[1], ct.spacing_mm.x) {
            return Err(r.grid(format!(
                "frame {}: PixelSpacing {ps:?} differs from the CT's [{}, {}]",
                self.f + 1,
                ct.spacing_mm.y,
                ct.spacing_mm.x
            )));
        }
        Ok(())
    }

    /// The CT slice at the frame's ImagePositionPatient (within a quarter of a slice along the
    /// normal and a tenth of a pixel in plane).
    fn slice(&self, ct: &Geometry) -> Result<usize, SegError> {
        let (r, f) = (self.reader, self.f);
        let pos_item = self.group(tags::PLANE_POSITION_SEQUENCE, "PlanePositionSequence")?;
        let ipp = r.floats(
            pos_item,
            tags::IMAGE_POSITION_PATIENT,
            "ImagePositionPatient",
        )?;
        if ipp.len() != 3 || !ipp.iter().all(|x| x.is_finite()) {
            return Err(r.malformed(format!("frame {}: ImagePositionPatient {ipp:?}", f + 1)));
        }
        let nz = ct.dims[2];
        let v = ct.voxel_at_world(Point3::new(ipp[0], ipp[1], ipp[2]));
        let k = v.z.round();
        // Written so that NaN fails every test.
        let on_a_slice = v.x.abs() <= 0.1
            && v.y.abs() <= 0.1
            && (v.z - k).abs() <= 0.25
            && k >= 0.0
            && k < nz as f64;
        if !on_a_slice {
            return Err(r.grid(format!(
                "frame {} at ImagePositionPatient {ipp:?} matches no CT slice (voxel {:.3}, {:.3}, {:.3})",
                f + 1,
                v.x,
                v.y,
                v.z
            )));
        }
        Ok(k as usize)
    }
}

/// The label map the frames paint (in order: later frames win), and how many voxels
/// each (earlier, later) pair of label values overlapped on.
fn paint_frames(
    ct: &Geometry,
    format: &FrameFormat,
    data: &[u8],
    frames: &[FrameSlice],
) -> (Vec<u8>, BTreeMap<(u8, u8), usize>) {
    let plane = format.rows * format.columns;
    let mut voxels = vec![0u8; ct.voxel_count()];
    let mut overlaps: BTreeMap<(u8, u8), usize> = Default::default();
    for &FrameSlice {
        frame: f, k, value, ..
    } in frames
    {
        let out = &mut voxels[k * plane..(k + 1) * plane];
        for (p, o) in out.iter_mut().enumerate() {
            let on = match format.fractional {
                None => {
                    let bit = f * plane + p;
                    data[bit / 8] >> (bit % 8) & 1 == 1
                }
                Some(max) => data[f * plane + p] as f64 / max >= 0.5,
            };
            if on {
                if *o != 0 && *o != value {
                    *overlaps.entry((*o, value)).or_default() += 1;
                }
                *o = value;
            }
        }
    }
    (voxels, overlaps)
}

/// One warning per pair of overlapping segments.
fn push_overlap_warnings(
    path: &Path,
    table: &LabelTable,
    overlaps: BTreeMap<(u8, u8), usize>,
    warnings: &mut Vec<String>,
) {
    let name = |v: u8| {
        table
            .get(v)
            .map(|l| format!("\"{}\" ({v})", l.name))
            .unwrap_or_else(|| v.to_string())
    };
    for ((a, b), n) in overlaps {
        warnings.push(format!(
            "{}: segments {} and {} overlap on {n} voxel(s); the later segment {} was kept",
            path.display(),
            name(a),
            name(b),
            name(b)
        ));
    }
}
