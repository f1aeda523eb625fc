//! Property tests of `pulmo::metrics` and a brute-force check of the EDT-based surface
//! distances (all boundary-voxel pairs) on small random masks with anisotropic spacing.

use proptest::prelude::*;
use pulmo::metrics::{Target, overlap_metrics, surface_distances};
use pulmo::volume::{Geometry, LabelVolume, Volume};

fn volume(dims: [usize; 3], spacing: [f64; 3], voxels: Vec<u8>) -> LabelVolume {
    Volume::new(Geometry::axis_aligned(dims, spacing, [0.0; 3]), voxels).unwrap()
}

/// Deterministic pseudo-random mask (a small LCG), about `density` of voxels set.
fn random_mask(dims: [usize; 3], spacing: [f64; 3], seed: u64, density: f64) -> LabelVolume {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n = dims.iter().product();
    let voxels = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            u8::from(((s >> 33) as f64 / (1u64 << 31) as f64) < density)
        })
        .collect();
    volume(dims, spacing, voxels)
}

/// Boundary voxels (6-neighbour outside the mask or the volume), written independently
/// of the library.
fn boundary(m: &LabelVolume) -> Vec<[usize; 3]> {
    let [nx, ny, nz] = m.dims();
    let mut out = Vec::new();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if m.get(i, j, k) == 0 {
                    continue;
                }
                let p = [i as isize, j as isize, k as isize];
                let edge = [
                    [1, 0, 0],
                    [-1, 0, 0],
                    [0, 1, 0],
                    [0, -1, 0],
                    [0, 0, 1],
                    [0, 0, -1],
                ]
                .iter()
                .any(|d: &[isize; 3]| {
                    let q = [p[0] + d[0], p[1] + d[1], p[2] + d[2]];
                    let inside = (0..3).all(|a| q[a] >= 0 && q[a] < m.dims()[a] as isize);
                    !inside || m.get(q[0] as usize, q[1] as usize, q[2] as usize) == 0
                });
                if edge {
                    out.push([i, j, k]);
                }
            }
        }
    }
    out
}

fn directed(a: &[[usize; 3]], b: &[[usize; 3]], sp: [f64; 3]) -> Vec<f64> {
    a.iter()
        .map(|p| {
            b.iter()
                .map(|q| {
                    (0..3)
                        .map(|x| ((p[x] as f64 - q[x] as f64) * sp[x]).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        })
        .collect()
}

fn numpy_percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = q / 100.0 * (s.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    s[lo] + (s[hi] - s[lo]) * (rank - lo as f64)
}

/// (HD, HD95, ASSD) by brute force; `None` when exactly one mask is empty.
fn brute_force(a: &LabelVolume, b: &LabelVolume) -> Option<(f64, f64, f64)> {
    let sp: [f64; 3] = a.geometry.spacing_mm.into();
    let (ba, bb) = (boundary(a), boundary(b));
    match (ba.is_empty(), bb.is_empty()) {
        (true, true) => return Some((0.0, 0.0, 0.0)),
        (false, false) => {}
        _ => return None,
    }
    let (ab, ba) = (directed(&ba, &bb, sp), directed(&bb, &ba, sp));
    let hd = ab.iter().chain(&ba).copied().fold(0.0, f64::max);
    let hd95 = numpy_percentile(&ab, 95.0).max(numpy_percentile(&ba, 95.0));
    let assd = (ab.iter().sum::<f64>() + ba.iter().sum::<f64>()) / (ab.len() + ba.len()) as f64;
    Some((hd, hd95, assd))
}

fn dims_strategy(max: usize) -> impl Strategy<Value = [usize; 3]> {
    [1..=max, 1..=max, 1..=max]
}

fn spacing_strategy() -> impl Strategy<Value = [f64; 3]> {
    [0.3f64..3.0, 0.3f64..3.0, 0.3f64..3.0]
}

/// A ball of radius `r` voxels (in voxel units) centred at `c`.
fn ball(dims: [usize; 3], spacing: [f64; 3], c: [usize; 3], r: usize) -> LabelVolume {
    let mut v = volume(dims, spacing, vec![0; dims.iter().product()]);
    let r2 = (r * r) as isize;
    for k in 0..dims[2] {
        for j in 0..dims[1] {
            for i in 0..dims[0] {
                let d = [i, j, k].map(|x| x as isize);
                let s: isize = (0..3).map(|a| (d[a] - c[a] as isize).pow(2)).sum();
                if s <= r2 {
                    v.set(i, j, k, 1);
                }
            }
        }
    }
    v
}

fn pad(m: &LabelVolume, lo: [usize; 3], hi: [usize; 3]) -> LabelVolume {
    let d = m.dims();
    let nd = [0, 1, 2].map(|a| d[a] + lo[a] + hi[a]);
    let mut out = volume(
        nd,
        m.geometry.spacing_mm.into(),
        vec![0; nd.iter().product()],
    );
    for k in 0..d[2] {
        for j in 0..d[1] {
            for i in 0..d[0] {
                out.set(i + lo[0], j + lo[1], k + lo[2], m.get(i, j, k));
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn surface_distances_match_brute_force(
        dims in dims_strategy(12),
        spacing in spacing_strategy(),
        seeds in (any::<u64>(), any::<u64>()),
        densities in (0.0f64..0.7, 0.0f64..0.7),
    ) {
        let a = random_mask(dims, spacing, seeds.0, densities.0);
        let b = random_mask(dims, spacing, seeds.1, densities.1);
        let s = surface_distances(&a, &b, Target::Label(1)).unwrap();
        match brute_force(&a, &b) {
            None => {
                prop_assert_eq!(s.hausdorff_mm, None);
                prop_assert_eq!(s.hd95_mm, None);
                prop_assert_eq!(s.assd_mm, None);
            }
            Some((hd, hd95, assd)) => {
                prop_assert!((s.hausdorff_mm.unwrap() - hd).abs() < 1e-9, "HD {:?} vs {}", s.hausdorff_mm, hd);
                prop_assert!((s.hd95_mm.unwrap() - hd95).abs() < 1e-9, "HD95 {:?} vs {}", s.hd95_mm, hd95);
                prop_assert!((s.assd_mm.unwrap() - assd).abs() < 1e-9, "ASSD {:?} vs {}", s.assd_mm, assd);
            }
        }
    }

    #[test]
    fn overlap_bounds_symmetry_and_dice_iou_relation(
        dims in dims_strategy(10),
        spacing in spacing_strategy(),
        seeds in (any::<u64>(), any::<u64>()),
        densities in (0.0f64..0.8, 0.0f64..0.8),
    ) {
        let a = random_mask(dims, spacing, seeds.0, densities.0);
        let b = random_mask(dims, spacing, seeds.1, densities.1);
        let ab = overlap_metrics(&a, &b, Target::AnyForeground).unwrap();
        let ba = overlap_metrics(&b, &a, Target::AnyForeground).unwrap();
        prop_assert!((0.0..=1.0).contains(&ab.dice));
        prop_assert!((0.0..=1.0).contains(&ab.jaccard));
        prop_assert_eq!(ab.dice, ba.dice);
        prop_assert_eq!(ab.jaccard, ba.jaccard);
        prop_assert_eq!(ab.volume_similarity, ba.volume_similarity);
        let j = ab.jaccard;
        prop_assert!((ab.dice - 2.0 * j / (1.0 + j)).abs() < 1e-12);
        let sab = surface_distances(&a, &b, Target::AnyForeground).unwrap();
        let sba = surface_distances(&b, &a, Target::AnyForeground).unwrap();
        prop_assert_eq!(sab.hausdorff_mm, sba.hausdorff_mm);
        prop_assert_eq!(sab.hd95_mm, sba.hd95_mm);
        if let (Some(x), Some(y)) = (sab.assd_mm, sba.assd_mm) {
            prop_assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn distances_of_a_mask_with_itself_are_zero(
        dims in dims_strategy(12),
        spacing in spacing_strategy(),
        seed in any::<u64>(),
        density in 0.0f64..0.9,
    ) {
        let a = random_mask(dims, spacing, seed, density);
        let s = surface_distances(&a, &a, Target::Label(1)).unwrap();
        prop_assert_eq!(s.hausdorff_mm, Some(0.0));
        prop_assert_eq!(s.hd95_mm, Some(0.0));
        prop_assert_eq!(s.assd_mm, Some(0.0));
        let o = overlap_metrics(&a, &a, Target::Label(1)).unwrap();
        prop_assert_eq!(o.dice, 1.0);
    }

    #[test]
    fn shifted_ball_hausdorff_is_the_shift(
        r in 1usize..6,
        shift in 1usize..5,
        axis in 0usize..3,
        spacing in spacing_strategy(),
    ) {
        let mut dims = [2 * r + 3; 3];
        dims[axis] += shift;
        let c = [r + 1; 3];
        let mut c2 = c;
        c2[axis] += shift;
        let a = ball(dims, spacing, c, r);
        let b = ball(dims, spacing, c2, r);
        let expected = shift as f64 * spacing[axis];
        for (x, y) in [(&a, &b), (&b, &a)] {
            let s = surface_distances(x, y, Target::Label(1)).unwrap();
            prop_assert_eq!(s.hausdorff_mm, Some(expected));
            // HD95 interpolates and ASSD averages distances that are all <= the shift:
            // allow the rounding of those operations (a few ulps), nothing more.
            let tol = expected * 1e-12;
            prop_assert!(s.hd95_mm.unwrap() <= expected + tol);
            prop_assert!(s.assd_mm.unwrap() <= expected + tol, "ASSD {:?} > {expected}", s.assd_mm);
            prop_assert!(s.assd_mm.unwrap() > 0.0);
        }
    }

    #[test]
    fn metrics_are_invariant_to_background_padding(
        dims in dims_strategy(9),
        spacing in spacing_strategy(),
        seeds in (any::<u64>(), any::<u64>()),
        densities in (0.0f64..0.7, 0.0f64..0.7),
        lo in [0usize..4, 0usize..4, 0usize..4],
        hi in [0usize..4, 0usize..4, 0usize..4],
    ) {
        let a = random_mask(dims, spacing, seeds.0, densities.0);
        let b = random_mask(dims, spacing, seeds.1, densities.1);
        let (pa, pb) = (pad(&a, lo, hi), pad(&b, lo, hi));
        let o = overlap_metrics(&a, &b, Target::Label(1)).unwrap();
        let po = overlap_metrics(&pa, &pb, Target::Label(1)).unwrap();
        prop_assert_eq!(o.dice, po.dice);
        prop_assert_eq!(o.jaccard, po.jaccard);
        prop_assert_eq!(o.sensitivity, po.sensitivity);
        prop_assert_eq!(o.relative_volume_difference_pct, po.relative_volume_difference_pct);
        let s = surface_distances(&a, &b, Target::Label(1)).unwrap();
        let ps = surface_distances(&pa, &pb, Target::Label(1)).unwrap();
        prop_assert_eq!(s.reference_boundary_voxels, ps.reference_boundary_voxels);
        for (x, y) in [(s.hausdorff_mm, ps.hausdorff_mm), (s.hd95_mm, ps.hd95_mm), (s.assd_mm, ps.assd_mm)] {
            match (x, y) {
                (Some(x), Some(y)) => prop_assert!((x - y).abs() < 1e-12, "{} vs {}", x, y),
                (x, y) => prop_assert_eq!(x, y),
            }
        }
    }
}
