//! Finding DICOM files and reading their headers (everything before Pixel Data).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use nalgebra::Vector3;
use rayon::prelude::*;

use super::{DicomError, FileProblem, LoadOptions, LoadStage};

/// What pulmo needs from one DICOM file's header.
#[derive(Debug, Clone)]
pub struct FileHeader {
    pub path: PathBuf,
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_uid: Option<String>,
    pub study_uid: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_date: Option<String>,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    pub series_number: Option<i64>,
    pub manufacturer: Option<String>,
    pub convolution_kernel: Option<String>,
    pub instance_number: Option<i64>,
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub pixel_signed: bool,
    pub photometric: Option<String>,
    pub number_of_frames: u32,
    pub has_pixel_data: bool,
    pub slice_thickness_mm: Option<f64>,
    pub spacing_between_slices_mm: Option<f64>,
    pub gantry_tilt_deg: Option<f64>,
    /// Window centre/width pairs (HU) with their explanations.
    pub windows: Vec<(f64, f64, Option<String>)>,
    /// One entry per frame (a single entry for classic single-frame images).
    pub frames: Vec<FrameGeometry>,
}

/// Geometry and rescale of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameGeometry {
    pub position_mm: Option<Vector3<f64>>,
    /// Row (x) and column (y) direction cosines.
    pub orientation: Option<[Vector3<f64>; 2]>,
    /// (row spacing, column spacing) as DICOM orders PixelSpacing: between rows first.
    pub pixel_spacing_mm: Option<[f64; 2]>,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
}

fn trimmed(s: &str) -> Option<String> {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

pub(crate) fn get_str(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    trimmed(&e.to_str().ok()?)
}

pub(crate) fn get_f64s(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let e = obj.element_opt(tag).ok()??;
    let v = e.to_multi_float64().ok()?;
    (!v.is_empty() && v.iter().all(|x| x.is_finite())).then_some(v)
}

pub(crate) fn get_f64(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    get_f64s(obj, tag).map(|v| v[0])
}

pub(crate) fn get_int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    let e = obj.element_opt(tag).ok()??;
    e.to_int::<i64>().ok().or_else(|| {
        let s = e.to_str().ok()?;
        let t = s.trim();
        t.parse::<f64>().ok().map(|f| f as i64)
    })
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(tag).ok()??.items()?.first()
}

fn vec3(v: &[f64]) -> Vector3<f64> {
    Vector3::new(v[0], v[1], v[2])
}

fn orientation_from(v: Option<Vec<f64>>) -> Option<[Vector3<f64>; 2]> {
    let v = v?;
    if v.len() < 6 {
        return None;
    }
    let row = vec3(&v[0..3]);
    let col = vec3(&v[3..6]);
    if row.norm() < 1e-6 || col.norm() < 1e-6 || row.cross(&col).norm() < 1e-6 {
        return None;
    }
    Some([row.normalize(), col.normalize()])
}

fn spacing_from(v: Option<Vec<f64>>) -> Option<[f64; 2]> {
    let v = v?;
    (v.len() >= 2 && v[0] > 0.0 && v[1] > 0.0).then(|| [v[0], v[1]])
}

/// Frame geometry from a data set or functional-group item, falling back to `base`.
fn frame_geometry(items: &[Option<&InMemDicomObject>], base: &FrameGeometry) -> FrameGeometry {
    let mut g = base.clone();
    for item in items.iter().flatten() {
        if let Some(pos) = first_item(item, tags::PLANE_POSITION_SEQUENCE)
            .and_then(|p| get_f64s(p, tags::IMAGE_POSITION_PATIENT))
            .filter(|v| v.len() >= 3)
        {
            g.position_mm = Some(vec3(&pos));
        }
        if let Some(o) = first_item(item, tags::PLANE_ORIENTATION_SEQUENCE)
            .and_then(|p| orientation_from(get_f64s(p, tags::IMAGE_ORIENTATION_PATIENT)))
        {
            g.orientation = Some(o);
        }
        if let Some(s) = first_item(item, tags::PIXEL_MEASURES_SEQUENCE)
            .and_then(|p| spacing_from(get_f64s(p, tags::PIXEL_SPACING)))
        {
            g.pixel_spacing_mm = Some(s);
        }
        if let Some(t) = first_item(item, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
            if let Some(s) = get_f64(t, tags::RESCALE_SLOPE) {
                g.rescale_slope = s;
            }
            if let Some(i) = get_f64(t, tags::RESCALE_INTERCEPT) {
                g.rescale_intercept = i;
            }
        }
    }
    g
}

impl FileHeader {
    pub(crate) fn from_object(path: &Path, obj: &DefaultDicomObject) -> Result<FileHeader, String> {
        let meta = obj.meta();
        let ds: &InMemDicomObject = obj;
        let rows = get_int(ds, tags::ROWS).unwrap_or(0);
        let columns = get_int(ds, tags::COLUMNS).unwrap_or(0);
        let has_pixel_data = ds.element_opt(tags::PIXEL_DATA).ok().flatten().is_some();
        let number_of_frames = get_int(ds, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
        let base = FrameGeometry {
            position_mm: get_f64s(ds, tags::IMAGE_POSITION_PATIENT)
                .filter(|v| v.len() >= 3)
                .map(|v| vec3(&v)),
            orientation: orientation_from(get_f64s(ds, tags::IMAGE_ORIENTATION_PATIENT)),
            pixel_spacing_mm: spacing_from(get_f64s(ds, tags::PIXEL_SPACING)),
            rescale_slope: get_f64(ds, tags::RESCALE_SLOPE).unwrap_or(1.0),
            rescale_intercept: get_f64(ds, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
        };
        let shared = first_item(ds, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        let per_frame = ds
            .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .ok()
            .flatten()
            .and_then(|e| e.items());
        let frames = if number_of_frames > 1 || shared.is_some() || per_frame.is_some() {
            (0..number_of_frames as usize)
                .map(|f| {
                    let pf = per_frame.and_then(|items| items.get(f));
                    frame_geometry(&[shared, pf], &base)
                })
                .collect()
        } else {
            vec![base]
        };
        let centers = get_f64s(ds, tags::WINDOW_CENTER).unwrap_or_default();
        let widths = get_f64s(ds, tags::WINDOW_WIDTH).unwrap_or_default();
        let explanations: Vec<String> = get_str(ds, tags::WINDOW_CENTER_WIDTH_EXPLANATION)
            .map(|s| s.split('\\').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default();
        let windows = centers
            .iter()
            .zip(&widths)
            .enumerate()
            .filter(|(_, (_, w))| **w > 0.0)
            .map(|(i, (c, w))| {
                (
                    *c,
                    *w,
                    explanations.get(i).cloned().filter(|s| !s.is_empty()),
                )
            })
            .collect();
        Ok(FileHeader {
            path: path.to_path_buf(),
            transfer_syntax: meta
                .transfer_syntax()
                .trim_end_matches('\0')
                .trim()
                .to_string(),
            sop_class_uid: meta
                .media_storage_sop_class_uid()
                .trim_end_matches('\0')
                .to_string(),
            sop_instance_uid: meta
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string(),
            series_uid: get_str(ds, tags::SERIES_INSTANCE_UID),
            study_uid: get_str(ds, tags::STUDY_INSTANCE_UID),
            frame_of_reference_uid: get_str(ds, tags::FRAME_OF_REFERENCE_UID),
            patient_id: get_str(ds, tags::PATIENT_ID),
            patient_name: get_str(ds, tags::PATIENT_NAME),
            study_date: get_str(ds, tags::STUDY_DATE),
            modality: get_str(ds, tags::MODALITY),
            series_description: get_str(ds, tags::SERIES_DESCRIPTION),
            series_number: get_int(ds, tags::SERIES_NUMBER),
            manufacturer: get_str(ds, tags::MANUFACTURER),
            convolution_kernel: get_str(ds, tags::CONVOLUTION_KERNEL),
            instance_number: get_int(ds, tags::INSTANCE_NUMBER),
            rows: u32::try_from(rows).unwrap_or(0),
            columns: u32::try_from(columns).unwrap_or(0),
            samples_per_pixel: get_int(ds, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
            bits_allocated: get_int(ds, tags::BITS_ALLOCATED).unwrap_or(16) as u16,
            bits_stored: get_int(ds, tags::BITS_STORED)
                .or_else(|| get_int(ds, tags::BITS_ALLOCATED))
                .unwrap_or(16) as u16,
            pixel_signed: get_int(ds, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1,
            photometric: get_str(ds, tags::PHOTOMETRIC_INTERPRETATION),
            number_of_frames: number_of_frames as u32,
            has_pixel_data,
            slice_thickness_mm: get_f64(ds, tags::SLICE_THICKNESS).filter(|v| *v > 0.0),
            spacing_between_slices_mm: get_f64(ds, tags::SPACING_BETWEEN_SLICES)
                .filter(|v| *v > 0.0),
            gantry_tilt_deg: get_f64(ds, tags::GANTRY_DETECTOR_TILT),
            windows,
            frames,
        })
    }

    /// Whether this file holds an image pulmo can stack (has pixels, rows, columns).
    pub fn is_image(&self) -> bool {
        self.has_pixel_data && self.rows > 0 && self.columns > 0
    }
}

/// Whether the file starts with the 128-byte preamble and "DICM".
fn has_dicm_marker(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = [0u8; 132];
    let mut read = 0;
    while read < buf.len() {
        let n = f.read(&mut buf[read..])?;
        if n == 0 {
            return Ok(false);
        }
        read += n;
    }
    Ok(&buf[128..132] == b"DICM")
}

/// Reads one file's header. `Ok(None)`: not a DICOM file (no DICM marker).
pub fn read_header(path: &Path) -> Result<Option<FileHeader>, String> {
    match has_dicm_marker(path) {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(e) => return Err(format!("cannot read: {e}")),
    }
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| format!("unreadable DICOM header: {e}"))?;
    // read_until excludes Pixel Data itself: look whether it follows.
    let mut header = FileHeader::from_object(path, &obj)?;
    header.has_pixel_data = pixel_data_follows(path, &obj);
    Ok(Some(header))
}

/// After a header-only read, tells whether the file goes on to a Pixel Data element: an
/// image has one; we cannot see it without reading it, so treat files with Rows/Columns
/// and bits as images and let decoding report a missing element.
fn pixel_data_follows(_path: &Path, obj: &DefaultDicomObject) -> bool {
    obj.element_opt(tags::ROWS).ok().flatten().is_some()
        && obj.element_opt(tags::COLUMNS).ok().flatten().is_some()
}

/// Files below `root` (recursively, sorted), or the files a DICOMDIR references.
pub fn list_files(root: &Path) -> Result<(Vec<PathBuf>, Vec<FileProblem>), DicomError> {
    let meta = std::fs::metadata(root).map_err(|e| DicomError::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    let mut problems = Vec::new();
    if meta.is_file() {
        let is_dicomdir = root
            .file_name()
            .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"));
        if is_dicomdir {
            return dicomdir_files(root).map(|files| (files, problems));
        }
        return Ok((vec![root.to_path_buf()], problems));
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(FileProblem {
                    path: dir.clone(),
                    problem: format!("cannot list folder: {e}"),
                });
                continue;
            }
        };
        for entry in entries.flatten() {
            let p = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => {
                    if p.file_name()
                        .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
                    {
                        continue; // the files it references are in the tree anyway
                    }
                    out.push(p)
                }
                Err(_) => {}
            }
        }
    }
    out.sort();
    Ok((out, problems))
}

/// The image files a DICOMDIR references (ReferencedFileID, relative to its folder).
fn dicomdir_files(path: &Path) -> Result<Vec<PathBuf>, DicomError> {
    let obj = dicom_object::open_file(path).map_err(|e| DicomError::Parse {
        path: path.to_path_buf(),
        message: format!("unreadable DICOMDIR: {e}"),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let records = obj
        .element_opt(tags::DIRECTORY_RECORD_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .ok_or_else(|| DicomError::Parse {
            path: path.to_path_buf(),
            message: "DICOMDIR has no Directory Record Sequence".into(),
        })?;
    let mut files: Vec<PathBuf> = records
        .iter()
        .filter_map(|r| {
            let parts = r
                .element_opt(tags::REFERENCED_FILE_ID)
                .ok()??
                .to_multi_str()
                .ok()?;
            let mut p = base.to_path_buf();
            for part in parts.iter() {
                p.push(part.trim());
            }
            Some(p)
        })
        .collect();
    files.sort();
    files.dedup();
    Ok(files)
}

/// Reads all headers in parallel, reporting progress; files that are not DICOM or are
/// unreadable become problems, not errors.
pub fn read_headers(
    files: &[PathBuf],
    options: &LoadOptions,
) -> Result<(Vec<Arc<FileHeader>>, Vec<FileProblem>), DicomError> {
    let done = AtomicUsize::new(0);
    let total = files.len();
    let results: Vec<Result<Option<FileHeader>, FileProblem>> = files
        .par_iter()
        .map(|path| {
            if options.is_cancelled() {
                return Err(FileProblem {
                    path: path.clone(),
                    problem: "cancelled".into(),
                });
            }
            let r = read_header(path).map_err(|problem| FileProblem {
                path: path.clone(),
                problem,
            });
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            options.report(LoadStage::Scanning, n, total);
            r
        })
        .collect();
    if options.is_cancelled() {
        return Err(DicomError::Cancelled);
    }
    let mut headers = Vec::new();
    let mut problems = Vec::new();
    for (path, r) in files.iter().zip(results) {
        match r {
            Ok(Some(h)) => headers.push(Arc::new(h)),
            Ok(None) => problems.push(FileProblem {
                path: path.clone(),
                problem: "not a DICOM file (no DICM marker at byte 128); skipped".into(),
            }),
            Err(p) => problems.push(p),
        }
    }
    Ok((headers, problems))
}
