//! What the Compare window shows beside the numbers: a voxel agreement map (true
//! positive / false positive / false negative voxels of one target), the axial slices
//! that agree least, and the ROC curve of per-slice scores.

use rayon::prelude::*;

use super::slices::SliceMetrics;
use super::{MetricsError, Target, check_same_grid};
use crate::volume::{LabelVolume, Volume};

/// Values written into an agreement map for each kind of voxel (0 elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgreementCodes {
    /// In both the reference and the test mask.
    pub true_positive: u8,
    /// In the test mask only.
    pub false_positive: u8,
    /// In the reference mask only.
    pub false_negative: u8,
}

/// The agreement map of `target`: each voxel is one of `codes` or 0 (in neither mask).
pub fn agreement_map(
    reference: &LabelVolume,
    test: &LabelVolume,
    target: Target,
    codes: AgreementCodes,
) -> Result<LabelVolume, MetricsError> {
    check_same_grid("reference", &reference.geometry, "test", &test.geometry)?;
    let voxels: Vec<u8> = reference
        .voxels
        .par_iter()
        .zip(&test.voxels)
        .map(|(&r, &t)| match (target.hit(r), target.hit(t)) {
            (true, true) => codes.true_positive,
            (false, true) => codes.false_positive,
            (true, false) => codes.false_negative,
            (false, false) => 0,
        })
        .collect();
    Ok(Volume {
        geometry: reference.geometry.clone(),
        voxels,
    })
}

/// Up to `n` axial slices (voxel index k, per-slice Dice) with the lowest Dice among
/// the slices where either map holds the target; ties in slice order.
pub fn worst_slices(slices: &SliceMetrics, n: usize) -> Vec<(usize, f64)> {
    let mut v: Vec<(usize, f64)> = slices
        .per_slice
        .iter()
        .filter(|s| s.reference_positive() || s.test_positive())
        .map(|s| (s.k, s.dice))
        .collect();
    v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// Per-slice scores and truth for a slice-level ROC: score = the slice's test voxels /
/// the largest slice's (all 0 when the test mask is empty), truth = the reference
/// holds the target in the slice.
pub fn slice_scores(slices: &SliceMetrics) -> (Vec<f64>, Vec<bool>) {
    let max = slices
        .per_slice
        .iter()
        .map(|s| s.test_voxels)
        .max()
        .unwrap_or(0);
    slices
        .per_slice
        .iter()
        .map(|s| {
            let score = if max == 0 {
                0.0
            } else {
                s.test_voxels as f64 / max as f64
            };
            (score, s.reference_positive())
        })
        .unzip()
}

/// The ROC curve of `scores` against `truth`: (false positive rate, true positive rate)
/// points from (0, 0) to (1, 1), one per distinct score (tied scores move diagonally,
/// so the trapezoid area under it equals [`super::roc_auc`]). Empty when there are no
/// positives or no negatives, or the lengths differ.
pub fn roc_curve(scores: &[f64], truth: &[bool]) -> Vec<[f64; 2]> {
    let n_pos = truth.iter().filter(|&&t| t).count();
    let n_neg = truth.len() - n_pos;
    if scores.len() != truth.len() || n_pos == 0 || n_neg == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![[0.0, 0.0]];
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if truth[order[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        points.push([fp as f64 / n_neg as f64, tp as f64 / n_pos as f64]);
        i = j;
    }
    points
}

/// Trapezoid area under a curve of (x, y) points sorted by x.
pub fn area_under(points: &[[f64; 2]]) -> f64 {
    points
        .windows(2)
        .map(|w| (w[1][0] - w[0][0]) * (w[1][1] + w[0][1]) / 2.0)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{roc_auc, slice_metrics};
    use crate::volume::Geometry;

    const CODES: AgreementCodes = AgreementCodes {
        true_positive: 250,
        false_positive: 251,
        false_negative: 252,
    };

    fn maps() -> (LabelVolume, LabelVolume) {
        let g = Geometry::axis_aligned([4, 2, 3], [1.0; 3], [0.0; 3]);
        let mut r = Volume::filled(g.clone(), 0u8).expect("grid");
        let mut t = Volume::filled(g, 0u8).expect("grid");
        // k = 0: perfect (2 voxels); k = 1: half (ref 2, test 1 shared + 1 other);
        // k = 2: test only.
        for i in 0..2 {
            r.set(i, 0, 0, 3);
            t.set(i, 0, 0, 3);
            r.set(i, 1, 1, 3);
        }
        t.set(0, 1, 1, 3);
        t.set(3, 1, 1, 3);
        t.set(2, 0, 2, 3);
        r.set(3, 0, 2, 1);
        (r, t)
    }

    #[test]
    fn agreement_map_codes() {
        let (r, t) = maps();
        let a = agreement_map(&r, &t, Target::Label(3), CODES).expect("same grid");
        assert_eq!(a.get(0, 0, 0), 250);
        assert_eq!(a.get(1, 1, 1), 252);
        assert_eq!(a.get(3, 1, 1), 251);
        assert_eq!(a.get(2, 0, 2), 251);
        assert_eq!(a.get(3, 0, 2), 0, "another label is background for label 3");
        let count = |v: u8| a.voxels.iter().filter(|&&x| x == v).count();
        assert_eq!((count(250), count(251), count(252)), (3, 2, 1));
        let any = agreement_map(&r, &t, Target::AnyForeground, CODES).expect("same grid");
        assert_eq!(any.get(3, 0, 2), 252);
        let g = Geometry::axis_aligned([4, 2, 2], [1.0; 3], [0.0; 3]);
        let small = Volume::filled(g, 0u8).expect("grid");
        assert!(agreement_map(&r, &small, Target::AnyForeground, CODES).is_err());
    }

    #[test]
    fn worst_slices_skip_empty_ones() {
        let (r, t) = maps();
        let s = slice_metrics(&r, &t, Target::Label(3)).expect("same grid");
        let w = worst_slices(&s, 5);
        assert_eq!(w.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 1, 0]);
        assert_eq!(w[0].1, 0.0);
        assert_eq!(w[1].1, 0.5);
        assert_eq!(worst_slices(&s, 1).len(), 1);
        let s5 = slice_metrics(&r, &t, Target::Label(5)).expect("same grid");
        assert!(worst_slices(&s5, 5).is_empty());
    }

    #[test]
    fn roc_curve_area_matches_roc_auc() {
        let (r, t) = maps();
        let s = slice_metrics(&r, &t, Target::Label(3)).expect("same grid");
        let (scores, truth) = slice_scores(&s);
        assert_eq!(scores, [1.0, 1.0, 0.5]);
        assert_eq!(truth, [true, true, false]);
        let curve = roc_curve(&scores, &truth);
        assert_eq!(curve, [[0.0, 0.0], [0.0, 1.0], [1.0, 1.0]]);
        assert_eq!(Some(area_under(&curve)), roc_auc(&scores, &truth).unwrap());
        // Ties and a mixed order.
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.0, 0.9];
        let truth = [false, true, false, true, false, false, true];
        let curve = roc_curve(&scores, &truth);
        let auc = roc_auc(&scores, &truth).unwrap().unwrap();
        assert!((area_under(&curve) - auc).abs() < 1e-12);
        assert_eq!(curve.first(), Some(&[0.0, 0.0]));
        assert_eq!(curve.last(), Some(&[1.0, 1.0]));
        assert!(roc_curve(&[0.5], &[true]).is_empty());
    }
}
