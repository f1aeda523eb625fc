//! Lesion instances: 3D connected components of a target in the reference and the test
//! map, matched one-to-one by IoU.
//!
//! - Components use 26-connectivity by default ([`Connectivity::TwentySix`]), or 6.
//! - Detection at an IoU threshold ([`InstanceMatching::at`]): candidate pairs with
//!   IoU ≥ threshold are accepted greedily by decreasing IoU (ties: lower reference,
//!   then lower test id), each instance at most once. Precision = TP / test instances,
//!   recall = TP / reference instances, F1 = 2 TP / (2 TP + FP + FN). With no instances
//!   on either side all three are 1; with none on one side the undefined ratio is
//!   `None` and F1 is 0.
//! - [`InstanceMatching::sweep`]: the same at IoU 0.50, 0.55, …, 0.95.
//! - COCO-style AP ([`InstanceMatching::average_precision`], [`InstanceMatching::coco_ap`])
//!   for test instances scored by the caller (e.g. mean probability, see
//!   [`Instances::mean_values`]): detections in decreasing score order (stable) each take
//!   the unmatched reference instance of highest IoU ≥ threshold, as pycocotools'
//!   `evaluateImg`; precision is made monotone and sampled at the 101 recall points
//!   0, 0.01, …, 1 (0 past the last recall reached); AP is their mean. Thresholds are
//!   numpy's `linspace(.5, .95, 10)`. No area ranges and no detection limit. `None` when
//!   the reference has no instance (pycocotools' -1).

use std::collections::HashMap;

use super::{MetricsError, Target, check_same_grid, surface::bounding_box};
use crate::volume::{LabelVolume, Volume};

/// Voxel neighbourhood of connected components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Connectivity {
    /// Face neighbours.
    Six,
    /// Face, edge and corner neighbours.
    #[default]
    TwentySix,
}

/// Connected components of a mask, labelled on a box of the volume.
#[derive(Debug, Clone, PartialEq)]
pub struct Instances {
    /// First voxel of the labelled box.
    pub start: [usize; 3],
    /// Size of the labelled box (zeros when the mask is empty).
    pub size: [usize; 3],
    /// Component id per box voxel (i fastest): 0 background, 1..=count in raster order of
    /// their first voxel.
    pub ids: Vec<u32>,
    /// Voxels of component `id` at index `id - 1`.
    pub voxel_counts: Vec<u64>,
}

impl Instances {
    /// Number of components.
    pub fn count(&self) -> usize {
        self.voxel_counts.len()
    }

    /// Component id of volume voxel (i, j, k); 0 for background or outside the box.
    pub fn id_at(&self, i: usize, j: usize, k: usize) -> u32 {
        let p = [i, j, k];
        if (0..3).any(|a| p[a] < self.start[a] || p[a] >= self.start[a] + self.size[a]) {
            return 0;
        }
        let [x, y, z] = [0, 1, 2].map(|a| p[a] - self.start[a]);
        self.ids[x + self.size[0] * (y + self.size[1] * z)]
    }

    /// Mean of `values` over each component (index `id - 1`), e.g. the mean probability
    /// as a detection score. `values` must be on the labelled volume's grid.
    pub fn mean_values<T: Copy + Send + Sync + Into<f64>>(&self, values: &Volume<T>) -> Vec<f64> {
        let mut sums = vec![0.0f64; self.count()];
        let [sx, sy, sz] = self.size;
        for z in 0..sz {
            for y in 0..sy {
                for x in 0..sx {
                    let id = self.ids[x + sx * (y + sy * z)];
                    if id > 0 {
                        let v = values.get(x + self.start[0], y + self.start[1], z + self.start[2]);
                        sums[id as usize - 1] += v.into();
                    }
                }
            }
        }
        sums.iter()
            .zip(&self.voxel_counts)
            .map(|(s, &n)| s / n as f64)
            .collect()
    }
}

fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

/// Labels the components of `target` in `mask` on the box (`start`, `size`).
fn label_box(
    mask: &LabelVolume,
    target: Target,
    start: [usize; 3],
    size: [usize; 3],
    connectivity: Connectivity,
) -> Instances {
    let [sx, sy, sz] = size;
    let n = sx * sy * sz;
    let mut ids = vec![0u32; n];
    let mut parent: Vec<u32> = vec![0];
    let offsets: Vec<[isize; 3]> = {
        let mut v = Vec::new();
        for dk in -1isize..=0 {
            for dj in -1isize..=1 {
                for di in -1isize..=1 {
                    let before = dk < 0 || (dk == 0 && (dj < 0 || (dj == 0 && di < 0)));
                    let manhattan = di.abs() + dj.abs() + dk.abs();
                    let ok = match connectivity {
                        Connectivity::Six => manhattan == 1,
                        Connectivity::TwentySix => manhattan >= 1,
                    };
                    if before && ok {
                        v.push([di, dj, dk]);
                    }
                }
            }
        }
        v
    };
    // Offsets are all "before" the voxel: idx - linear (one slice back at most).
    let linear: Vec<usize> = offsets
        .iter()
        .map(|o| (-(o[0] + sx as isize * (o[1] + sy as isize * o[2]))) as usize)
        .collect();
    for z in 0..sz {
        for y in 0..sy {
            let row = mask.geometry.index(start[0], start[1] + y, start[2] + z);
            for x in 0..sx {
                if !target.hit(mask.voxels[row + x]) {
                    continue;
                }
                let idx = x + sx * (y + sy * z);
                let mut label = 0u32;
                let mut last_nb = 0u32;
                let interior = x > 0 && x + 1 < sx && y > 0 && y + 1 < sy && z > 0;
                for (o, &lin) in offsets.iter().zip(&linear) {
                    let nb = if interior {
                        ids[idx - lin]
                    } else {
                        let (nx, ny, nz) =
                            (x as isize + o[0], y as isize + o[1], z as isize + o[2]);
                        if nx < 0 || ny < 0 || nz < 0 || nx >= sx as isize || ny >= sy as isize {
                            continue;
                        }
                        ids[nx as usize + sx * (ny as usize + sy * nz as usize)]
                    };
                    if nb == 0 || nb == last_nb {
                        continue;
                    }
                    last_nb = nb;
                    if label == 0 {
                        label = find(&mut parent, nb);
                    } else {
                        let (a, b) = (find(&mut parent, label), find(&mut parent, nb));
                        if a != b {
                            let (lo, hi) = (a.min(b), a.max(b));
                            parent[hi as usize] = lo;
                            label = lo;
                        } else {
                            label = a;
                        }
                    }
                }
                if label == 0 {
                    label = parent.len() as u32;
                    parent.push(label);
                }
                ids[idx] = label;
            }
        }
    }
    // Resolve to compact ids in raster order of first appearance.
    let mut compact = vec![0u32; parent.len()];
    let mut voxel_counts = Vec::new();
    for id in ids.iter_mut() {
        if *id == 0 {
            continue;
        }
        let root = find(&mut parent, *id) as usize;
        if compact[root] == 0 {
            voxel_counts.push(0);
            compact[root] = voxel_counts.len() as u32;
        }
        *id = compact[root];
        voxel_counts[*id as usize - 1] += 1;
    }
    Instances {
        start,
        size,
        ids,
        voxel_counts,
    }
}

/// The connected components of `target` in `mask`, labelled on the mask's bounding box.
pub fn connected_components(
    mask: &LabelVolume,
    target: Target,
    connectivity: Connectivity,
) -> Instances {
    match bounding_box(mask, target) {
        Some((lo, hi)) => label_box(
            mask,
            target,
            lo,
            [0, 1, 2].map(|a| hi[a] - lo[a] + 1),
            connectivity,
        ),
        None => Instances {
            start: [0; 3],
            size: [0; 3],
            ids: Vec::new(),
            voxel_counts: Vec::new(),
        },
    }
}

/// Detection counts at one IoU threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectionCounts {
    pub iou_threshold: f64,
    pub true_positives: usize,
    /// Unmatched test instances.
    pub false_positives: usize,
    /// Unmatched reference instances.
    pub false_negatives: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: f64,
}

/// COCO-style average precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CocoAp {
    pub ap50: Option<f64>,
    pub ap75: Option<f64>,
    /// Mean over IoU 0.50:0.05:0.95.
    pub ap50_95: Option<f64>,
}

/// Reference and test instances on a common box, with the IoU of every overlapping pair.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMatching {
    pub reference: Instances,
    pub test: Instances,
    /// (reference id - 1, test id - 1, IoU) of every pair that overlaps, sorted by ids.
    pub pairs: Vec<(usize, usize, f64)>,
}

/// numpy's `linspace(.5, .95, 10)`, as pycocotools' `iouThrs`.
pub fn coco_iou_thresholds() -> [f64; 10] {
    let step = (0.95 - 0.5) / 9.0;
    let mut t = [0.0; 10];
    for (i, x) in t.iter_mut().enumerate() {
        *x = i as f64 * step + 0.5;
    }
    t[9] = 0.95;
    t
}

fn check_threshold(t: f64) -> Result<(), MetricsError> {
    if t > 0.0 && t <= 1.0 {
        Ok(())
    } else {
        Err(MetricsError::BadThreshold(t))
    }
}

/// Labels the components of `target` in both maps (on the box of their union) and
/// measures the IoU of every overlapping reference/test pair.
pub fn match_instances(
    reference: &LabelVolume,
    test: &LabelVolume,
    target: Target,
    connectivity: Connectivity,
) -> Result<InstanceMatching, MetricsError> {
    check_same_grid("reference", &reference.geometry, "test", &test.geometry)?;
    let boxes = [bounding_box(reference, target), bounding_box(test, target)];
    let (lo, hi) = boxes
        .iter()
        .flatten()
        .copied()
        .reduce(|(a0, a1), (b0, b1)| {
            (
                [0, 1, 2].map(|i| a0[i].min(b0[i])),
                [0, 1, 2].map(|i| a1[i].max(b1[i])),
            )
        })
        .unwrap_or(([0; 3], [0; 3]));
    let size = if boxes.iter().all(Option::is_none) {
        [0; 3]
    } else {
        [0, 1, 2].map(|a| hi[a] - lo[a] + 1)
    };
    let r = label_box(reference, target, lo, size, connectivity);
    let t = label_box(test, target, lo, size, connectivity);
    let mut inter: HashMap<(u32, u32), u64> = HashMap::new();
    let (mut run, mut run_len) = ((0u32, 0u32), 0u64);
    for (&a, &b) in r.ids.iter().zip(&t.ids) {
        if a > 0 && b > 0 {
            if (a, b) != run {
                if run_len > 0 {
                    *inter.entry(run).or_default() += run_len;
                }
                run = (a, b);
                run_len = 0;
            }
            run_len += 1;
        }
    }
    if run_len > 0 {
        *inter.entry(run).or_default() += run_len;
    }
    let mut pairs: Vec<(usize, usize, f64)> = inter
        .into_iter()
        .map(|((a, b), n)| {
            let (a, b) = (a as usize - 1, b as usize - 1);
            let union = r.voxel_counts[a] + t.voxel_counts[b] - n;
            (a, b, n as f64 / union as f64)
        })
        .collect();
    pairs.sort_by_key(|p| (p.0, p.1));
    Ok(InstanceMatching {
        reference: r,
        test: t,
        pairs,
    })
}

impl InstanceMatching {
    /// Greedy one-to-one matching by decreasing IoU at `iou_threshold` (IoU ≥ it).
    pub fn at(&self, iou_threshold: f64) -> Result<DetectionCounts, MetricsError> {
        check_threshold(iou_threshold)?;
        let mut cand: Vec<&(usize, usize, f64)> =
            self.pairs.iter().filter(|p| p.2 >= iou_threshold).collect();
        cand.sort_by(|x, y| y.2.total_cmp(&x.2).then((x.0, x.1).cmp(&(y.0, y.1))));
        let mut used_r = vec![false; self.reference.count()];
        let mut used_t = vec![false; self.test.count()];
        let mut tp = 0;
        for &&(a, b, _) in &cand {
            if !used_r[a] && !used_t[b] {
                used_r[a] = true;
                used_t[b] = true;
                tp += 1;
            }
        }
        let (nr, nt) = (self.reference.count(), self.test.count());
        let (fp, fn_) = (nt - tp, nr - tp);
        let both_empty = nr == 0 && nt == 0;
        let ratio = |n: usize, d: usize| {
            if both_empty {
                Some(1.0)
            } else {
                (d > 0).then(|| n as f64 / d as f64)
            }
        };
        Ok(DetectionCounts {
            iou_threshold,
            true_positives: tp,
            false_positives: fp,
            false_negatives: fn_,
            precision: ratio(tp, nt),
            recall: ratio(tp, nr),
            f1: if both_empty {
                1.0
            } else {
                2.0 * tp as f64 / (2 * tp + fp + fn_) as f64
            },
        })
    }

    /// [`Self::at`] for IoU 0.50, 0.55, …, 0.95.
    pub fn sweep(&self) -> Vec<DetectionCounts> {
        coco_iou_thresholds()
            .iter()
            .filter_map(|&t| self.at(t).ok())
            .collect()
    }

    /// COCO-style AP at one IoU threshold for test instances scored by `scores`
    /// (index `id - 1`). `Ok(None)` when the reference has no instance.
    pub fn average_precision(
        &self,
        scores: &[f64],
        iou_threshold: f64,
    ) -> Result<Option<f64>, MetricsError> {
        check_threshold(iou_threshold)?;
        self.check_scores(scores)?;
        Ok(pooled_ap(&[(self, scores)], iou_threshold))
    }

    fn check_scores(&self, scores: &[f64]) -> Result<(), MetricsError> {
        if scores.len() != self.test.count() {
            return Err(MetricsError::LengthMismatch {
                what: "instance scores (one per test instance)",
                expected: self.test.count(),
                got: scores.len(),
            });
        }
        match scores.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            Some((index, &value)) => Err(MetricsError::NotFinite {
                what: "instance score",
                index,
                value,
            }),
            None => Ok(()),
        }
    }

    /// AP at IoU 0.5, 0.75 and the mean over 0.50:0.05:0.95.
    pub fn coco_ap(&self, scores: &[f64]) -> Result<CocoAp, MetricsError> {
        pooled_coco_ap(&[(self, scores)])
    }
}

/// AP at one IoU threshold over several images, as pycocotools computes it: every
/// image's detections ranked together by score, each matched greedily (highest IoU
/// first) to an unmatched reference instance of its own image; precision made monotone
/// and read at the 101 recall points. `None` when no image has a reference instance.
fn pooled_ap(images: &[(&InstanceMatching, &[f64])], t: f64) -> Option<f64> {
    let n_gt: usize = images.iter().map(|(m, _)| m.reference.count()).sum();
    if n_gt == 0 {
        return None;
    }
    let mut order: Vec<(usize, usize)> = images
        .iter()
        .enumerate()
        .flat_map(|(im, (_, scores))| (0..scores.len()).map(move |d| (im, d)))
        .collect();
    // Stable: ties keep image order, as pycocotools' mergesort does.
    order.sort_by(|&(ia, a), &(ib, b)| images[ib].1[b].total_cmp(&images[ia].1[a]));
    // IoUs by test instance, per image.
    let by_test: Vec<Vec<Vec<(usize, f64)>>> = images
        .iter()
        .map(|(m, _)| {
            let mut v = vec![Vec::new(); m.test.count()];
            for &(a, b, iou) in &m.pairs {
                v[b].push((a, iou));
            }
            v
        })
        .collect();
    let mut matched: Vec<Vec<bool>> = images
        .iter()
        .map(|(m, _)| vec![false; m.reference.count()])
        .collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut recall = Vec::with_capacity(order.len());
    let mut precision = Vec::with_capacity(order.len());
    let thr = t.min(1.0 - 1e-10);
    for &(im, d) in &order {
        let mut best: Option<(usize, f64)> = None;
        for &(g, iou) in &by_test[im][d] {
            if matched[im][g] || iou < thr {
                continue;
            }
            if best.is_none_or(|(_, b)| iou > b) {
                best = Some((g, iou));
            }
        }
        match best {
            Some((g, _)) => {
                matched[im][g] = true;
                tp += 1;
            }
            None => fp += 1,
        }
        recall.push(tp as f64 / n_gt as f64);
        precision.push(tp as f64 / (tp + fp) as f64);
    }
    for i in (1..precision.len()).rev() {
        if precision[i] > precision[i - 1] {
            precision[i - 1] = precision[i];
        }
    }
    let mut sum = 0.0;
    for i in 0..=100 {
        let r = if i == 100 { 1.0 } else { i as f64 * 0.01 };
        let idx = recall.partition_point(|&x| x < r);
        if idx < precision.len() {
            sum += precision[idx];
        }
    }
    Some(sum / 101.0)
}

/// COCO-style AP (0.5, 0.75, mean over 0.50:0.05:0.95) over several images, each with
/// its matching and one score per test instance (pycocotools' dataset-level AP).
pub fn pooled_coco_ap(images: &[(&InstanceMatching, &[f64])]) -> Result<CocoAp, MetricsError> {
    for (m, scores) in images {
        m.check_scores(scores)?;
    }
    let all: Vec<Option<f64>> = coco_iou_thresholds()
        .iter()
        .map(|&t| pooled_ap(images, t))
        .collect();
    let mean = if all.iter().all(Option::is_some) {
        Some(all.iter().flatten().sum::<f64>() / all.len() as f64)
    } else {
        None
    };
    Ok(CocoAp {
        ap50: all[0],
        ap75: all[5],
        ap50_95: mean,
    })
}
