//! Rigid, then affine, alignment by mutual information: a fixed set of sample points
//! inside the (dilated) fixed lungs, a 32 x 32 joint histogram with partial-volume
//! binning of the moving value (smooth in the parameters), and a regular-step gradient
//! descent on central-difference gradients (12 parameters are cheap to difference:
//! 25 metric evaluations of a few tens of thousands of samples per step).

use nalgebra::{Matrix4, Point3, Rotation3, Vector3};
use rayon::prelude::*;

use super::image::Image;
use crate::volume::sample_trilinear;

const BINS: usize = 32;

/// Sample points of the fixed image: world position and value.
pub struct Samples {
    pub points: Vec<Point3<f64>>,
    pub values: Vec<f32>,
}

impl Samples {
    /// Up to `max` voxels of `fixed` where `keep` (one per voxel) holds, spread evenly
    /// by a deterministic stride.
    pub fn from_image(fixed: &Image, keep: &[bool], max: usize) -> Samples {
        let candidates: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
        let stride = (candidates.len() / max.max(1)).max(1);
        let g = &fixed.geometry;
        let [nx, ny, _] = g.dims;
        let mut points = Vec::new();
        let mut values = Vec::new();
        for &idx in candidates.iter().step_by(stride) {
            let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
            points.push(g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64)));
            values.push(fixed.voxels[idx]);
        }
        Samples { points, values }
    }
}

/// The parametrisation: translation (mm), rotation (0.01 rad), log-scale (0.01),
/// shear (0.01) about `centre`; the first 6 are the rigid ones.
pub struct Parameters {
    pub centre: Vector3<f64>,
}

impl Parameters {
    pub fn matrix(&self, p: &[f64; 12]) -> Matrix4<f64> {
        let c = self.centre;
        let rot = Rotation3::from_euler_angles(p[3] * 0.01, p[4] * 0.01, p[5] * 0.01);
        let scale = Matrix4::new_nonuniform_scaling(&Vector3::new(
            (p[6] * 0.01).exp(),
            (p[7] * 0.01).exp(),
            (p[8] * 0.01).exp(),
        ));
        let mut shear = Matrix4::identity();
        shear[(0, 1)] = p[9] * 0.01;
        shear[(0, 2)] = p[10] * 0.01;
        shear[(1, 2)] = p[11] * 0.01;
        Matrix4::new_translation(&(c + Vector3::new(p[0], p[1], p[2])))
            * rot.to_homogeneous()
            * shear
            * scale
            * Matrix4::new_translation(&-c)
    }
}

/// Negative mutual information of the samples against `moving` through `m`
/// (moving_from_fixed world matrix), and the fraction of samples that landed inside.
pub fn neg_mutual_information(samples: &Samples, moving: &Image, m: &Matrix4<f64>) -> (f64, f64) {
    let v = moving.geometry.voxel_from_world() * m;
    let chunk = 4096;
    let (hist, inside) = samples
        .points
        .par_chunks(chunk)
        .zip(samples.values.par_chunks(chunk))
        .map(|(pts, vals)| {
            let mut h = vec![0f64; BINS * BINS];
            let mut n = 0u64;
            for (p, f) in pts.iter().zip(vals) {
                let q = v.transform_point(p);
                if let Some(mv) = sample_trilinear(moving, q.coords) {
                    let fb = ((*f as f64) * (BINS - 1) as f64).round() as usize;
                    let mpos = (mv.clamp(0.0, 1.0)) * (BINS - 1) as f64;
                    let m0 = mpos.floor() as usize;
                    let w1 = mpos - m0 as f64;
                    let m1 = (m0 + 1).min(BINS - 1);
                    h[fb.min(BINS - 1) * BINS + m0] += 1.0 - w1;
                    h[fb.min(BINS - 1) * BINS + m1] += w1;
                    n += 1;
                }
            }
            (h, n)
        })
        .reduce(
            || (vec![0f64; BINS * BINS], 0),
            |mut a, b| {
                a.0.iter_mut().zip(&b.0).for_each(|(x, y)| *x += y);
                (a.0, a.1 + b.1)
            },
        );
    let total: f64 = hist.iter().sum();
    let fraction = inside as f64 / samples.points.len().max(1) as f64;
    if total <= 0.0 {
        return (0.0, fraction);
    }
    let mut pf = [0f64; BINS];
    let mut pm = [0f64; BINS];
    for a in 0..BINS {
        for b in 0..BINS {
            let p = hist[a * BINS + b] / total;
            pf[a] += p;
            pm[b] += p;
        }
    }
    let mut mi = 0.0;
    for a in 0..BINS {
        for b in 0..BINS {
            let p = hist[a * BINS + b] / total;
            if p > 0.0 {
                mi += p * (p / (pf[a] * pm[b])).ln();
            }
        }
    }
    // Points that left the moving image count against the alignment.
    (-mi * fraction, fraction)
}

/// What one optimisation did.
pub struct Optimised {
    pub parameters: [f64; 12],
    pub iterations: usize,
    pub metric_before: f64,
    pub metric_after: f64,
}

/// Regular-step gradient descent over the first `free` parameters (6: rigid, 12: affine)
/// from `start`, steps from `initial_step` down to `min_step` (parameter units),
/// differencing with `h`. `cancelled` is polled every iteration.
#[allow(clippy::too_many_arguments)]
pub fn optimise(
    cost: &(dyn Fn(&[f64; 12]) -> f64 + Sync),
    start: [f64; 12],
    free: usize,
    initial_step: f64,
    min_step: f64,
    h: f64,
    max_iterations: usize,
    cancelled: &dyn Fn() -> bool,
) -> Optimised {
    let mut p = start;
    let mut value = cost(&p);
    let before = value;
    let mut step = initial_step;
    let mut iterations = 0;
    while iterations < max_iterations && step >= min_step && !cancelled() {
        iterations += 1;
        let grad: Vec<f64> = (0..free)
            .into_par_iter()
            .map(|i| {
                let mut a = p;
                let mut b = p;
                a[i] += h;
                b[i] -= h;
                (cost(&a) - cost(&b)) / (2.0 * h)
            })
            .collect();
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if norm <= 0.0 || !norm.is_finite() {
            break;
        }
        let mut candidate = p;
        for i in 0..free {
            candidate[i] -= step * grad[i] / norm;
        }
        let c = cost(&candidate);
        if c < value {
            p = candidate;
            value = c;
            step *= 1.1;
        } else {
            step *= 0.5;
        }
    }
    Optimised {
        parameters: p,
        iterations,
        metric_before: before,
        metric_after: value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Volume};

    /// A blobby test image: a few Gaussian blobs of different brightness.
    fn blobs(g: &Geometry, shift: Vector3<f64>) -> Image {
        let centres = [
            (Vector3::new(-12.0, -5.0, 0.0), 0.9, 6.0),
            (Vector3::new(10.0, 6.0, 4.0), 0.6, 8.0),
            (Vector3::new(2.0, 12.0, -8.0), 0.4, 5.0),
            (Vector3::new(-4.0, -14.0, 9.0), 0.7, 4.0),
        ];
        let mut v = vec![0f32; g.voxel_count()];
        for k in 0..g.dims[2] {
            for j in 0..g.dims[1] {
                for i in 0..g.dims[0] {
                    let x = g
                        .world_at_voxel(Vector3::new(i as f64, j as f64, k as f64))
                        .coords
                        - shift;
                    let mut s = 0.1;
                    for (c, a, r) in centres {
                        s += a * (-(x - c).norm_squared() / (2.0 * r * r)).exp();
                    }
                    v[g.index(i, j, k)] = s.min(1.0) as f32;
                }
            }
        }
        Volume::new(g.clone(), v).unwrap()
    }

    #[test]
    fn mutual_information_recovers_a_translation_and_rotation() {
        let g = Geometry::axis_aligned([40, 40, 30], [1.5, 1.5, 1.5], [-30.0, -30.0, -22.0]);
        let fixed = blobs(&g, Vector3::zeros());
        // The moving image is the fixed one moved by (3, -2, 1.5) mm: fixed x ↔ moving x + t.
        let t = Vector3::new(3.0, -2.0, 1.5);
        let moving = blobs(&g, t);
        let keep = vec![true; g.voxel_count()];
        let samples = Samples::from_image(&fixed, &keep, 20_000);
        let params = Parameters {
            centre: Vector3::zeros(),
        };
        let cost = |p: &[f64; 12]| neg_mutual_information(&samples, &moving, &params.matrix(p)).0;
        let r = optimise(&cost, [0.0; 12], 6, 2.0, 0.01, 0.3, 200, &|| false);
        let m = params.matrix(&r.parameters);
        let got = m.transform_point(&Point3::origin()).coords;
        assert!((got - t).norm() < 0.3, "found {got:?}, expected {t:?}");
        assert!(r.metric_after < r.metric_before);
    }
}
