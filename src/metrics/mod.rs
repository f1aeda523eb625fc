//! Segmentation metrics: exact, spacing-aware, GUI-free.
//!
//! Two label maps on the same grid ([`LabelVolume`], voxels i fastest) are compared for
//! one [`Target`] at a time: a single label value, or "any foreground" (every non-zero
//! value). Everything is computed exactly (64-bit counts, f64 millimetres); nothing here
//! returns NaN or infinity: undefined values are `None` (printed "n/a").
//!
//! | piece | module | entry point |
//! |---|---|---|
//! | voxel overlap (Dice, IoU, volume similarity, RVD, sensitivity, ...) | [`overlap`] | [`JointHistogram`], [`overlap_metrics`] |
//! | intensity agreement inside the masks (ME, MAE, mean HU) | [`intensity`] | [`intensity_metrics`] |
//! | surface distances (HD, HD95, ASSD) from an exact anisotropic EDT | [`surface`] | [`surface_distances`] |
//! | axial slice detection, per-slice Dice / IoU, ROC AUC | [`slices`] | [`slice_metrics`], [`roc_auc`] |
//! | lesion instances (3D components, matching, F1, COCO AP) | [`instances`] | [`match_instances`] |
//! | case level: % of lung involved | [`case`] | [`lung_involvement`] |
//! | per-label HU statistics, involvement per lung and third, HU bands | [`quantify`] | [`quantify::quantify`] |
//! | JSON / CSV writing, summary statistics over cases, comparison tables | [`report`] | [`report::to_json_text`], [`report::summarize`], [`report::compare_csv`] |
//! | agreement map (TP / FP / FN voxels), worst slices, slice ROC curve | [`agreement`] | [`agreement::agreement_map`] |
//!
//! [`compare`] bundles overlap and surface metrics for a list of labels and for "any
//! foreground".
//!
//! ## Empty masks
//! - Both empty: Dice = IoU = volume similarity = 1, all surface distances 0.
//! - One empty: Dice = IoU = 0, surface distances `None` (not +infinity).
//! - Ratios whose denominator is zero (sensitivity with an empty reference, specificity
//!   when there is no background, RVD with an empty reference) are `None`.
//!
//! ## Cost
//! Counting passes are parallel over chunks (rayon) and allocate nothing per voxel. The
//! surface distances allocate one f64 buffer and two u8 buffers over the padded bounding
//! box of the two masks only; the last EDT pass is evaluated only on rows holding
//! boundary voxels (by bounded scans when a row holds few). Instance labelling is
//! sequential union-find on the bounding box of the masks (meant for lesions).
//!
//! ## Grids
//! Two volumes are comparable when they are the same grid: equal dims, spacings within a
//! relative 1e-4 (float32 NIfTI headers, spacing estimated by different tools), origins
//! within 0.1 voxel and axes within 0.06 degrees ([`crate::volume::GRID_TOLERANCE`]);
//! otherwise [`MetricsError::GridMismatch`] says what differs and describes both grids.
//! A label map with the CT's dims and spacing but flipped or shifted is refused.

pub mod agreement;
pub mod case;
pub mod instances;
pub mod intensity;
pub mod overlap;
pub mod quantify;
pub mod report;
pub mod slices;
pub mod surface;

use std::fmt;

pub use case::{DEFAULT_INVOLVEMENT_THRESHOLD_PCT, LungInvolvement, lung_involvement};
pub use instances::{
    CocoAp, Connectivity, DetectionCounts, InstanceMatching, Instances, connected_components,
    match_instances,
};
pub use intensity::{IntensityMetrics, intensity_metrics};
pub use overlap::{ConfusionCounts, JointHistogram, OverlapMetrics, overlap_metrics};
pub use slices::{SliceMetrics, SliceOverlap, roc_auc, slice_metrics};
pub use surface::{
    DirectedDistances, SurfaceDistances, directed_surface_distances, percentile_linear,
    squared_distance_transform, surface_distances,
};

use crate::volume::{Geometry, LabelVolume, Volume};

/// Errors of the metrics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("grids differ ({difference}): {first}; {second}")]
    GridMismatch {
        first: Box<GridInfo>,
        second: Box<GridInfo>,
        /// What differs first, in words (dims, spacing, an axis, the origins).
        difference: String,
    },
    #[error("{what}: expected {expected} values, got {got}")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what}: value {value} at index {index} is not finite")]
    NotFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
    #[error("IoU threshold {0} is outside (0, 1]")]
    BadThreshold(f64),
}

/// One side of a [`MetricsError::GridMismatch`].
#[derive(Debug, Clone, PartialEq)]
pub struct GridInfo {
    /// What the volume is ("reference", "test", "CT", ...).
    pub name: &'static str,
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
}

impl fmt::Display for GridInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} has dims {:?} and spacing {:?} mm",
            self.name, self.dims, self.spacing_mm
        )
    }
}

/// Which voxels of a label map form the mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Voxels equal to this value.
    Label(u8),
    /// Every non-zero voxel.
    AnyForeground,
}

impl Target {
    /// Whether a voxel value belongs to the mask.
    #[inline]
    pub fn hit(self, value: u8) -> bool {
        match self {
            Target::Label(l) => value == l,
            Target::AnyForeground => value != 0,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Label(l) => write!(f, "label {l}"),
            Target::AnyForeground => f.write_str("any foreground"),
        }
    }
}

/// Checks that two grids are the same grid: dims, spacing, origin and direction, within
/// [`crate::volume::GRID_TOLERANCE`] ([`Geometry::grid_difference`]).
///
/// The spacing tolerance accepts a NIfTI's float32 spacing against the float64 spacing a
/// DICOM series' positions give, and two tools' estimates of the same slice spacing
/// (e.g. 3.98734 vs 3.98737 mm); across 500 voxels it is under 0.05 voxel of drift.
pub fn check_same_grid(
    first: &'static str,
    a: &Geometry,
    second: &'static str,
    b: &Geometry,
) -> Result<(), MetricsError> {
    let Some(difference) = a.grid_difference(b) else {
        return Ok(());
    };
    let info = |name, g: &Geometry| {
        Box::new(GridInfo {
            name,
            dims: g.dims,
            spacing_mm: g.spacing_mm.into(),
        })
    };
    Err(MetricsError::GridMismatch {
        first: info(first, a),
        second: info(second, b),
        difference,
    })
}

/// Volume of one voxel in millilitres.
pub fn voxel_volume_ml(geometry: &Geometry) -> f64 {
    geometry.spacing_mm.iter().product::<f64>() / 1000.0
}

fn spacing_of<T>(v: &Volume<T>) -> [f64; 3] {
    v.geometry.spacing_mm.into()
}

/// Overlap and surface metrics of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetComparison {
    pub target: Target,
    pub overlap: OverlapMetrics,
    pub surface: SurfaceDistances,
}

/// The result of [`compare`].
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub dims: [usize; 3],
    pub spacing_mm: [f64; 3],
    /// One entry per requested label, in the order given.
    pub per_label: Vec<TargetComparison>,
    /// Every non-zero voxel against every non-zero voxel.
    pub foreground: TargetComparison,
}

/// The non-zero values present in either map, ascending (the labels [`compare`] is
/// given when the user names none).
pub fn labels_present(a: &LabelVolume, b: &LabelVolume) -> Vec<u8> {
    let mut seen = [false; 256];
    for &v in a.voxels.iter().chain(&b.voxels) {
        seen[v as usize] = true;
    }
    (1..=255u8).filter(|&v| seen[v as usize]).collect()
}

/// Compares `test` against `reference`: overlap and surface metrics for each label of
/// `labels` and for "any foreground".
///
/// One pass builds the joint histogram of both maps (all overlap counts); surface
/// distances run one exact EDT pair per target on the bounding box of the two masks.
/// When the maps hold a single non-zero value and it is one of `labels`, the foreground
/// result reuses that label's.
pub fn compare(
    reference: &LabelVolume,
    test: &LabelVolume,
    labels: &[u8],
) -> Result<Comparison, MetricsError> {
    let hist = JointHistogram::new(reference, test)?;
    let ml = voxel_volume_ml(&reference.geometry);
    let mut per_label: Vec<TargetComparison> = Vec::with_capacity(labels.len());
    for &l in labels {
        let target = Target::Label(l);
        if let Some(prev) = per_label.iter().find(|c| c.target == target) {
            per_label.push(prev.clone());
            continue;
        }
        per_label.push(TargetComparison {
            target,
            overlap: OverlapMetrics::from_counts(hist.confusion(target), ml),
            surface: surface_distances(reference, test, target)?,
        });
    }
    let present = hist.nonzero_values_present();
    let reuse = match present.as_slice() {
        [only] => per_label.iter().find(|c| c.target == Target::Label(*only)),
        _ => None,
    };
    let foreground = match reuse {
        Some(c) => TargetComparison {
            target: Target::AnyForeground,
            overlap: c.overlap.clone(),
            surface: c.surface.clone(),
        },
        None => TargetComparison {
            target: Target::AnyForeground,
            overlap: OverlapMetrics::from_counts(hist.confusion(Target::AnyForeground), ml),
            surface: surface_distances(reference, test, Target::AnyForeground)?,
        },
    };
    Ok(Comparison {
        dims: reference.geometry.dims,
        spacing_mm: spacing_of(reference),
        per_label,
        foreground,
    })
}

/// Formats an optional value with `decimals` decimals, or "n/a".
pub fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".to_string(),
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "grid {:?}, spacing {:?} mm", self.dims, self.spacing_mm)?;
        writeln!(
            f,
            "{:<16} {:>8} {:>8} {:>8} {:>9} {:>8} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9}",
            "target",
            "Dice",
            "IoU",
            "VS",
            "RVD %",
            "sens",
            "spec",
            "ref mL",
            "test mL",
            "HD mm",
            "HD95 mm",
            "ASSD mm"
        )?;
        for c in self
            .per_label
            .iter()
            .chain(std::iter::once(&self.foreground))
        {
            let o = &c.overlap;
            let s = &c.surface;
            writeln!(
                f,
                "{:<16} {:>8.5} {:>8.5} {:>8.5} {:>9} {:>8} {:>8} {:>10.3} {:>10.3} {:>9} {:>9} {:>9}",
                c.target.to_string(),
                o.dice,
                o.jaccard,
                o.volume_similarity,
                fmt_opt(o.relative_volume_difference_pct, 3),
                fmt_opt(o.sensitivity, 5),
                fmt_opt(o.specificity, 5),
                o.reference_volume_ml,
                o.test_volume_ml,
                fmt_opt(s.hausdorff_mm, 3),
                fmt_opt(s.hd95_mm, 3),
                fmt_opt(s.assd_mm, 3),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
