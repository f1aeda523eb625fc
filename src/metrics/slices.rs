//! Slice-level metrics on axial slices (constant k).
//!
//! A slice is *positive* when it holds at least one voxel of the mask. Per slice:
//! Dice (1 when both slices are empty) and IoU with the lesion seed's convention: 1 for
//! a slice negative in both, 0 for a false-positive slice (test positive, reference
//! negative) — which is what IoU with "both empty = 1" gives. Slice detection counts
//! (TP/FP/FN/TN slices) give slice sensitivity, specificity and accuracy.
//!
//! [`roc_auc`] is the area under the ROC curve of per-slice (or any) scores against
//! binary truth, in the Mann-Whitney formulation with ties counted as one half.

use rayon::prelude::*;

use super::{MetricsError, Target, check_same_grid};
use crate::volume::LabelVolume;

/// One axial slice of the comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceOverlap {
    pub k: usize,
    pub reference_voxels: u64,
    pub test_voxels: u64,
    pub intersection_voxels: u64,
    /// 2|R∩T| / (|R|+|T|); 1 when both are empty.
    pub dice: f64,
    /// |R∩T| / |R∪T|; 1 when both are empty (0 for a false-positive slice).
    pub iou: f64,
}

impl SliceOverlap {
    pub fn reference_positive(&self) -> bool {
        self.reference_voxels > 0
    }
    pub fn test_positive(&self) -> bool {
        self.test_voxels > 0
    }
}

/// Slice-level summary.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceMetrics {
    pub per_slice: Vec<SliceOverlap>,
    /// Slices positive in both.
    pub true_positive_slices: usize,
    /// Positive in test only.
    pub false_positive_slices: usize,
    /// Positive in reference only.
    pub false_negative_slices: usize,
    /// Negative in both.
    pub true_negative_slices: usize,
    /// TP / (TP + FN) over slices; `None` without reference-positive slices.
    pub sensitivity: Option<f64>,
    /// TN / (TN + FP) over slices; `None` without reference-negative slices.
    pub specificity: Option<f64>,
    /// (TP + TN) / slices.
    pub accuracy: f64,
    /// Mean per-slice IoU over all slices (seed convention).
    pub mean_iou: f64,
    /// Mean per-slice Dice over all slices (both-empty slices count 1).
    pub mean_dice: f64,
    /// Mean per-slice Dice over the reference-positive slices; `None` without any.
    pub mean_dice_reference_positive: Option<f64>,
}

/// Per-slice overlap of `target` and the slice detection summary.
pub fn slice_metrics(
    reference: &LabelVolume,
    test: &LabelVolume,
    target: Target,
) -> Result<SliceMetrics, MetricsError> {
    check_same_grid("reference", &reference.geometry, "test", &test.geometry)?;
    let [nx, ny, _] = reference.geometry.dims;
    let plane = nx * ny;
    let per_slice: Vec<SliceOverlap> = reference
        .voxels
        .par_chunks(plane)
        .zip(test.voxels.par_chunks(plane))
        .enumerate()
        .map(|(k, (r, t))| {
            let (mut nr, mut nt, mut ni) = (0u64, 0u64, 0u64);
            for (&a, &b) in r.iter().zip(t) {
                let (ha, hb) = (target.hit(a), target.hit(b));
                nr += ha as u64;
                nt += hb as u64;
                ni += (ha && hb) as u64;
            }
            let union = nr + nt - ni;
            SliceOverlap {
                k,
                reference_voxels: nr,
                test_voxels: nt,
                intersection_voxels: ni,
                dice: if union == 0 {
                    1.0
                } else {
                    2.0 * ni as f64 / (nr + nt) as f64
                },
                iou: if union == 0 {
                    1.0
                } else {
                    ni as f64 / union as f64
                },
            }
        })
        .collect();
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    for s in &per_slice {
        match (s.reference_positive(), s.test_positive()) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
    }
    let n = per_slice.len();
    let ratio = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    let pos: Vec<f64> = per_slice
        .iter()
        .filter(|s| s.reference_positive())
        .map(|s| s.dice)
        .collect();
    Ok(SliceMetrics {
        true_positive_slices: tp,
        false_positive_slices: fp,
        false_negative_slices: fn_,
        true_negative_slices: tn,
        sensitivity: ratio(tp, tp + fn_),
        specificity: ratio(tn, tn + fp),
        accuracy: (tp + tn) as f64 / n as f64,
        mean_iou: per_slice.iter().map(|s| s.iou).sum::<f64>() / n as f64,
        mean_dice: per_slice.iter().map(|s| s.dice).sum::<f64>() / n as f64,
        mean_dice_reference_positive: (!pos.is_empty())
            .then(|| pos.iter().sum::<f64>() / pos.len() as f64),
        per_slice,
    })
}

/// ROC AUC of `scores` against `truth` (Mann-Whitney U / (n_pos n_neg), ties between a
/// positive and a negative count one half, via average ranks). `Ok(None)` when there
/// are no positives or no negatives; an error when lengths differ or a score is not
/// finite.
pub fn roc_auc(scores: &[f64], truth: &[bool]) -> Result<Option<f64>, MetricsError> {
    if scores.len() != truth.len() {
        return Err(MetricsError::LengthMismatch {
            what: "ROC truth values (one per score)",
            expected: scores.len(),
            got: truth.len(),
        });
    }
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MetricsError::NotFinite {
            what: "ROC score",
            index,
            value,
        });
    }
    let n_pos = truth.iter().filter(|&&t| t).count();
    let n_neg = truth.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the (1-based, tie-averaged) ranks of the positives, doubled to stay integer.
    let mut rank_sum2: u128 = 0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1; average = (i + j + 2) / 2.
        let pos_in_group = order[i..=j].iter().filter(|&&o| truth[o]).count() as u128;
        rank_sum2 += pos_in_group * (i + j + 2) as u128;
        i = j + 1;
    }
    let np = n_pos as f64;
    let u = rank_sum2 as f64 / 2.0 - np * (np + 1.0) / 2.0;
    Ok(Some(u / (np * n_neg as f64)))
}
