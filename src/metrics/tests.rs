use super::*;
use crate::volume::{CtVolume, Geometry, LabelVolume, Volume};

const SP: [f64; 3] = [0.5, 0.7, 2.0];

fn empty(dims: [usize; 3], spacing: [f64; 3]) -> LabelVolume {
    Volume::filled(Geometry::axis_aligned(dims, spacing, [0.0; 3]), 0u8).unwrap()
}

fn with_box(mut v: LabelVolume, lo: [usize; 3], hi: [usize; 3], value: u8) -> LabelVolume {
    for k in lo[2]..hi[2] {
        for j in lo[1]..hi[1] {
            for i in lo[0]..hi[0] {
                v.set(i, j, k, value);
            }
        }
    }
    v
}

fn cube(offset: [usize; 3]) -> LabelVolume {
    let lo = [1 + offset[0], 1 + offset[1], 1 + offset[2]];
    with_box(empty([7, 7, 7], SP), lo, lo.map(|x| x + 3), 1)
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn cube_shifted_along_i_overlap_and_surface() {
    let a = cube([0; 3]);
    let b = cube([1, 0, 0]);
    let o = overlap_metrics(&a, &b, Target::Label(1)).unwrap();
    assert_eq!(o.counts.true_positive, 18);
    assert_eq!(o.counts.false_positive, 9);
    assert_eq!(o.counts.false_negative, 9);
    assert_eq!(o.counts.true_negative, 343 - 36);
    close(o.dice, 2.0 / 3.0);
    close(o.jaccard, 0.5);
    close(o.volume_similarity, 1.0);
    close(o.relative_volume_difference_pct.unwrap(), 0.0);
    close(o.sensitivity.unwrap(), 18.0 / 27.0);
    close(o.false_negative_rate.unwrap(), 9.0 / 27.0);
    close(o.specificity.unwrap(), 307.0 / 316.0);
    close(o.false_positive_rate.unwrap(), 9.0 / 316.0);
    close(o.reference_volume_ml, 27.0 * 0.7 / 1000.0);

    let s = surface_distances(&a, &b, Target::Label(1)).unwrap();
    assert_eq!(s.reference_boundary_voxels, 26);
    assert_eq!(s.test_boundary_voxels, 26);
    close(s.hausdorff_mm.unwrap(), 0.5);
    close(s.hd95_mm.unwrap(), 0.5);
    // 10 of the 26 boundary voxels each way are 0.5 mm away, the others 0.
    close(s.assd_mm.unwrap(), 10.0 / 52.0);
}

#[test]
fn cube_shifted_along_k_surface() {
    let a = cube([0; 3]);
    let b = cube([0, 0, 1]);
    let s = surface_distances(&a, &b, Target::AnyForeground).unwrap();
    close(s.hausdorff_mm.unwrap(), 2.0);
    // Per direction: 9 voxels at 2.0 (the far face), the face centre beyond the overlap
    // at 0.5 (an i neighbour is on the other boundary), 16 at 0.
    close(s.hd95_mm.unwrap(), 2.0);
    close(s.assd_mm.unwrap(), 2.0 * (9.0 * 2.0 + 0.5) / 52.0);
    let mut d = directed_surface_distances(&a, &b, Target::Label(1))
        .unwrap()
        .unwrap();
    d.reference_to_test_mm.sort_by(f64::total_cmp);
    assert_eq!(d.reference_to_test_mm[15], 0.0);
    assert_eq!(d.reference_to_test_mm[16], 0.5);
    assert_eq!(d.reference_to_test_mm[17], 2.0);
}

#[test]
fn empty_cases_are_documented_values() {
    let e = empty([5, 5, 5], SP);
    let c = compare(&e, &e, &[1]).unwrap();
    let l = &c.per_label[0];
    assert_eq!(l.overlap.dice, 1.0);
    assert_eq!(l.overlap.jaccard, 1.0);
    assert_eq!(l.overlap.sensitivity, None);
    assert_eq!(l.overlap.relative_volume_difference_pct, None);
    assert_eq!(l.surface.hausdorff_mm, Some(0.0));
    assert_eq!(l.surface.hd95_mm, Some(0.0));
    assert_eq!(l.surface.assd_mm, Some(0.0));

    let a = cube([0; 3]);
    let one = compare(&a, &empty([7, 7, 7], SP), &[1, 2]).unwrap();
    let l = &one.per_label[0];
    assert_eq!(l.overlap.dice, 0.0);
    assert_eq!(l.overlap.jaccard, 0.0);
    assert_eq!(l.overlap.sensitivity, Some(0.0));
    assert_eq!(l.overlap.relative_volume_difference_pct, Some(-100.0));
    assert_eq!(l.surface.hausdorff_mm, None);
    assert_eq!(l.surface.assd_mm, None);
    // Label 2 is in neither.
    assert_eq!(one.per_label[1].overlap.dice, 1.0);
    assert_eq!(one.foreground.overlap.dice, 0.0);
    let text = one.to_string();
    assert!(text.contains("n/a"), "{text}");
    assert!(!text.contains("NaN") && !text.contains("inf"), "{text}");
}

#[test]
fn compare_foreground_spans_labels() {
    let a = with_box(cube([0; 3]), [1, 1, 1], [4, 4, 2], 2);
    let b = cube([0; 3]);
    let c = compare(&a, &b, &[1, 2]).unwrap();
    assert_eq!(c.foreground.overlap.dice, 1.0);
    assert_eq!(c.foreground.surface.hausdorff_mm, Some(0.0));
    close(c.per_label[0].overlap.dice, 2.0 * 18.0 / 45.0);
    assert_eq!(c.per_label[1].overlap.dice, 0.0);
    assert_eq!(c.per_label[1].surface.hausdorff_mm, None);
}

#[test]
fn grid_mismatch_describes_both() {
    let a = empty([5, 5, 5], SP);
    let b = empty([5, 5, 6], SP);
    let e = compare(&a, &b, &[1]).unwrap_err();
    assert!(matches!(e, MetricsError::GridMismatch { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("[5, 5, 5]") && msg.contains("[5, 5, 6]"),
        "{msg}"
    );
    let c = empty([5, 5, 5], [0.5, 0.7, 2.5]);
    let msg = overlap_metrics(&a, &c, Target::AnyForeground)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("2.5") && msg.contains("2.0"), "{msg}");
}

#[test]
fn volume_edge_voxels_are_boundary() {
    let full = with_box(empty([3, 3, 3], SP), [0; 3], [3; 3], 1);
    let s = surface_distances(&full, &full, Target::Label(1)).unwrap();
    assert_eq!(s.reference_boundary_voxels, 26);
    assert_eq!(s.hausdorff_mm, Some(0.0));
    // Against its centre voxel alone: the corners are farthest.
    let centre = with_box(empty([3, 3, 3], SP), [1; 3], [2; 3], 1);
    let s = surface_distances(&full, &centre, Target::Label(1)).unwrap();
    close(s.hausdorff_mm.unwrap(), (0.25f64 + 0.49 + 4.0).sqrt());
}

#[test]
fn edt_matches_brute_force_on_a_small_grid() {
    let dims = [6, 5, 4];
    let n = 120;
    let feature: Vec<bool> = (0..n).map(|x| (x * 37 + 11) % 23 == 0).collect();
    let d = squared_distance_transform(&feature, dims, SP);
    let pos = |x: usize| [x % 6, (x / 6) % 5, x / 30];
    for (p, &dp) in d.iter().enumerate() {
        let best = (0..n)
            .filter(|&q| feature[q])
            .map(|q| {
                let (a, b) = (pos(p), pos(q));
                (0..3)
                    .map(|i| ((a[i] as f64 - b[i] as f64) * SP[i]).powi(2))
                    .sum::<f64>()
            })
            .fold(f64::INFINITY, f64::min);
        assert!((dp - best).abs() < 1e-9, "voxel {p}: {dp} vs {best}");
    }
    let none = squared_distance_transform(&[false; 8], [2, 2, 2], SP);
    assert!(none.iter().all(|v| *v == f64::INFINITY));
}

#[test]
fn percentile_is_numpy_linear() {
    let mut v = vec![4.0, 1.0, 3.0, 2.0];
    close(percentile_linear(&mut v, 95.0).unwrap(), 3.85);
    close(percentile_linear(&mut v, 50.0).unwrap(), 2.5);
    close(percentile_linear(&mut v, 100.0).unwrap(), 4.0);
    close(percentile_linear(&mut [7.0], 95.0).unwrap(), 7.0);
    assert_eq!(percentile_linear(&mut [], 95.0), None);
}

#[test]
fn roc_auc_mann_whitney_with_ties() {
    let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
    close(auc.unwrap(), 0.75);
    close(roc_auc(&[0.5, 0.5], &[true, false]).unwrap().unwrap(), 0.5);
    close(
        roc_auc(&[0.2, 0.5, 0.5, 0.9], &[false, true, false, true])
            .unwrap()
            .unwrap(),
        (1.0 + 0.5 + 1.0 + 1.0) / 4.0,
    );
    assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]).unwrap(), None);
    assert!(matches!(
        roc_auc(&[0.1], &[true, false]),
        Err(MetricsError::LengthMismatch { .. })
    ));
    assert!(matches!(
        roc_auc(&[f64::NAN, 0.1], &[true, false]),
        Err(MetricsError::NotFinite { index: 0, .. })
    ));
}

#[test]
fn slice_level_conventions() {
    // 4 slices: k=0 negative in both, k=1 both positive (overlapping), k=2 false
    // positive, k=3 false negative.
    let mut r = empty([4, 4, 4], SP);
    let mut t = empty([4, 4, 4], SP);
    r = with_box(r, [0, 0, 1], [2, 2, 2], 1); // 4 voxels
    t = with_box(t, [1, 0, 1], [3, 2, 2], 1); // 4 voxels, 2 shared
    t.set(0, 0, 2, 1);
    r.set(3, 3, 3, 1);
    let s = slice_metrics(&r, &t, Target::Label(1)).unwrap();
    assert_eq!(s.per_slice[0].iou, 1.0);
    assert_eq!(s.per_slice[0].dice, 1.0);
    close(s.per_slice[1].iou, 2.0 / 6.0);
    close(s.per_slice[1].dice, 0.5);
    assert_eq!(s.per_slice[2].iou, 0.0);
    assert_eq!(s.per_slice[3].iou, 0.0);
    assert_eq!(
        (
            s.true_positive_slices,
            s.false_positive_slices,
            s.false_negative_slices,
            s.true_negative_slices
        ),
        (1, 1, 1, 1)
    );
    close(s.sensitivity.unwrap(), 0.5);
    close(s.specificity.unwrap(), 0.5);
    close(s.accuracy, 0.5);
    close(s.mean_iou, (1.0 + 1.0 / 3.0) / 4.0);
    close(s.mean_dice, 1.5 / 4.0);
    close(s.mean_dice_reference_positive.unwrap(), 0.25);
}

#[test]
fn instances_connectivity_and_matching() {
    let g = [8, 8, 8];
    // Reference: a 2x2x2 block and, diagonal to each other, two single voxels.
    let mut r = with_box(empty(g, SP), [0, 0, 0], [2, 2, 2], 3);
    r.set(5, 5, 5, 3);
    r.set(6, 6, 6, 3);
    assert_eq!(
        connected_components(&r, Target::Label(3), Connectivity::TwentySix).count(),
        2
    );
    let six = connected_components(&r, Target::Label(3), Connectivity::Six);
    assert_eq!(six.count(), 3);
    assert_eq!(six.voxel_counts, vec![8, 1, 1]);
    assert_eq!(six.id_at(6, 6, 6), 3);
    assert_eq!(six.id_at(7, 7, 7), 0);

    // Test: the block shifted (IoU 4/12), the diagonal pair exactly, one false positive.
    let mut t = with_box(empty(g, SP), [1, 0, 0], [3, 2, 2], 3);
    t.set(5, 5, 5, 3);
    t.set(6, 6, 6, 3);
    t.set(0, 7, 7, 3);
    let m = match_instances(&r, &t, Target::Label(3), Connectivity::default()).unwrap();
    assert_eq!((m.reference.count(), m.test.count()), (2, 3));
    let at25 = m.at(0.25).unwrap();
    assert_eq!(at25.true_positives, 2);
    close(at25.precision.unwrap(), 2.0 / 3.0);
    close(at25.recall.unwrap(), 1.0);
    close(at25.f1, 0.8);
    let at50 = m.at(0.5).unwrap();
    assert_eq!(
        (
            at50.true_positives,
            at50.false_positives,
            at50.false_negatives
        ),
        (1, 2, 1)
    );
    close(at50.f1, 0.4);
    let sweep = m.sweep();
    assert_eq!(sweep.len(), 10);
    assert!(sweep.iter().all(|d| d.true_positives == 1));
    assert!(m.at(0.0).is_err());

    // Empty on both sides.
    let e = empty(g, SP);
    let m0 = match_instances(&e, &e, Target::Label(3), Connectivity::Six).unwrap();
    let d = m0.at(0.5).unwrap();
    assert_eq!((d.precision, d.recall, d.f1), (Some(1.0), Some(1.0), 1.0));
    assert_eq!(m0.coco_ap(&[]).unwrap().ap50, None);
}

#[test]
fn coco_ap_by_hand() {
    let g = [9, 3, 3];
    let r = {
        let mut v = empty(g, SP);
        v.set(0, 0, 0, 1);
        v.set(8, 0, 0, 1);
        v
    };
    let mut t = r.clone();
    t.set(4, 0, 0, 1);
    let m = match_instances(&r, &t, Target::Label(1), Connectivity::TwentySix).unwrap();
    // Test ids in raster order: (0,0,0)=1, (4,0,0)=2 (false positive), (8,0,0)=3.
    let scores = [0.9, 0.8, 0.7];
    // Ranked: TP, FP, TP: recall .5 .5 1, precision 1 .5 .667 -> interpolated 1, 2/3, 2/3.
    let expected = (51.0 + 50.0 * 2.0 / 3.0) / 101.0;
    close(
        m.average_precision(&scores, 0.5).unwrap().unwrap(),
        expected,
    );
    let ap = m.coco_ap(&scores).unwrap();
    close(ap.ap50.unwrap(), expected);
    close(ap.ap75.unwrap(), expected);
    close(ap.ap50_95.unwrap(), expected);
    // The false positive ranked last: perfect AP.
    close(
        m.average_precision(&[0.9, 0.1, 0.7], 0.5).unwrap().unwrap(),
        1.0,
    );
    assert!(m.average_precision(&[0.9], 0.5).is_err());
    // Mean probability as score.
    let prob = Volume::filled(r.geometry.clone(), 0.25f32).unwrap();
    assert_eq!(m.test.mean_values(&prob), vec![0.25; 3]);

    // Pooled over images (pycocotools ranks all images' detections together): one image
    // alone gives its own AP; with a second image whose only detection is a false
    // positive scored 0.85, the ranking is TP .9, FP .85, FP .8, TP .7 over 3 references.
    let pooled = crate::metrics::instances::pooled_coco_ap(&[(&m, &scores[..])]).unwrap();
    close(pooled.ap50.unwrap(), expected);
    let r2 = {
        let mut v = empty(g, SP);
        v.set(0, 2, 2, 1);
        v
    };
    let t2 = {
        let mut v = empty(g, SP);
        v.set(8, 2, 2, 1);
        v
    };
    let m2 = match_instances(&r2, &t2, Target::Label(1), Connectivity::TwentySix).unwrap();
    let both = crate::metrics::instances::pooled_coco_ap(&[(&m, &scores[..]), (&m2, &[0.85][..])])
        .unwrap();
    // recall 1/3 1/3 1/3 2/3, precision 1 .5 1/3 .5 -> interpolated 1 .5 .5 .5:
    // recall points 0..=0.33 (34 of them) read 1, 0.34..=0.66 (33) read 0.5, the rest 0.
    close(both.ap50.unwrap(), (34.0 + 33.0 * 0.5) / 101.0);
    assert!(crate::metrics::instances::pooled_coco_ap(&[(&m, &[0.5][..])]).is_err());
}

#[test]
fn intensity_definitions() {
    let g = Geometry::axis_aligned([4, 1, 1], [1.0; 3], [0.0; 3]);
    let ct: CtVolume = Volume::new(g.clone(), vec![-800, -600, 40, 100]).unwrap();
    let r: LabelVolume = Volume::new(g.clone(), vec![1, 1, 0, 0]).unwrap();
    let t: LabelVolume = Volume::new(g.clone(), vec![0, 1, 1, 0]).unwrap();
    let m = intensity_metrics(&ct, &r, &t, Target::Label(1)).unwrap();
    // Union = voxels 0..3: Ip - Ir = [0 - (-800), 0, 40 - 0].
    close(m.mean_error_hu, (800.0 + 40.0) / 3.0);
    close(m.mean_absolute_error_hu, (800.0 + 40.0) / 3.0);
    close(m.mean_hu_reference.unwrap(), -700.0);
    close(m.mean_hu_test.unwrap(), -280.0);
    close(
        m.relative_mean_hu_difference_pct.unwrap(),
        420.0 / 700.0 * 100.0,
    );
    assert_eq!(m.union_voxels, 3);
    let t2: LabelVolume = Volume::new(g.clone(), vec![1, 0, 1, 0]).unwrap();
    let m2 = intensity_metrics(&ct, &r, &t2, Target::Label(1)).unwrap();
    // Ip - Ir = [0, 600, 40].
    close(m2.mean_error_hu, 640.0 / 3.0);
    let r3: LabelVolume = Volume::new(g.clone(), vec![0, 1, 0, 1]).unwrap();
    let m3 = intensity_metrics(&ct, &r3, &t2, Target::Label(1)).unwrap();
    // Ip - Ir = [-800, 600, 40, -100].
    close(m3.mean_error_hu, -260.0 / 4.0);
    close(m3.mean_absolute_error_hu, 1540.0 / 4.0);
    let e: LabelVolume = Volume::filled(g.clone(), 0).unwrap();
    let me = intensity_metrics(&ct, &e, &e, Target::Label(1)).unwrap();
    assert_eq!((me.mean_error_hu, me.mean_absolute_error_hu), (0.0, 0.0));
    assert_eq!(me.relative_mean_hu_difference_pct, None);
}

#[test]
fn lung_involvement_percent_and_threshold() {
    let g = Geometry::axis_aligned([10, 10, 10], [1.0, 1.0, 2.0], [0.0; 3]);
    let mut lungs: LabelVolume = Volume::filled(g, 0).unwrap();
    lungs = with_box(lungs, [0, 0, 0], [10, 10, 5], 1); // 500 left
    lungs = with_box(lungs, [0, 0, 5], [10, 10, 10], 2); // 500 right
    let mut lesions = lungs.clone();
    lesions.set(0, 0, 0, 3);
    lesions.set(0, 0, 9, 3);
    lesions.set(1, 0, 9, 4);
    // Single map: lesions painted over lungs count when listed among the lung labels.
    let one = lung_involvement(&lesions, &[1, 2, 3, 4], &lesions, &[3, 4], 0.4).unwrap();
    assert_eq!(one.lung_voxels, 1000);
    assert_eq!(one.lesion_in_lung_voxels, 3);
    close(one.percent_involved.unwrap(), 0.3);
    assert!(!one.positive);
    let two = lung_involvement(&lungs, &[1, 2], &lesions, &[3, 4], 0.2).unwrap();
    close(two.percent_involved.unwrap(), 0.3);
    assert!(two.positive);
    close(two.lung_volume_ml, 2.0);
    let none = lung_involvement(
        &lungs,
        &[7],
        &lesions,
        &[3],
        DEFAULT_INVOLVEMENT_THRESHOLD_PCT,
    )
    .unwrap();
    assert_eq!(none.percent_involved, None);
    assert!(!none.positive);
}

/// A synthetic pair of lung-like masks on a 512x512x300 grid: two ellipsoids (labels 1
/// and 2) and the same eroded by a voxel shell in-plane and shifted by 2 voxels.
fn synthetic_lungs(shift: isize, shrink: f64) -> LabelVolume {
    let dims = [512, 512, 300];
    let g = Geometry::axis_aligned(dims, [0.7, 0.7, 1.0], [0.0; 3]);
    let mut v: LabelVolume = Volume::filled(g, 0).unwrap();
    use rayon::prelude::*;
    v.voxels
        .par_chunks_mut(512 * 512)
        .enumerate()
        .for_each(|(k, slice)| {
            for j in 0..512 {
                for i in 0..512 {
                    let x = i as f64 - shift as f64;
                    for (c, label) in [(170.0, 1u8), (342.0, 2u8)] {
                        let dx = (x - c) / (80.0 - shrink);
                        let dy = (j as f64 - 256.0) / (150.0 - shrink);
                        let dz = (k as f64 - 150.0) / (130.0 - shrink);
                        if dx * dx + dy * dy + dz * dz <= 1.0 {
                            slice[i + 512 * j] = label;
                        }
                    }
                }
            }
        });
    v
}

#[test]
#[ignore = "timing on 512x512x300 masks; run in release with --ignored --nocapture"]
fn compare_timing_512x512x300() {
    let r = synthetic_lungs(0, 0.0);
    let t = synthetic_lungs(2, 3.0);
    let t0 = std::time::Instant::now();
    let c = compare(&r, &t, &[1, 2]).unwrap();
    let dt = t0.elapsed();
    eprintln!("{c}");
    eprintln!(
        "compare (labels 1, 2 and foreground) on 512x512x300: {:.3} s on {} threads",
        dt.as_secs_f64(),
        rayon::current_num_threads()
    );
    let time = |what: &str, t: std::time::Instant| {
        eprintln!("{what}: {:.3} s", t.elapsed().as_secs_f64());
    };
    let t1 = std::time::Instant::now();
    let one = compare(&r, &t, &[1]).unwrap();
    time("compare, label 1 only (foreground reused)", t1);
    assert_eq!(
        one.per_label[0].surface.hausdorff_mm,
        c.per_label[0].surface.hausdorff_mm
    );
    let t1 = std::time::Instant::now();
    let s = slice_metrics(&r, &t, Target::AnyForeground).unwrap();
    time("slice metrics", t1);
    let t1 = std::time::Instant::now();
    let m = match_instances(&r, &t, Target::AnyForeground, Connectivity::TwentySix).unwrap();
    time("instance matching (lung-sized components)", t1);
    let t1 = std::time::Instant::now();
    let ct = r.map(|v| if v != 0 { -800i16 } else { 40 });
    let im = intensity_metrics(&ct, &r, &t, Target::AnyForeground).unwrap();
    time("intensity metrics", t1);
    let t1 = std::time::Instant::now();
    let inv = lung_involvement(&r, &[1, 2], &t, &[2], 0.4).unwrap();
    time("lung involvement", t1);
    eprintln!(
        "mean slice IoU {:.4}, {} / {} instances, F1@0.5 {:.3}, ME {:.2} HU, involvement {:.2} %",
        s.mean_iou,
        m.reference.count(),
        m.test.count(),
        m.at(0.5).unwrap().f1,
        im.mean_error_hu,
        inv.percent_involved.unwrap_or(0.0)
    );
    assert!(c.foreground.overlap.dice < 1.0);
}
