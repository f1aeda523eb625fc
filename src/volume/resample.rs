//! Resampling onto another grid: trilinear for CT, nearest neighbour for labels.
//!
//! For each target voxel centre the world position is mapped into the source grid's
//! continuous voxel coordinates; points within half a voxel of the source grid are
//! interpolated (clamped to the edge voxels), points further out get `fill`.

use nalgebra::{Matrix4, Vector3};
use rayon::prelude::*;

use super::{Geometry, Volume};

/// Tolerance (in voxels) when deciding whether a point lies inside the source grid, so
/// that rounding in the composed transforms does not drop edge voxels.
const INSIDE_EPS: f64 = 1e-6;

fn source_from_target(source: &Geometry, target: &Geometry) -> Matrix4<f64> {
    source.voxel_from_world() * target.world_from_voxel()
}

/// Calls `f(k, slice)` for every target slice, in parallel, with the continuous source
/// coordinates of each target voxel.
fn for_each_target_voxel<T: Send>(
    source: &Geometry,
    target: &Geometry,
    out: &mut [T],
    f: impl Fn(Vector3<f64>) -> T + Sync,
) {
    let m = source_from_target(source, target);
    let col = |c: usize| Vector3::new(m[(0, c)], m[(1, c)], m[(2, c)]);
    let (di, dj, dk, t) = (col(0), col(1), col(2), col(3));
    let [nx, ny, _] = target.dims;
    out.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slice)| {
            let base_k = t + dk * k as f64;
            for j in 0..ny {
                let base = base_k + dj * j as f64;
                let row = &mut slice[j * nx..(j + 1) * nx];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = f(base + di * i as f64);
                }
            }
        });
}

fn inside(p: &Vector3<f64>, dims: [usize; 3]) -> bool {
    (0..3).all(|a| p[a] >= -0.5 - INSIDE_EPS && p[a] <= dims[a] as f64 - 0.5 + INSIDE_EPS)
}

/// The trilinear interpolation of `source` at the continuous voxel position `p`; `None`
/// when `p` lies more than half a voxel outside the grid (within that half voxel the edge
/// voxels are extended).
pub fn sample_trilinear<T: Copy + Into<f64>>(source: &Volume<T>, p: Vector3<f64>) -> Option<f64> {
    let dims = source.geometry.dims;
    if !inside(&p, dims) {
        return None;
    }
    let src = &source.voxels;
    Some(TrilinearCell::at(dims, p).interpolate(|o| src[o].into()))
}

/// The eight voxels around a continuous voxel position and its weights, for trilinear
/// interpolation on a grid of `dims` (i fastest): one home for the corner arithmetic
/// of every trilinear sampler (images, displacement fields, demons components).
#[derive(Debug, Clone, Copy)]
pub struct TrilinearCell {
    /// Index of the lower corner.
    pub base: usize,
    /// Index steps to the next voxel along i, j, k (0 at the last voxel: the edge value
    /// continues).
    pub steps: [usize; 3],
    /// Fractions along i, j, k.
    pub frac: [f64; 3],
}

impl TrilinearCell {
    /// The cell of `p`, clamped to the grid (beyond it the edge values continue).
    pub fn at(dims: [usize; 3], p: Vector3<f64>) -> Self {
        let mut idx = [0usize; 3];
        let mut frac = [0f64; 3];
        for a in 0..3 {
            let c = p[a].clamp(0.0, (dims[a] - 1) as f64);
            let f = c.floor();
            idx[a] = f as usize;
            frac[a] = c - f;
        }
        let next = |a: usize| usize::from(idx[a] + 1 < dims[a]);
        TrilinearCell {
            base: idx[0] + dims[0] * (idx[1] + dims[1] * idx[2]),
            steps: [next(0), next(1) * dims[0], next(2) * dims[0] * dims[1]],
            frac,
        }
    }

    /// The interpolated value, `value(index)` giving the value of a voxel.
    pub fn interpolate(&self, value: impl Fn(usize) -> f64) -> f64 {
        let [si, sj, sk] = self.steps;
        let [fx, fy, fz] = self.frac;
        let v = |o: usize| value(self.base + o);
        let x00 = v(0) + (v(si) - v(0)) * fx;
        let x10 = v(sj) + (v(sj + si) - v(sj)) * fx;
        let x01 = v(sk) + (v(sk + si) - v(sk)) * fx;
        let x11 = v(sk + sj) + (v(sk + sj + si) - v(sk + sj)) * fx;
        let y0 = x00 + (x10 - x00) * fy;
        let y1 = x01 + (x11 - x01) * fy;
        y0 + (y1 - y0) * fz
    }
}

/// The label of the voxel nearest to the continuous voxel position `p` (half up, clamped
/// for the half-voxel border); `None` outside the grid.
pub fn sample_nearest<T: Copy>(source: &Volume<T>, p: Vector3<f64>) -> Option<T> {
    let dims = source.geometry.dims;
    if !inside(&p, dims) {
        return None;
    }
    let mut idx = [0usize; 3];
    for a in 0..3 {
        idx[a] = ((p[a] + 0.5).floor().max(0.0) as usize).min(dims[a] - 1);
    }
    Some(source.voxels[source.geometry.index(idx[0], idx[1], idx[2])])
}

/// A trilinear value rounded to the nearest integer HU.
pub fn round_hu(value: f64) -> i16 {
    value.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
}

/// Trilinear resampling of a CT volume onto `target`; values are rounded to the nearest
/// integer HU. Points outside the source grid get `fill_hu`.
pub fn resample_trilinear(source: &Volume<i16>, target: &Geometry, fill_hu: i16) -> Volume<i16> {
    let mut out = vec![fill_hu; target.voxel_count()];
    for_each_target_voxel(&source.geometry, target, &mut out, |p| {
        sample_trilinear(source, p).map_or(fill_hu, round_hu)
    });
    Volume {
        geometry: target.clone(),
        voxels: out,
    }
}

/// Nearest-neighbour resampling of a label map onto `target` (labels are never blended).
/// Points outside the source grid get `fill`.
pub fn resample_labels_nearest(source: &Volume<u8>, target: &Geometry, fill: u8) -> Volume<u8> {
    let mut out = vec![fill; target.voxel_count()];
    for_each_target_voxel(&source.geometry, target, &mut out, |p| {
        sample_nearest(source, p).unwrap_or(fill)
    });
    Volume {
        geometry: target.clone(),
        voxels: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Rotation3;

    fn ramp(g: Geometry) -> Volume<i16> {
        let [nx, ny, nz] = g.dims;
        let mut v = Vec::with_capacity(nx * ny * nz);
        for k in 0..nz {
            for j in 0..ny {
                for i in 0..nx {
                    v.push((3 * i + 5 * j + 7 * k) as i16 - 100);
                }
            }
        }
        Volume::new(g, v).unwrap()
    }

    #[test]
    fn identity_resampling_is_exact() {
        let mut g = Geometry::axis_aligned([9, 8, 7], [0.7, 0.9, 2.5], [-10.0, 5.0, 100.0]);
        g.direction = *Rotation3::from_euler_angles(0.3, 0.1, -0.2).matrix();
        let v = ramp(g.clone());
        assert_eq!(resample_trilinear(&v, &g, -1024).voxels, v.voxels);
        let labels = v.map(|x| (x & 0xff) as u8);
        assert_eq!(
            resample_labels_nearest(&labels, &g, 0).voxels,
            labels.voxels
        );
    }

    #[test]
    fn integer_shift_equals_subvolume() {
        let g = Geometry::axis_aligned([9, 8, 7], [0.7, 0.9, 2.5], [-10.0, 5.0, 100.0]);
        let v = ramp(g.clone());
        let target = g.sub_grid([2, 3, 1], [4, 4, 4]).unwrap();
        assert_eq!(
            resample_trilinear(&v, &target, 0).voxels,
            v.subvolume([2, 3, 1], [4, 4, 4]).unwrap().voxels
        );
    }

    #[test]
    fn half_voxel_points_average_exactly() {
        // A linear ramp is reproduced exactly by trilinear interpolation.
        let g = Geometry::axis_aligned([6, 6, 6], [1.0, 1.0, 1.0], [0.0; 3]);
        let v = ramp(g.clone());
        let mut t = Geometry::axis_aligned([5, 5, 5], [1.0, 1.0, 1.0], [0.5, 0.0, 0.0]);
        t.dims = [5, 6, 6];
        let r = resample_trilinear(&v, &t, 0);
        for k in 0..6 {
            for j in 0..6 {
                for i in 0..5 {
                    let expected = (v.get(i, j, k) as f64 + v.get(i + 1, j, k) as f64) / 2.0;
                    assert_eq!(r.get(i, j, k) as f64, expected.round());
                }
            }
        }
    }

    #[test]
    fn outside_gets_fill_and_upsampling_labels_is_nearest() {
        let g = Geometry::axis_aligned([2, 1, 1], [2.0, 1.0, 1.0], [0.0; 3]);
        let labels = Volume::new(g.clone(), vec![1u8, 2]).unwrap();
        // Voxel centres at x = -1.5 .. 3.5 step 0.5 (1 mm extent each side of the grid).
        let t = Geometry::axis_aligned([11, 1, 1], [0.5, 1.0, 1.0], [-1.5, 0.0, 0.0]);
        let r = resample_labels_nearest(&labels, &t, 9);
        // source voxel coordinate = x / 2; inside for x in [-1, 3].
        assert_eq!(r.voxels, vec![9, 1, 1, 1, 1, 2, 2, 2, 2, 2, 9]);
        let ct = Volume::new(g, vec![0i16, 100]).unwrap();
        let r = resample_trilinear(&ct, &t, -1000);
        assert_eq!(
            r.voxels,
            vec![-1000, 0, 0, 0, 25, 50, 75, 100, 100, 100, -1000]
        );
    }
}
