//! Voxel overlap: one pass builds the joint histogram of (reference value, test value),
//! from which the confusion counts of every label and of "any foreground" follow.

use rayon::prelude::*;

use super::{MetricsError, Target, check_same_grid, voxel_volume_ml};
use crate::volume::LabelVolume;

/// How many voxels have each (reference value, test value) pair.
#[derive(Debug, Clone, PartialEq)]
pub struct JointHistogram {
    /// `counts[r * 256 + t]`.
    counts: Vec<u64>,
}

const CHUNK: usize = 1 << 18;

impl JointHistogram {
    /// Counts all voxels of the two maps (parallel, one pass, no per-voxel allocation).
    pub fn new(reference: &LabelVolume, test: &LabelVolume) -> Result<Self, MetricsError> {
        check_same_grid("reference", &reference.geometry, "test", &test.geometry)?;
        let counts = reference
            .voxels
            .par_chunks(CHUNK)
            .zip(test.voxels.par_chunks(CHUNK))
            .fold(
                || vec![0u64; 65536],
                |mut h, (a, b)| {
                    let mut zeros = 0u64;
                    let mut ca = a.chunks_exact(8);
                    let mut cb = b.chunks_exact(8);
                    for (x, y) in (&mut ca).zip(&mut cb) {
                        let wx = u64::from_ne_bytes(x.try_into().unwrap_or([1; 8]));
                        let wy = u64::from_ne_bytes(y.try_into().unwrap_or([1; 8]));
                        if wx | wy == 0 {
                            zeros += 8;
                        } else {
                            for (&r, &t) in x.iter().zip(y) {
                                h[((r as usize) << 8) | t as usize] += 1;
                            }
                        }
                    }
                    for (&r, &t) in ca.remainder().iter().zip(cb.remainder()) {
                        h[((r as usize) << 8) | t as usize] += 1;
                    }
                    h[0] += zeros;
                    h
                },
            )
            .reduce(
                || vec![0u64; 65536],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(&b) {
                        *x += y;
                    }
                    a
                },
            );
        Ok(Self { counts })
    }

    /// Voxels whose reference value is `r` and test value `t`.
    pub fn count(&self, r: u8, t: u8) -> u64 {
        self.counts[((r as usize) << 8) | t as usize]
    }

    /// All voxels.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The non-zero values found in either map, ascending.
    pub fn nonzero_values_present(&self) -> Vec<u8> {
        (1..=255u8)
            .filter(|&v| (0..=255u8).any(|o| self.count(v, o) > 0 || self.count(o, v) > 0))
            .collect()
    }

    /// TP / FP / FN / TN of `target` (reference = truth).
    pub fn confusion(&self, target: Target) -> ConfusionCounts {
        let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
        for r in 0..=255u8 {
            for t in 0..=255u8 {
                let c = self.count(r, t);
                if c == 0 {
                    continue;
                }
                match (target.hit(r), target.hit(t)) {
                    (true, true) => tp += c,
                    (false, true) => fp += c,
                    (true, false) => fn_ += c,
                    (false, false) => tn += c,
                }
            }
        }
        ConfusionCounts {
            true_positive: tp,
            false_positive: fp,
            false_negative: fn_,
            true_negative: tn,
        }
    }
}

/// Voxel confusion counts, the reference being the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfusionCounts {
    pub true_positive: u64,
    pub false_positive: u64,
    pub false_negative: u64,
    pub true_negative: u64,
}

impl ConfusionCounts {
    /// Voxels in the reference mask (TP + FN).
    pub fn reference_voxels(&self) -> u64 {
        self.true_positive + self.false_negative
    }
    /// Voxels in the test mask (TP + FP).
    pub fn test_voxels(&self) -> u64 {
        self.true_positive + self.false_positive
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Overlap metrics of one target. Conventions for empty masks are in the module doc of
/// [`crate::metrics`]; nothing is NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlapMetrics {
    pub counts: ConfusionCounts,
    /// 2 TP / (2 TP + FP + FN); 1 when both masks are empty.
    pub dice: f64,
    /// Jaccard index (IoU): TP / (TP + FP + FN); 1 when both masks are empty.
    pub jaccard: f64,
    /// 1 - |FN - FP| / (2 TP + FP + FN); 1 when both masks are empty.
    pub volume_similarity: f64,
    /// (|test| - |ref|) / |ref| * 100; `None` when the reference is empty.
    pub relative_volume_difference_pct: Option<f64>,
    /// TP / (TP + FN); `None` when the reference is empty.
    pub sensitivity: Option<f64>,
    /// TN / (TN + FP); `None` when there is no reference background.
    pub specificity: Option<f64>,
    /// FP / (FP + TN) = 1 - specificity.
    pub false_positive_rate: Option<f64>,
    /// FN / (FN + TP) = 1 - sensitivity.
    pub false_negative_rate: Option<f64>,
    pub reference_volume_ml: f64,
    pub test_volume_ml: f64,
}

impl OverlapMetrics {
    /// The metrics of `counts`, with voxels of `voxel_volume_ml` millilitres.
    pub fn from_counts(counts: ConfusionCounts, voxel_volume_ml: f64) -> Self {
        let ConfusionCounts {
            true_positive: tp,
            false_positive: fp,
            false_negative: fn_,
            true_negative: tn,
        } = counts;
        let union = tp + fp + fn_;
        let (dice, jaccard, volume_similarity) = if union == 0 {
            (1.0, 1.0, 1.0)
        } else {
            (
                2.0 * tp as f64 / (2 * tp + fp + fn_) as f64,
                tp as f64 / union as f64,
                1.0 - fn_.abs_diff(fp) as f64 / (2 * tp + fp + fn_) as f64,
            )
        };
        let r = counts.reference_voxels();
        let t = counts.test_voxels();
        Self {
            counts,
            dice,
            jaccard,
            volume_similarity,
            relative_volume_difference_pct: (r > 0)
                .then(|| (t as f64 - r as f64) / r as f64 * 100.0),
            sensitivity: ratio(tp, tp + fn_),
            specificity: ratio(tn, tn + fp),
            false_positive_rate: ratio(fp, fp + tn),
            false_negative_rate: ratio(fn_, fn_ + tp),
            reference_volume_ml: r as f64 * voxel_volume_ml,
            test_volume_ml: t as f64 * voxel_volume_ml,
        }
    }
}

/// Overlap metrics of one target (a histogram pass; use [`JointHistogram`] directly to
/// get several targets from one pass).
pub fn overlap_metrics(
    reference: &LabelVolume,
    test: &LabelVolume,
    target: Target,
) -> Result<OverlapMetrics, MetricsError> {
    let h = JointHistogram::new(reference, test)?;
    Ok(OverlapMetrics::from_counts(
        h.confusion(target),
        voxel_volume_ml(&reference.geometry),
    ))
}
