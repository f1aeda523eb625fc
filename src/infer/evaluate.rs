//! Scoring lung proposals against reference masks on the full CT grid (Dice, Jaccard,
//! mean (absolute) HU error, relative volume and mean-HU differences), as the
//! lung-segmentation seed reports them; shared by `pulmo train`, `pulmo eval` and the
//! tests (no libtorch needed).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{InferError, RunContext, SegmentInput, Segmenter};
use crate::io::nifti::{read_nifti_ct, read_nifti_labels};
use crate::metrics::Target;
use crate::metrics::intensity::intensity_metrics;
use crate::metrics::overlap::{JointHistogram, OverlapMetrics};
use crate::volume::{CtVolume, LabelVolume};

/// One CT with its reference mask.
pub struct Case {
    pub name: String,
    pub ct: CtVolume,
    pub mask: LabelVolume,
    pub ct_path: PathBuf,
}

/// Reads `NAME_ct.nii.gz` and `NAME_lungs.nii.gz` from `dir`.
pub fn read_lung_case(dir: &Path, name: &str) -> Result<Case, InferError> {
    let ct_path = dir.join(format!("{name}_ct.nii.gz"));
    let mask_path = dir.join(format!("{name}_lungs.nii.gz"));
    let data_err = |path: &Path, message: String| InferError::Data {
        path: path.to_path_buf(),
        message,
    };
    let ct = read_nifti_ct(&ct_path)
        .map_err(|e| data_err(&ct_path, e.to_string()))?
        .volume;
    let mask = read_nifti_labels(&mask_path)
        .map_err(|e| data_err(&mask_path, e.to_string()))?
        .volume;
    if ct.geometry.dims != mask.geometry.dims {
        return Err(data_err(
            &mask_path,
            format!(
                "mask dims {:?} differ from the CT's {:?}",
                mask.geometry.dims, ct.geometry.dims
            ),
        ));
    }
    Ok(Case {
        name: name.to_string(),
        ct,
        mask,
        ct_path,
    })
}

/// Per-case evaluation of a lung model on the full CT grid, as the lung-segmentation
/// seed reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LungCaseMetrics {
    pub case: String,
    pub dice: f64,
    pub jaccard: f64,
    pub mean_error_hu: f64,
    pub mean_absolute_error_hu: f64,
    pub relative_volume_difference_pct: Option<f64>,
    pub relative_mean_hu_difference_pct: Option<f64>,
    pub volume_ml_reference: f64,
    pub volume_ml_predicted: f64,
    pub seconds: f64,
}

/// Runs `seg` on a case and scores "any lung" against the reference mask.
pub fn evaluate_lung_case(
    seg: &mut dyn Segmenter,
    case: &Case,
) -> Result<LungCaseMetrics, InferError> {
    let t = Instant::now();
    let p = RunContext::detached(|ctx| seg.segment(&case.ct, SegmentInput::default(), ctx))?;
    let seconds = t.elapsed().as_secs_f64();
    score_lungs(&case.name, &case.ct, &case.mask, &p.labels, seconds)
}

/// Lung metrics of `predicted` (any non-zero) against `reference` (any non-zero).
pub fn score_lungs(
    name: &str,
    ct: &crate::volume::CtVolume,
    reference: &LabelVolume,
    predicted: &LabelVolume,
    seconds: f64,
) -> Result<LungCaseMetrics, InferError> {
    let bad = |e: crate::metrics::MetricsError| InferError::Input(format!("{name}: {e}"));
    let hist = JointHistogram::new(reference, predicted).map_err(bad)?;
    let ml = crate::metrics::voxel_volume_ml(&reference.geometry);
    let o = OverlapMetrics::from_counts(hist.confusion(Target::AnyForeground), ml);
    let i = intensity_metrics(ct, reference, predicted, Target::AnyForeground).map_err(bad)?;
    Ok(LungCaseMetrics {
        case: name.to_string(),
        dice: o.dice,
        jaccard: o.jaccard,
        mean_error_hu: i.mean_error_hu,
        mean_absolute_error_hu: i.mean_absolute_error_hu,
        relative_volume_difference_pct: o.relative_volume_difference_pct,
        relative_mean_hu_difference_pct: i.relative_mean_hu_difference_pct,
        volume_ml_reference: o.reference_volume_ml,
        volume_ml_predicted: o.test_volume_ml,
        seconds,
    })
}

/// Per-slice results on COVID-SemiSeg test slices (the Inf-Net protocol: Dice per
/// slice, averaged over slices; 1 when reference and prediction are both empty).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LesionSliceMetrics {
    pub slice: String,
    pub dice_infection: f64,
    pub dice_ggo: f64,
    pub dice_consolidation: f64,
}

/// Runs a lesion segmenter on every slice of a COVID-SemiSeg split folder.
pub fn evaluate_semiseg(
    seg: &mut dyn super::Segmenter,
    dir: &Path,
) -> Result<Vec<LesionSliceMetrics>, InferError> {
    use super::lesion_data::{read_semiseg, slice_dice};
    use super::{CONSOLIDATION, GGO, RunContext, SegmentInput};
    let mut rows = Vec::new();
    for s in read_semiseg(dir)? {
        let p = RunContext::detached(|ctx| seg.segment(&s.ct, SegmentInput::default(), ctx))?;
        let (r, q) = (&s.labels.voxels, &p.labels.voxels);
        rows.push(LesionSliceMetrics {
            slice: s.name,
            dice_infection: slice_dice(r, q, None),
            dice_ggo: slice_dice(r, q, Some(GGO)),
            dice_consolidation: slice_dice(r, q, Some(CONSOLIDATION)),
        });
    }
    Ok(rows)
}

/// Means of [`evaluate_semiseg`] rows: (infection, GGO, consolidation).
pub fn semiseg_means(rows: &[LesionSliceMetrics]) -> (f64, f64, f64) {
    let n = rows.len().max(1) as f64;
    (
        rows.iter().map(|r| r.dice_infection).sum::<f64>() / n,
        rows.iter().map(|r| r.dice_ggo).sum::<f64>() / n,
        rows.iter().map(|r| r.dice_consolidation).sum::<f64>() / n,
    )
}
