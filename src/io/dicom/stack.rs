//! Stacking one series' slices into a volume.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nalgebra::{Matrix3, Vector3};
use rayon::prelude::*;

use super::decode::{OpenImage, fast_native_to_hu};
use super::{
    DicomError, DicomVolume, FileHeader, FileProblem, FrameGeometry, LoadOptions, LoadReport,
    LoadStage, SeriesMeta, WarningKind, WindowPreset, transfer_syntax_name,
};
use crate::io::guard;
use crate::volume::{Geometry, Volume};

/// HU given to voxels that no slice covers after resampling (air).
pub const PADDING_HU: i16 = -1024;
/// Angle (degrees) between the stacking direction and the slice normal above which a
/// series is treated as gantry-tilted.
const TILT_THRESHOLD_DEG: f64 = 0.1;
/// Two slices closer than this along the normal are at the same position.
const SAME_POSITION_MM: f64 = 1e-3;

#[derive(Debug, Clone)]
struct SliceRef {
    header: Arc<FileHeader>,
    frame: u32,
    geom: FrameGeometry,
    /// Position along the slice normal (mm).
    depth_mm: f64,
}

impl SliceRef {
    fn path(&self) -> PathBuf {
        self.header.path.clone()
    }
}

fn paths(slices: &[&SliceRef]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = slices.iter().map(|s| s.path()).collect();
    v.dedup();
    v
}

fn close(a: &[Vector3<f64>; 2], b: &[Vector3<f64>; 2]) -> bool {
    (a[0] - b[0]).norm() < 1e-4 && (a[1] - b[1]).norm() < 1e-4
}

/// Reports slices left out of the stack: one warning naming their files, and each file
/// among the skipped ones with `problem`.
fn report_excluded(
    report: &mut LoadReport,
    kind: WarningKind,
    message: String,
    excluded: &[&SliceRef],
    problem: &str,
) {
    report.warn(kind, message, paths(excluded));
    for s in excluded {
        report.skipped_files.push(FileProblem {
            path: s.path(),
            problem: problem.to_string(),
        });
    }
}

/// Keeps the largest group of slices sharing `key`, reporting the rest.
fn keep_majority<K: PartialEq + Clone>(
    slices: Vec<SliceRef>,
    key: impl Fn(&SliceRef) -> K,
    same: impl Fn(&K, &K) -> bool,
    report: &mut LoadReport,
    what: &str,
) -> Vec<SliceRef> {
    let mut groups: Vec<(K, Vec<SliceRef>)> = Vec::new();
    for s in slices {
        let k = key(&s);
        match groups.iter_mut().find(|(g, _)| same(g, &k)) {
            Some((_, v)) => v.push(s),
            None => groups.push((k, vec![s])),
        }
    }
    groups.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut iter = groups.into_iter();
    let (_, kept) = iter
        .next()
        .unwrap_or_else(|| unreachable!("keep_majority on an empty series"));
    let excluded: Vec<SliceRef> = iter.flat_map(|(_, v)| v).collect();
    if !excluded.is_empty() {
        let refs: Vec<&SliceRef> = excluded.iter().collect();
        report_excluded(
            report,
            WarningKind::MixedGeometry,
            format!(
                "series mixes {what}: kept the {} slice(s) that agree, excluded {} slice(s)",
                kept.len(),
                excluded.len()
            ),
            &refs,
            &format!("excluded: its {what} differs from the rest of the series"),
        );
    }
    kept
}

/// The regular stack (or resampling plan) of a series.
struct Plan {
    slices: Vec<SliceRef>,
    row: Vector3<f64>,
    col: Vector3<f64>,
    normal: Vector3<f64>,
    /// (between columns = along row/i, between rows = along col/j)
    pixel_mm: [f64; 2],
    /// Whether slices can be copied straight into the volume.
    regular: bool,
    slice_spacing_mm: f64,
}

fn expand_frames(
    files: &[Arc<FileHeader>],
    report: &mut LoadReport,
) -> Result<Vec<SliceRef>, DicomError> {
    let mut out = Vec::new();
    let mut multi = Vec::new();
    for h in files {
        if h.number_of_frames > 1 {
            multi.push(h.path.clone());
        }
        for (f, g) in h.frames.iter().enumerate() {
            out.push(SliceRef {
                header: h.clone(),
                frame: f as u32,
                geom: g.clone(),
                depth_mm: 0.0,
            });
        }
    }
    // A multi-frame object whose frames share one position cannot be placed in space.
    for h in files.iter().filter(|h| h.number_of_frames > 1) {
        let first = h.frames[0].position_mm;
        if h.frames.iter().all(|f| f.position_mm == first) {
            return Err(DicomError::Geometry {
                path: h.path.clone(),
                series: h.series_uid.clone().unwrap_or_default(),
                message: format!(
                    "multi-frame object with {} frames but no per-frame positions \
                     (no Per-frame Functional Groups): its frames cannot be placed in space",
                    h.number_of_frames
                ),
            });
        }
    }
    if !multi.is_empty() {
        report.warn(
            WarningKind::MultiFrame,
            format!(
                "{} multi-frame (enhanced) object(s): frames stacked by their per-frame positions",
                multi.len()
            ),
            multi,
        );
    }
    Ok(out)
}

/// How a series' slices stack, step by step: one frame per slice, the majority image
/// size, placed slices only, the majority orientation, the in-plane axes and pixel size,
/// order along the normal without duplicates, then the spacing (regular, or resampled
/// for missing slices, uneven spacing or gantry tilt).
fn plan(
    series: &str,
    files: &[Arc<FileHeader>],
    report: &mut LoadReport,
) -> Result<Plan, DicomError> {
    let slices = expand_frames(files, report)?;
    if slices.is_empty() {
        return Err(DicomError::Geometry {
            path: files.first().map(|h| h.path.clone()).unwrap_or_default(),
            series: series.into(),
            message: "no slices".into(),
        });
    }
    // Pixel matrix must agree.
    let slices = keep_majority(
        slices,
        |s| (s.header.rows, s.header.columns, s.header.bits_allocated),
        |a, b| a == b,
        report,
        "image sizes",
    );
    if !any_placed(&slices) {
        return plan_without_geometry(series, slices, report);
    }
    let slices = exclude_unplaced(slices, report);
    let slices = keep_majority(
        slices,
        |s| s.geom.orientation.unwrap_or([Vector3::x(), Vector3::y()]),
        close,
        report,
        "orientations (ImageOrientationPatient)",
    );
    let [row, col, normal] = slice_axes(&slices[0]);
    let pixel_mm = pixel_spacing(&slices, report);
    let slices = drop_duplicates(sorted_along(slices, normal), report);
    let slices = exclude_displaced(slices, [row, col], pixel_mm, report);
    let (regular, slice_spacing_mm) = stacking(&slices, normal, report);
    Ok(Plan {
        slices,
        row,
        col,
        normal,
        pixel_mm,
        regular,
        slice_spacing_mm,
    })
}

/// Whether the series can be placed in space: some slice has an orientation and some
/// slice a position.
fn any_placed(slices: &[SliceRef]) -> bool {
    let all_lack_orientation = slices.iter().all(|s| s.geom.orientation.is_none());
    let all_lack_position = slices.iter().all(|s| s.geom.position_mm.is_none());
    !(all_lack_orientation || all_lack_position)
}

/// Excludes (and reports) the slices that lack a position or an orientation.
fn exclude_unplaced(mut slices: Vec<SliceRef>, report: &mut LoadReport) -> Vec<SliceRef> {
    let placed = |s: &SliceRef| s.geom.orientation.is_some() && s.geom.position_mm.is_some();
    let bad: Vec<&SliceRef> = slices.iter().filter(|s| !placed(s)).collect();
    if bad.is_empty() {
        return slices;
    }
    report_excluded(
        report,
        WarningKind::InconsistentTags,
        format!(
            "{} slice(s) lack ImagePositionPatient or ImageOrientationPatient and were excluded",
            bad.len()
        ),
        &bad,
        "excluded: no ImagePositionPatient/ImageOrientationPatient",
    );
    slices.retain(placed);
    slices
}

/// The slice's row and column directions, orthonormalised (stored cosines carry
/// rounding), and its normal.
fn slice_axes(slice: &SliceRef) -> [Vector3<f64>; 3] {
    let [row, col] = slice
        .geom
        .orientation
        .unwrap_or([Vector3::x(), Vector3::y()]);
    let normal = row.cross(&col).normalize();
    let col = normal.cross(&row).normalize();
    [row, col, normal]
}

/// The first slice's pixel size (between columns, between rows) in mm, 1 x 1 mm when it
/// has no PixelSpacing; a warning when the slices disagree.
fn pixel_spacing(slices: &[SliceRef], report: &mut LoadReport) -> [f64; 2] {
    let pixel_mm = match slices[0].geom.pixel_spacing_mm {
        Some([between_rows, between_cols]) => [between_cols, between_rows],
        None => {
            report.warn(
                WarningKind::MissingGeometry,
                "no valid PixelSpacing (missing, or not two positive values up to 1,000 mm): assumed 1 x 1 mm pixels",
                vec![slices[0].path()],
            );
            [1.0, 1.0]
        }
    };
    let without: Vec<&SliceRef> = slices
        .iter()
        .filter(|s| s.geom.pixel_spacing_mm.is_none())
        .collect();
    if slices[0].geom.pixel_spacing_mm.is_some() && !without.is_empty() {
        report.warn(
            WarningKind::InconsistentTags,
            format!(
                "{} slice(s) have no valid PixelSpacing (missing, NaN, zero, negative or huge): the other slices' was used",
                without.len()
            ),
            paths(&without),
        );
    }
    if slices.iter().any(|s| {
        s.geom
            .pixel_spacing_mm
            .is_some_and(|p| (p[0] - pixel_mm[1]).abs() > 1e-4 || (p[1] - pixel_mm[0]).abs() > 1e-4)
    }) {
        report.warn(
            WarningKind::InconsistentTags,
            "PixelSpacing differs between slices: used the first slice's",
            vec![],
        );
    }
    pixel_mm
}

/// The slices with their depth along `normal`, sorted by it (ties by InstanceNumber,
/// path and frame).
fn sorted_along(mut slices: Vec<SliceRef>, normal: Vector3<f64>) -> Vec<SliceRef> {
    for s in &mut slices {
        s.depth_mm = s.geom.position_mm.map_or(0.0, |p| p.dot(&normal));
    }
    slices.sort_by(|a, b| {
        a.depth_mm
            .total_cmp(&b.depth_mm)
            .then(a.header.instance_number.cmp(&b.header.instance_number))
            .then(a.header.path.cmp(&b.header.path))
            .then(a.frame.cmp(&b.frame))
    });
    slices
}

/// Excludes (and reports) slices displaced in-plane from the rest of the stack: the
/// in-plane position of each slice should follow one line through the stack (constant
/// without tilt, linear in depth with it). The line is fitted robustly (median slope of
/// consecutive pairs, median intercept); a slice further than max(1 mm, 1 pixel) from it
/// is excluded, so one slice moved by 10^6 mm along x is not stacked as if aligned.
fn exclude_displaced(
    slices: Vec<SliceRef>,
    [row, col]: [Vector3<f64>; 2],
    pixel_mm: [f64; 2],
    report: &mut LoadReport,
) -> Vec<SliceRef> {
    if slices.len() < 3 {
        return slices;
    }
    let uv: Vec<[f64; 3]> = slices
        .iter()
        .map(|s| {
            let p = s.geom.position_mm.unwrap_or_default();
            [p.dot(&row), p.dot(&col), s.depth_mm]
        })
        .collect();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let tolerance = pixel_mm[0].max(pixel_mm[1]).max(1.0);
    let mut bad = vec![false; slices.len()];
    for axis in 0..2 {
        let slopes: Vec<f64> = uv
            .windows(2)
            .filter(|w| w[1][2] - w[0][2] > 1e-6)
            .map(|w| (w[1][axis] - w[0][axis]) / (w[1][2] - w[0][2]))
            .collect();
        if slopes.is_empty() {
            return slices;
        }
        let slope = median(slopes);
        let intercept = median(uv.iter().map(|p| p[axis] - slope * p[2]).collect());
        for (i, p) in uv.iter().enumerate() {
            let residual = p[axis] - (intercept + slope * p[2]);
            if residual.is_nan() || residual.abs() > tolerance {
                bad[i] = true;
            }
        }
    }
    if !bad.iter().any(|&b| b) || bad.iter().filter(|&&b| b).count() * 2 >= slices.len() {
        return slices; // nothing to exclude, or no clear majority to keep
    }
    let (kept, excluded): (Vec<_>, Vec<_>) = slices.into_iter().zip(bad).partition(|(_, b)| !*b);
    let excluded: Vec<SliceRef> = excluded.into_iter().map(|(s, _)| s).collect();
    let refs: Vec<&SliceRef> = excluded.iter().collect();
    report_excluded(
        report,
        WarningKind::MixedGeometry,
        format!(
            "{} slice(s) are displaced in-plane from the rest of the stack (ImagePositionPatient off by more than {tolerance:.1} mm) and were excluded",
            excluded.len()
        ),
        &refs,
        "excluded: its ImagePositionPatient is displaced in-plane from the rest of the series",
    );
    kept.into_iter().map(|(s, _)| s).collect()
}

/// Excludes (and reports) the sorted slices at the position of the slice before them,
/// keeping the first of each pair.
fn drop_duplicates(slices: Vec<SliceRef>, report: &mut LoadReport) -> Vec<SliceRef> {
    let mut kept: Vec<SliceRef> = Vec::with_capacity(slices.len());
    let mut duplicates: Vec<(PathBuf, PathBuf)> = Vec::new();
    for s in slices {
        match kept.last() {
            Some(last)
                if (s.depth_mm - last.depth_mm).abs() < SAME_POSITION_MM
                    && (s.geom.position_mm.unwrap_or_default()
                        - last.geom.position_mm.unwrap_or_default())
                    .norm()
                        < 0.01 =>
            {
                duplicates.push((last.path(), s.path()));
                report.skipped_files.push(FileProblem {
                    path: s.path(),
                    problem: format!("excluded: same position as {}", last.path().display()),
                });
            }
            _ => kept.push(s),
        }
    }
    if !duplicates.is_empty() {
        report.warn(
            WarningKind::DuplicatePosition,
            format!(
                "{} slice(s) repeat the position of another slice and were excluded (kept the first of each pair)",
                duplicates.len()
            ),
            duplicates.iter().flat_map(|(a, b)| [a.clone(), b.clone()]).collect(),
        );
    }
    kept
}

/// Whether the sorted slices can be copied straight into a volume, and the slice spacing
/// (mm) of the volume: the mean spacing when regular, else the spacing they are
/// resampled at. Missing slices, uneven spacing and gantry tilt are reported.
fn stacking(slices: &[SliceRef], normal: Vector3<f64>, report: &mut LoadReport) -> (bool, f64) {
    let n = slices.len();
    if n == 1 {
        let h = &slices[0].header;
        let spacing = h
            .spacing_between_slices_mm
            .or(h.slice_thickness_mm)
            .unwrap_or(1.0);
        return (true, spacing);
    }
    let gaps = Gaps::of(slices);
    let missing = gaps.report_missing_slices(slices, report);
    let finest = gaps.finest_real();
    let non_uniform = gaps.report_non_uniform(slices, finest, report);
    let tilted = report_gantry_tilt(slices, normal, report);
    let regular = !missing && !non_uniform && !tilted;
    let slice_spacing_mm = if regular {
        (slices[n - 1].depth_mm - slices[0].depth_mm) / (n - 1) as f64
    } else if non_uniform {
        finest
    } else {
        gaps.median
    };
    (regular, slice_spacing_mm)
}

/// The gaps between consecutive sorted slices along the normal (at least two slices).
struct Gaps {
    gaps: Vec<f64>,
    /// The gaps, ascending.
    sorted: Vec<f64>,
    median: f64,
    /// How far a gap may be from the median and still count as the usual spacing.
    tolerance: f64,
    /// Per gap: whether it is a whole multiple (>= 2) of the usual spacing, i.e. slices
    /// are missing there.
    missing: Vec<bool>,
}

impl Gaps {
    fn of(slices: &[SliceRef]) -> Gaps {
        let gaps: Vec<f64> = slices
            .windows(2)
            .map(|w| w[1].depth_mm - w[0].depth_mm)
            .collect();
        let mut sorted = gaps.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let tolerance = (0.01 * median).max(0.005);
        let missing = gaps
            .iter()
            .map(|g| {
                let ratio = g / median;
                ratio > 1.5 && (ratio - ratio.round()).abs() * median < tolerance.max(0.05 * median)
            })
            .collect();
        Gaps {
            gaps,
            sorted,
            median,
            tolerance,
            missing,
        }
    }

    /// Reports the gaps where slices are missing; returns whether there are any.
    fn report_missing_slices(&self, slices: &[SliceRef], report: &mut LoadReport) -> bool {
        let mut missing_msgs = Vec::new();
        let mut missing_files = Vec::new();
        for (i, g) in self.gaps.iter().enumerate() {
            if !self.missing[i] {
                continue;
            }
            let ratio = g / self.median;
            missing_msgs.push(format!(
                "{} slice(s) missing between {:.2} and {:.2} mm",
                ratio.round() as i64 - 1,
                slices[i].depth_mm,
                slices[i + 1].depth_mm
            ));
            missing_files.push(slices[i].path());
            missing_files.push(slices[i + 1].path());
        }
        if missing_msgs.is_empty() {
            return false;
        }
        report.warn(
            WarningKind::MissingSlices,
            format!(
                "{}; the gaps were filled by linear interpolation between the neighbouring slices",
                missing_msgs.join("; ")
            ),
            missing_files,
        );
        true
    }

    /// The finest real spacing (missing-slice gaps aside), so that thin parts of the
    /// stack keep their resolution when resampled; bounded so a stray close pair cannot
    /// blow up the grid.
    fn finest_real(&self) -> f64 {
        self.real_gaps()
            .fold(self.median, f64::min)
            .max(self.median / 4.0)
    }

    fn real_gaps(&self) -> impl Iterator<Item = f64> + '_ {
        self.gaps
            .iter()
            .zip(&self.missing)
            .filter(|(_, missing)| !**missing)
            .map(|(g, _)| *g)
    }

    /// Reports uneven spacing (missing-slice gaps aside), resampled at `finest`; returns
    /// whether there is any.
    fn report_non_uniform(
        &self,
        slices: &[SliceRef],
        finest: f64,
        report: &mut LoadReport,
    ) -> bool {
        let median = self.median;
        let non_uniform = self
            .real_gaps()
            .any(|g| (g - median).abs() > self.tolerance);
        if non_uniform {
            let (min_gap, max_gap) = (self.sorted[0], self.sorted[self.sorted.len() - 1]);
            report.warn(
                WarningKind::NonUniformSpacing,
                format!(
                    "slice spacing varies from {min_gap:.3} to {max_gap:.3} mm (median {median:.3} mm): resampled onto a uniform grid of {finest:.3} mm"
                ),
                vec![slices[0].path(), slices[slices.len() - 1].path()],
            );
        }
        non_uniform
    }
}

/// Reports a gantry tilt (the stacking direction is not the slice normal); returns
/// whether there is one.
fn report_gantry_tilt(slices: &[SliceRef], normal: Vector3<f64>, report: &mut LoadReport) -> bool {
    let n = slices.len();
    let first = slices[0].geom.position_mm.unwrap_or_default();
    let last = slices[n - 1].geom.position_mm.unwrap_or_default();
    let stacking = (last - first).normalize();
    let tilt_deg = stacking.dot(&normal).abs().min(1.0).acos().to_degrees();
    if tilt_deg <= TILT_THRESHOLD_DEG {
        return false;
    }
    let tag = slices[0]
        .header
        .gantry_tilt_deg
        .map(|t| format!(" (GantryDetectorTilt tag: {t:.1} degrees)"))
        .unwrap_or_default();
    report.warn(
        WarningKind::GantryTilt,
        format!(
            "gantry tilt of {tilt_deg:.1} degrees{tag}: slices were de-tilted by resampling onto an orthogonal grid"
        ),
        vec![slices[0].path(), slices[n - 1].path()],
    );
    true
}

/// No usable positions/orientations: stack by InstanceNumber with assumed geometry.
fn plan_without_geometry(
    series: &str,
    mut slices: Vec<SliceRef>,
    report: &mut LoadReport,
) -> Result<Plan, DicomError> {
    if slices.iter().any(|s| s.header.instance_number.is_none()) && slices.len() > 1 {
        return Err(DicomError::Geometry {
            path: slices[0].path(),
            series: series.into(),
            message: format!(
                "{} slices have neither ImagePositionPatient/ImageOrientationPatient nor InstanceNumber: \
                 their order cannot be known, refusing to stack them",
                slices.len()
            ),
        });
    }
    slices.sort_by(|a, b| {
        (a.header.instance_number, a.frame, &a.header.path).cmp(&(
            b.header.instance_number,
            b.frame,
            &b.header.path,
        ))
    });
    let h = slices[0].header.clone();
    let spacing = h.spacing_between_slices_mm.or(h.slice_thickness_mm);
    let pixel_mm = match slices[0].geom.pixel_spacing_mm {
        Some([r, c]) => [c, r],
        None => [1.0, 1.0],
    };
    report.warn(
        WarningKind::MissingGeometry,
        format!(
            "no ImagePositionPatient/ImageOrientationPatient: slices stacked by InstanceNumber, axial orientation and {} assumed; positions in mm are not reliable",
            match spacing {
                Some(s) => format!("{s:.3} mm slice spacing (from the header)"),
                None => "1 mm slice spacing".to_string(),
            }
        ),
        paths(&slices.iter().collect::<Vec<_>>()),
    );
    let spacing = spacing.unwrap_or(1.0);
    for (i, s) in slices.iter_mut().enumerate() {
        s.depth_mm = i as f64 * spacing;
        s.geom.position_mm = Some(Vector3::new(0.0, 0.0, s.depth_mm));
    }
    Ok(Plan {
        slices,
        row: Vector3::x(),
        col: Vector3::y(),
        normal: Vector3::z(),
        pixel_mm,
        regular: true,
        slice_spacing_mm: spacing,
    })
}

fn series_meta(uid: &str, slices: &[SliceRef]) -> SeriesMeta {
    let h = &slices[0].header;
    let mut ts: Vec<(String, String)> = slices
        .iter()
        .map(|s| s.header.transfer_syntax.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|uid| {
            let name = transfer_syntax_name(&uid);
            (uid, name)
        })
        .collect();
    ts.sort();
    let mut sop: Vec<String> = slices
        .iter()
        .map(|s| s.header.sop_instance_uid.clone())
        .collect();
    sop.dedup();
    SeriesMeta {
        patient_id: h.patient_id.clone(),
        patient_name: h.patient_name.clone(),
        study_uid: h.study_uid.clone(),
        series_uid: uid.to_string(),
        frame_of_reference_uid: h.frame_of_reference_uid.clone(),
        modality: h.modality.clone(),
        series_description: h.series_description.clone(),
        series_number: h.series_number,
        study_date: h.study_date.clone(),
        manufacturer: h.manufacturer.clone(),
        convolution_kernel: h.convolution_kernel.clone(),
        windows: h
            .windows
            .iter()
            .map(|(c, w, e)| WindowPreset {
                center_hu: *c,
                width_hu: *w,
                explanation: e.clone(),
            })
            .collect(),
        transfer_syntaxes: ts,
        sop_instance_uids: sop,
        sop_class_uid: Some(h.sop_class_uid.clone()).filter(|s| !s.is_empty()),
    }
}

/// Decodes every slice of the plan into `n` planes of `plane` voxels, in parallel;
/// one file is opened once even when it holds several frames.
type Oversized = Vec<(PathBuf, (usize, usize))>;

fn decode_slices(
    slices: &[SliceRef],
    plane: usize,
    options: &LoadOptions,
) -> (Vec<i16>, Vec<(usize, DicomError)>, usize, Oversized) {
    let mut voxels = crate::volume::zeroed_buffer::<i16>(plane * slices.len());
    // Group consecutive-or-not frames of the same file.
    let mut by_file: Vec<(Arc<FileHeader>, Vec<usize>)> = Vec::new();
    let mut index: std::collections::HashMap<*const FileHeader, usize> = Default::default();
    for (k, s) in slices.iter().enumerate() {
        let key = Arc::as_ptr(&s.header);
        match index.get(&key) {
            Some(&g) => by_file[g].1.push(k),
            None => {
                index.insert(key, by_file.len());
                by_file.push((s.header.clone(), vec![k]));
            }
        }
    }
    let done = AtomicUsize::new(0);
    let total = slices.len();
    let clamped = AtomicUsize::new(0);
    let oversized = std::sync::Mutex::new(Vec::new());
    let note_oversized = |image: &OpenImage| {
        if let Some(sizes) = image.excess_native_bytes()
            && let Ok(mut v) = oversized.lock()
        {
            v.push((image.path().to_path_buf(), sizes));
        }
    };
    // Hand each file's planes to its task.
    let mut planes: Vec<Option<&mut [i16]>> = voxels.chunks_mut(plane).map(Some).collect();
    type Job<'a, 'b> = (&'a Arc<FileHeader>, Vec<(usize, &'b mut [i16])>);
    let jobs: Vec<Job> = by_file
        .iter()
        .map(|(h, ks)| {
            (
                h,
                ks.iter()
                    .map(|&k| (k, planes[k].take().unwrap_or_default()))
                    .collect(),
            )
        })
        .collect();
    let errors: Vec<(usize, DicomError)> = jobs
        .into_par_iter()
        .flat_map_iter(|(header, targets)| {
            let mut errs = Vec::new();
            if options.is_cancelled() {
                errs.extend(targets.iter().map(|(k, _)| (*k, DicomError::Cancelled)));
                return errs;
            }
            // Single-frame native files: one read, pixels from the file's tail.
            if targets.len() == 1 && targets[0].0 < slices.len() && slices[targets[0].0].frame == 0
            {
                let (k, out) = targets.into_iter().next().unwrap_or_default();
                let s = &slices[k];
                let fast = if s.geom == header.frames[0] {
                    fast_native_to_hu(header, out)
                } else {
                    None
                };
                match fast {
                    Some(Ok(c)) => {
                        clamped.fetch_add(c, Ordering::Relaxed);
                    }
                    Some(Err(e)) => errs.push((k, e)),
                    None => match OpenImage::open(header).and_then(|image| {
                        note_oversized(&image);
                        image.frame_to_hu(0, s.geom.rescale_slope, s.geom.rescale_intercept, out)
                    }) {
                        Ok(c) => {
                            clamped.fetch_add(c, Ordering::Relaxed);
                        }
                        Err(e) => errs.push((k, e)),
                    },
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                options.report(LoadStage::Decoding, n, total);
                return errs;
            }
            match OpenImage::open(header) {
                Ok(image) => {
                    note_oversized(&image);
                    for (k, out) in targets {
                        let s = &slices[k];
                        match image.frame_to_hu(
                            s.frame,
                            s.geom.rescale_slope,
                            s.geom.rescale_intercept,
                            out,
                        ) {
                            Ok(c) => {
                                clamped.fetch_add(c, Ordering::Relaxed);
                            }
                            Err(e) => errs.push((k, e)),
                        }
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        options.report(LoadStage::Decoding, n, total);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    for (k, _) in targets {
                        let e2 = match &e {
                            DicomError::UnsupportedTransferSyntax { path, uid, name } => {
                                DicomError::UnsupportedTransferSyntax {
                                    path: path.clone(),
                                    uid: uid.clone(),
                                    name: name.clone(),
                                }
                            }
                            DicomError::Decode { path, message } => DicomError::Decode {
                                path: path.clone(),
                                message: message.clone(),
                            },
                            _ => DicomError::Decode {
                                path: header.path.clone(),
                                message: msg.clone(),
                            },
                        };
                        errs.push((k, e2));
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        options.report(LoadStage::Decoding, n, total);
                    }
                }
            }
            errs
        })
        .collect();
    let oversized = oversized.into_inner().unwrap_or_default();
    (voxels, errors, clamped.into_inner(), oversized)
}

/// Warns about files whose native Pixel Data is longer than their header's image size.
fn report_oversized(oversized: &[(PathBuf, (usize, usize))], report: &mut LoadReport) {
    if let Some((_, (held, expected))) = oversized.first() {
        report.warn(
            WarningKind::InconsistentTags,
            format!(
                "Pixel Data is longer than Rows x Columns x BitsAllocated x frames need in {} file(s) \
                 (e.g. {held} bytes for {expected}): the extra bytes were ignored; if the header's \
                 image size is wrong, those slices are garbled",
                oversized.len()
            ),
            oversized.iter().map(|(p, _)| p.clone()).collect(),
        );
    }
}

pub(super) fn load_stack(
    uid: &str,
    files: &[Arc<FileHeader>],
    options: &LoadOptions,
) -> Result<DicomVolume, DicomError> {
    let mut report = LoadReport::default();
    let mut plan = plan(uid, files, &mut report)?;
    let h0 = plan.slices[0].header.clone();
    let (nx, ny) = (h0.columns as usize, h0.rows as usize);
    let plane = nx * ny;
    guard::check_grid([nx, ny, plan.slices.len()], 2).map_err(|e| DicomError::Geometry {
        path: h0.path.clone(),
        series: uid.into(),
        message: e.to_string(),
    })?;
    report_rescale_problems(&plan.slices, &mut report);

    let (mut voxels, errors, clamped, oversized) = decode_slices(&plan.slices, plane, options);
    report_oversized(&oversized, &mut report);
    if options.is_cancelled() {
        return Err(DicomError::Cancelled);
    }
    if !errors.is_empty() {
        let bad: std::collections::BTreeSet<usize> = errors.iter().map(|(k, _)| *k).collect();
        if bad.len() == plan.slices.len() {
            // Nothing decodes: the first error is the answer.
            let (_, e) = errors
                .into_iter()
                .next()
                .unwrap_or((0, DicomError::Cancelled));
            return Err(e);
        }
        // Drop the undecodable slices and plan again without them.
        for (_, e) in &errors {
            let path = match e {
                DicomError::Decode { path, .. }
                | DicomError::UnsupportedTransferSyntax { path, .. } => path.clone(),
                _ => PathBuf::new(),
            };
            report.skipped_files.push(FileProblem {
                path,
                problem: e.to_string(),
            });
        }
        let bad_files: Vec<PathBuf> = bad.iter().map(|&k| plan.slices[k].path()).collect();
        report.warn(
            WarningKind::SkippedFiles,
            format!(
                "{} slice(s) could not be decoded and were left out",
                bad.len()
            ),
            bad_files,
        );
        let kept: Vec<usize> = (0..plan.slices.len())
            .filter(|k| !bad.contains(k))
            .collect();
        let mut compact = Vec::with_capacity(kept.len() * plane);
        for &k in &kept {
            compact.extend_from_slice(&voxels[k * plane..(k + 1) * plane]);
        }
        voxels = compact;
        let kept_headers: Vec<Arc<FileHeader>> = {
            let mut seen = std::collections::HashSet::new();
            kept.iter()
                .map(|&k| plan.slices[k].header.clone())
                .filter(|h| seen.insert(Arc::as_ptr(h)))
                .collect()
        };
        let kept_slices: Vec<(PathBuf, u32)> = kept
            .iter()
            .map(|&k| (plan.slices[k].path(), plan.slices[k].frame))
            .collect();
        let mut report2 = LoadReport::default();
        let new_plan = self::plan(uid, &kept_headers, &mut report2)?;
        // Re-plan only changes the order/spacing analysis; the decoded planes follow
        // the old order, so map them.
        let mut reordered = vec![0i16; new_plan.slices.len() * plane];
        for (k_new, s) in new_plan.slices.iter().enumerate() {
            if let Some(k_old) = kept_slices
                .iter()
                .position(|(p, f)| *p == s.header.path && *f == s.frame)
            {
                reordered[k_new * plane..(k_new + 1) * plane]
                    .copy_from_slice(&voxels[k_old * plane..(k_old + 1) * plane]);
            }
        }
        voxels = reordered;
        // Keep the first report's notes that are not about geometry, add the new plan's.
        report.warnings.retain(|w| {
            !matches!(
                w.kind,
                WarningKind::NonUniformSpacing
                    | WarningKind::MissingSlices
                    | WarningKind::GantryTilt
            )
        });
        report.warnings.extend(report2.warnings);
        report.skipped_files.extend(report2.skipped_files);
        plan = new_plan;
    }
    if clamped > 0 {
        report.warn(
            WarningKind::ValuesClamped,
            format!(
                "{clamped} voxel(s) fell outside the i16 HU range after rescaling and were clamped"
            ),
            vec![],
        );
    }
    let modality = h0.modality.as_deref();
    match modality {
        None => report.warn(
            WarningKind::MissingModality,
            "no Modality tag: assumed CT (values treated as HU)",
            vec![h0.path.clone()],
        ),
        Some("CT") => {}
        Some(m) => report.warn(
            WarningKind::NotCt,
            format!("modality is {m}, not CT: values are not Hounsfield units"),
            vec![h0.path.clone()],
        ),
    }

    let meta = series_meta(uid, &plan.slices);
    let n = plan.slices.len();
    let first_pos = plan.slices[0].geom.position_mm.unwrap_or_default();
    let direction = Matrix3::from_columns(&[plan.row, plan.col, plan.normal]);
    let stack_geometry = Geometry {
        dims: [nx, ny, n],
        spacing_mm: Vector3::new(plan.pixel_mm[0], plan.pixel_mm[1], plan.slice_spacing_mm),
        origin_mm: first_pos,
        direction,
    };
    if plan.regular {
        let volume = Volume::new(stack_geometry, voxels).map_err(|e| DicomError::Geometry {
            path: h0.path.clone(),
            series: uid.into(),
            message: e.to_string(),
        })?;
        return Ok(DicomVolume {
            volume,
            meta,
            report,
        });
    }
    options.report(LoadStage::Resampling, 0, 1);
    let volume =
        resample_irregular(&plan, [nx, ny], &voxels).map_err(|message| DicomError::Geometry {
            path: h0.path.clone(),
            series: uid.into(),
            message,
        })?;
    options.report(LoadStage::Resampling, 1, 1);
    Ok(DicomVolume {
        volume,
        meta,
        report,
    })
}

/// Resamples slices at arbitrary positions along the normal (and shifted in-plane, for a
/// tilted gantry) onto a regular orthogonal grid: bilinear within each of the two
/// bracketing slices, linear between them.
///
/// A grid more than [`guard::MAX_RESAMPLE_GROWTH`] times the input's voxels is refused
/// (one slice 1e6 mm from the rest, or a 0.001 mm PixelSpacing under a gantry tilt,
/// would otherwise ask for hundreds of gigabytes), naming the slices at the extremes.
fn resample_irregular(
    plan: &Plan,
    [nx, ny]: [usize; 2],
    voxels: &[i16],
) -> Result<Volume<i16>, String> {
    let plane = nx * ny;
    let (row, col, normal) = (plan.row, plan.col, plan.normal);
    let [sx, sy] = plan.pixel_mm;
    let positions: Vec<Vector3<f64>> = plan
        .slices
        .iter()
        .map(|s| s.geom.position_mm.unwrap_or_default())
        .collect();
    let depths: Vec<f64> = plan.slices.iter().map(|s| s.depth_mm).collect();
    let p0 = positions[0];
    // In-plane footprint of all slices, in (row, col) millimetres relative to p0.
    let (mut u_min, mut u_max, mut v_min, mut v_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in &positions {
        let d = p - p0;
        let (u, v) = (d.dot(&row), d.dot(&col));
        u_min = u_min.min(u);
        u_max = u_max.max(u + (nx as f64 - 1.0) * sx);
        v_min = v_min.min(v);
        v_max = v_max.max(v + (ny as f64 - 1.0) * sy);
    }
    let sz = plan.slice_spacing_mm;
    let depth0 = depths[0];
    let depth_span = depths[depths.len() - 1] - depth0;
    let extent = [(u_max - u_min) / sx, (v_max - v_min) / sy, depth_span / sz];
    let input_voxels = (plane * plan.slices.len()) as f64;
    let grid_voxels: f64 = extent.iter().map(|e| e.round() + 1.0).product();
    if !grid_voxels.is_finite() || grid_voxels > guard::MAX_RESAMPLE_GROWTH as f64 * input_voxels {
        let n = plan.slices.len();
        return Err(format!(
            "the {n} slices span {:.1} x {:.1} x {:.1} mm; resampling them onto a regular \
             grid of {:.3} x {:.3} x {:.3} mm would need {:.3e} voxels, more than {} times the \
             {} voxels read: a stray ImagePositionPatient or spacing? (first slice {}, last {})",
            u_max - u_min,
            v_max - v_min,
            depth_span,
            sx,
            sy,
            sz,
            grid_voxels,
            guard::MAX_RESAMPLE_GROWTH,
            input_voxels,
            plan.slices[0].path().display(),
            plan.slices[n - 1].path().display()
        ));
    }
    let dims = extent.map(|e| e.round() as usize + 1);
    guard::check_grid(dims, 2).map_err(|e| e.to_string())?;
    let origin = p0 + row * u_min + col * v_min;
    let geometry = Geometry {
        dims,
        spacing_mm: Vector3::new(sx, sy, sz),
        origin_mm: origin,
        direction: Matrix3::from_columns(&[row, col, normal]),
    };
    let mut out = vec![PADDING_HU; geometry.voxel_count()];
    // Bilinear sample of slice s at in-plane (fractional) pixel (x, y).
    let sample = |s: usize, x: f64, y: f64| -> Option<f64> {
        if x < -0.5 || y < -0.5 || x > nx as f64 - 0.5 || y > ny as f64 - 0.5 {
            return None;
        }
        let x = x.clamp(0.0, (nx - 1) as f64);
        let y = y.clamp(0.0, (ny - 1) as f64);
        let (x0, y0) = (x.floor() as usize, y.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(nx - 1), (y0 + 1).min(ny - 1));
        let (fx, fy) = (x - x0 as f64, y - y0 as f64);
        let base = &voxels[s * plane..(s + 1) * plane];
        let v = |xx: usize, yy: usize| base[yy * nx + xx] as f64;
        let a = v(x0, y0) + (v(x1, y0) - v(x0, y0)) * fx;
        let b = v(x0, y1) + (v(x1, y1) - v(x0, y1)) * fx;
        Some(a + (b - a) * fy)
    };
    out.par_chunks_mut(dims[0] * dims[1])
        .enumerate()
        .for_each(|(k, slab)| {
            let depth = depth0 + k as f64 * sz;
            // Bracketing slices.
            let hi = depths
                .partition_point(|&d| d < depth - 1e-9)
                .min(depths.len() - 1);
            let lo = if depths[hi] > depth + 1e-9 && hi > 0 {
                hi - 1
            } else {
                hi
            };
            let t = if hi != lo {
                (depth - depths[lo]) / (depths[hi] - depths[lo])
            } else {
                0.0
            };
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let p = origin
                        + row * (i as f64 * sx)
                        + col * (j as f64 * sy)
                        + normal * (depth - origin.dot(&normal));
                    let at = |s: usize| {
                        let d = p - positions[s];
                        sample(s, d.dot(&row) / sx, d.dot(&col) / sy)
                    };
                    let value = match (at(lo), if t > 0.0 { at(hi) } else { None }) {
                        (Some(a), Some(b)) => a + (b - a) * t,
                        (Some(a), None) => a,
                        (None, Some(b)) => b,
                        (None, None) => continue,
                    };
                    slab[j * dims[0] + i] =
                        value.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16;
                }
            }
        });
    Ok(Volume {
        geometry,
        voxels: out,
    })
}

/// Warns about slices whose rescale cannot be right: RescaleSlope or RescaleIntercept
/// unreadable (1 and 0 used), or a slope of (about) 0, which makes every voxel the
/// intercept.
fn report_rescale_problems(slices: &[SliceRef], report: &mut LoadReport) {
    let unreadable: Vec<&SliceRef> = slices
        .iter()
        .filter(|s| s.header.unreadable_rescale)
        .collect();
    if !unreadable.is_empty() {
        report.warn(
            WarningKind::InconsistentTags,
            format!(
                "RescaleSlope or RescaleIntercept is not a finite number in {} slice(s): \
                 slope 1 and intercept 0 were used, so their HU may be wrong",
                unreadable.len()
            ),
            paths(&unreadable),
        );
    }
    let zero: Vec<&SliceRef> = slices
        .iter()
        .filter(|s| s.geom.rescale_slope.abs() < 1e-6)
        .collect();
    if !zero.is_empty() {
        report.warn(
            WarningKind::InconsistentTags,
            format!(
                "RescaleSlope is 0 (or below 1e-6) in {} slice(s): all their voxels read as the RescaleIntercept",
                zero.len()
            ),
            paths(&zero),
        );
    }
}
