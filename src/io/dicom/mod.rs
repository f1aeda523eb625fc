//! DICOM series loading with dicom-object / dicom-pixeldata.
//!
//! 1. [`scan`] lists the files under a path (a file, a folder searched recursively, or a
//!    DICOMDIR), reads every header in parallel and groups images by SeriesInstanceUID.
//! 2. [`load_series`] orders one series' slices by the projection of
//!    ImagePositionPatient on the slice normal (never by file name or InstanceNumber),
//!    derives the slice spacing from the positions, detects duplicates, missing slices,
//!    non-uniform spacing, gantry tilt and mixed geometry, and decodes the slices in
//!    parallel straight into the volume, applying each slice's rescale into i16 HU.
//!    Irregular stacks (non-uniform spacing, missing slices, tilt) are resampled onto a
//!    regular orthogonal grid, and the report says so.
//!
//! Nothing here panics on malformed input: per-file problems are collected in the
//! [`LoadReport`] and what is safe is loaded.

mod decode;
mod frame_header;
mod scan;
pub mod seg;
mod stack;
pub mod write;

pub use scan::{FileHeader, FrameGeometry, read_header};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::io::guard;
use crate::volume::CtVolume;

/// Errors that stop a load. Per-file problems that do not stop it go to [`LoadReport`].
#[derive(Debug, thiserror::Error)]
pub enum DicomError {
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: no DICOM images found{}", path.display(), summarize_problems(problems))]
    NoImages {
        path: PathBuf,
        problems: Vec<FileProblem>,
    },
    #[error("{}: holds {} series; choose one with --series UID:\n{}", path.display(), series.len(), list_series(series))]
    MultipleSeries {
        path: PathBuf,
        series: Vec<SeriesSummary>,
    },
    #[error("{}: no series with SeriesInstanceUID {uid}", path.display())]
    UnknownSeries { path: PathBuf, uid: String },
    #[error("{}: transfer syntax {uid} ({name}) is not supported for pixel data", path.display())]
    UnsupportedTransferSyntax {
        path: PathBuf,
        uid: String,
        name: String,
    },
    #[error("{}: cannot decode pixel data: {message}", path.display())]
    Decode { path: PathBuf, message: String },
    #[error("{}: {message} (series {series})", path.display())]
    Geometry {
        /// A file of the series (the one concerned, else the first).
        path: PathBuf,
        series: String,
        message: String,
    },
    #[error("loading was cancelled")]
    Cancelled,
}

fn summarize_problems(problems: &[FileProblem]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = problems
        .iter()
        .take(5)
        .map(|p| format!("\n  {p}"))
        .collect();
    let more = problems.len().saturating_sub(5);
    format!(
        " ({} file(s) skipped){}{}",
        problems.len(),
        shown.join(""),
        if more > 0 {
            format!("\n  ... and {more} more")
        } else {
            String::new()
        }
    )
}

fn list_series(series: &[SeriesSummary]) -> String {
    series
        .iter()
        .map(|s| format!("  {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A file that was skipped or could not be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FileProblem {
    pub path: PathBuf,
    pub problem: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

/// The kinds of things a load reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    NonUniformSpacing,
    MissingSlices,
    GantryTilt,
    DuplicatePosition,
    MixedGeometry,
    NotCt,
    MissingModality,
    MissingGeometry,
    MultiFrame,
    ValuesClamped,
    SkippedFiles,
    InconsistentTags,
}

/// Something the user should know about a loaded series, naming the files concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadWarning {
    pub kind: WarningKind,
    pub message: String,
    pub files: Vec<PathBuf>,
}

impl std::fmt::Display for LoadWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.files.is_empty() {
            let names: Vec<String> = self
                .files
                .iter()
                .take(4)
                .map(|p| p.display().to_string())
                .collect();
            write!(f, " [{}", names.join(", "))?;
            if self.files.len() > 4 {
                write!(f, ", and {} more", self.files.len() - 4)?;
            }
            write!(f, "]")?;
        }
        Ok(())
    }
}

/// Everything a load noticed.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub warnings: Vec<LoadWarning>,
    /// Files that were not used (not DICOM, unreadable, undecodable, excluded).
    pub skipped_files: Vec<FileProblem>,
}

impl LoadReport {
    pub fn has(&self, kind: WarningKind) -> bool {
        self.warnings.iter().any(|w| w.kind == kind)
    }
    pub(crate) fn warn(
        &mut self,
        kind: WarningKind,
        message: impl Into<String>,
        files: Vec<PathBuf>,
    ) {
        self.warnings.push(LoadWarning {
            kind,
            message: message.into(),
            files,
        });
    }
}

/// A stored window (VOI) preset (the one type for window presets, in `volume`).
pub use crate::volume::WindowPreset;

/// The DICOM attributes kept with a loaded series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesMeta {
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: String,
    pub frame_of_reference_uid: Option<String>,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    pub series_number: Option<i64>,
    pub study_date: Option<String>,
    pub manufacturer: Option<String>,
    pub convolution_kernel: Option<String>,
    pub windows: Vec<WindowPreset>,
    /// Transfer syntax UIDs of the files used, with their names.
    pub transfer_syntaxes: Vec<(String, String)>,
    /// The SOP Instance UIDs of the slices in volume order (k = 0 first), for
    /// references from derived objects (DICOM SEG).
    pub sop_instance_uids: Vec<String>,
    pub sop_class_uid: Option<String>,
}

/// A series found by [`scan`].
#[derive(Debug, Clone)]
pub struct SeriesSummary {
    pub uid: String,
    pub modality: Option<String>,
    pub description: Option<String>,
    pub number: Option<i64>,
    pub files: usize,
    /// Frames over all files (the slice count for classic series).
    pub slices: usize,
    pub rows: u32,
    pub columns: u32,
}

impl std::fmt::Display for SeriesSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {}x{}x{} ({} file(s)){} uid {}",
            self.modality.as_deref().unwrap_or("??"),
            self.number.map(|n| format!("#{n}")).unwrap_or_default(),
            self.columns,
            self.rows,
            self.slices,
            self.files,
            self.description
                .as_deref()
                .map(|d| format!(" \"{d}\""))
                .unwrap_or_default(),
            self.uid
        )
    }
}

/// The result of [`scan`]: headers grouped by series.
#[derive(Debug, Clone)]
pub struct ScanResult {
    pub root: PathBuf,
    /// Series in order of series number, then UID.
    pub series: Vec<(SeriesSummary, Vec<Arc<FileHeader>>)>,
    pub skipped_files: Vec<FileProblem>,
}

impl ScanResult {
    pub fn summaries(&self) -> Vec<SeriesSummary> {
        self.series.iter().map(|(s, _)| s.clone()).collect()
    }
}

/// Where a load stands, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStage {
    Scanning,
    Decoding,
    Resampling,
}

/// Progress callback and cancellation for [`scan`] and [`load_series`].
#[derive(Default, Clone, Copy)]
pub struct LoadOptions<'a> {
    pub progress: Option<&'a (dyn Fn(LoadStage, usize, usize) + Sync)>,
    pub cancel: Option<&'a AtomicBool>,
}

impl LoadOptions<'_> {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }
    pub(crate) fn report(&self, stage: LoadStage, done: usize, total: usize) {
        if let Some(p) = self.progress {
            p(stage, done, total);
        }
    }
}

/// A loaded CT series.
#[derive(Debug, Clone)]
pub struct DicomVolume {
    pub volume: CtVolume,
    pub meta: SeriesMeta,
    pub report: LoadReport,
}

/// Series key for images without a SeriesInstanceUID.
const NO_SERIES_UID: &str = "(no SeriesInstanceUID)";

/// Finds the DICOM images under `path` and groups them by series.
pub fn scan(path: &Path, options: &LoadOptions) -> Result<ScanResult, DicomError> {
    let (files, mut skipped) = scan::list_files(path)?;
    let (headers, problems) = scan::read_headers(&files, options)?;
    skipped.extend(problems);
    let mut groups: std::collections::BTreeMap<String, Vec<Arc<FileHeader>>> = Default::default();
    for h in headers {
        if !h.is_image() {
            skipped.push(FileProblem {
                path: h.path.clone(),
                problem: "DICOM file without an image (no Rows/Columns); skipped".into(),
            });
            continue;
        }
        let key = h
            .series_uid
            .clone()
            .unwrap_or_else(|| NO_SERIES_UID.to_string());
        groups.entry(key).or_default().push(h);
    }
    if groups.is_empty() {
        return Err(DicomError::NoImages {
            path: path.to_path_buf(),
            problems: skipped,
        });
    }
    let mut series: Vec<(SeriesSummary, Vec<Arc<FileHeader>>)> = groups
        .into_iter()
        .map(|(uid, files)| {
            let first = &files[0];
            // Most common dims in the series.
            let mut dims: Vec<(u32, u32)> = files.iter().map(|f| (f.columns, f.rows)).collect();
            dims.sort_unstable();
            let (columns, rows) = most_common(&dims);
            let summary = SeriesSummary {
                uid,
                modality: first.modality.clone(),
                description: first.series_description.clone(),
                number: first.series_number,
                files: files.len(),
                slices: files.iter().map(|f| f.number_of_frames as usize).sum(),
                rows,
                columns,
            };
            (summary, files)
        })
        .collect();
    series.sort_by(|a, b| (a.0.number, &a.0.uid).cmp(&(b.0.number, &b.0.uid)));
    Ok(ScanResult {
        root: path.to_path_buf(),
        series,
        skipped_files: skipped,
    })
}

fn most_common<T: Copy + PartialEq>(sorted: &[T]) -> T {
    let mut best = (sorted[0], 0usize);
    let mut run = (sorted[0], 0usize);
    for &v in sorted {
        if v == run.0 {
            run.1 += 1;
        } else {
            run = (v, 1);
        }
        if run.1 > best.1 {
            best = run;
        }
    }
    best.0
}

/// Loads one series of a scan; `uid` may be omitted when the scan found exactly one.
pub fn load_series(
    scan: &ScanResult,
    uid: Option<&str>,
    options: &LoadOptions,
) -> Result<DicomVolume, DicomError> {
    let (summary, files) = match uid {
        Some(uid) => scan
            .series
            .iter()
            .find(|(s, _)| s.uid == uid)
            .ok_or_else(|| DicomError::UnknownSeries {
                path: scan.root.clone(),
                uid: uid.to_string(),
            })?,
        None if scan.series.len() == 1 => &scan.series[0],
        None => {
            return Err(DicomError::MultipleSeries {
                path: scan.root.clone(),
                series: scan.summaries(),
            });
        }
    };
    let mut result = stack::load_stack(&summary.uid, files, options)?;
    if !scan.skipped_files.is_empty() {
        let n = scan.skipped_files.len();
        result.report.warn(
            WarningKind::SkippedFiles,
            format!(
                "{n} file(s) under {} were skipped (not DICOM images or unreadable)",
                scan.root.display()
            ),
            scan.skipped_files.iter().map(|p| p.path.clone()).collect(),
        );
        let mut skipped = scan.skipped_files.clone();
        skipped.append(&mut result.report.skipped_files);
        result.report.skipped_files = skipped;
    }
    Ok(result)
}

/// Scans `path` and loads its only series (or `series_uid`).
pub fn load(
    path: &Path,
    series_uid: Option<&str>,
    options: &LoadOptions,
) -> Result<DicomVolume, DicomError> {
    let scan = scan(path, options)?;
    load_series(&scan, series_uid, options)
}

/// The registry's name of a transfer syntax UID, or "unknown".
pub fn transfer_syntax_name(uid: &str) -> String {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Decodes every frame of one file to HU (rows * columns values per frame, frame after
/// frame) with each frame's rescale, without stacking: for tools and codec checks.
pub fn decode_file_hu(path: &Path) -> Result<(FileHeader, Vec<i16>), DicomError> {
    let header = read_header(path)
        .map_err(|message| DicomError::Parse {
            path: path.to_path_buf(),
            message,
        })?
        .ok_or_else(|| DicomError::Parse {
            path: path.to_path_buf(),
            message: "not a DICOM file (no DICM marker at byte 128)".into(),
        })?;
    if !header.is_image() {
        return Err(DicomError::Decode {
            path: path.to_path_buf(),
            message: format!(
                "no image to decode (Rows {}, Columns {}{})",
                header.rows,
                header.columns,
                if header.has_pixel_data {
                    ""
                } else {
                    ", no Pixel Data"
                }
            ),
        });
    }
    let plane = header.rows as usize * header.columns as usize;
    let mut out = guard::try_filled_vec(
        plane.saturating_mul(header.number_of_frames as usize),
        0i16,
        || {
            format!(
                "{} frame(s) of {} x {} pixels",
                header.number_of_frames, header.columns, header.rows
            )
        },
    )
    .map_err(|e| DicomError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let image = decode::OpenImage::open(&header)?;
    for (f, chunk) in out.chunks_mut(plane).enumerate() {
        let g = &header.frames[f.min(header.frames.len() - 1)];
        image.frame_to_hu(f as u32, g.rescale_slope, g.rescale_intercept, chunk)?;
    }
    drop(image);
    Ok((header, out))
}
