//! Transforms from the fixed (follow-up) frame to the moving (baseline) frame: an affine
//! part and a dense displacement field, their application to CT and labels, the Jacobian
//! and the inverse.
//!
//! Convention (ITK, ANTs, Slicer): a transform maps a point of the FIXED image to the
//! point of the MOVING image that belongs there, so warping the moving image onto the
//! fixed grid is a lookup `moving(T(x))` at every fixed voxel `x`. All points and
//! displacements are world millimetres in LPS.

use nalgebra::{Matrix3, Matrix4, Point3, Vector3};
use rayon::prelude::*;
use serde::Serialize;

use crate::volume::{Geometry, TrilinearCell, Volume, round_hu, sample_nearest, sample_trilinear};

/// A displacement field: at each voxel centre of `geometry`, a vector in world mm (LPS).
#[derive(Debug, Clone, PartialEq)]
pub struct DisplacementField {
    pub geometry: Geometry,
    pub vectors_mm: Vec<[f32; 3]>,
}

impl DisplacementField {
    /// A zero field on `geometry`.
    pub fn zeros(geometry: &Geometry) -> Self {
        Self {
            vectors_mm: vec![[0.0; 3]; geometry.voxel_count()],
            geometry: geometry.clone(),
        }
    }

    /// The field as a vector volume (for writing).
    pub fn into_volume(self) -> Volume<[f32; 3]> {
        Volume {
            geometry: self.geometry,
            voxels: self.vectors_mm,
        }
    }

    /// The field held by a vector volume.
    pub fn from_volume(volume: Volume<[f32; 3]>) -> Self {
        Self {
            geometry: volume.geometry,
            vectors_mm: volume.voxels,
        }
    }

    /// The trilinearly interpolated displacement at continuous voxel position `p`;
    /// beyond the grid the edge values continue (a field covering the lungs' box keeps
    /// its border displacement outside it).
    pub fn at_voxel(&self, p: Vector3<f64>) -> Vector3<f64> {
        let cell = TrilinearCell::at(self.geometry.dims, p);
        let v = &self.vectors_mm;
        Vector3::from_fn(|c, _| cell.interpolate(|i| v[i][c] as f64))
    }

    /// The displacement at world point `x`.
    pub fn at_world(&self, x: &Point3<f64>) -> Vector3<f64> {
        self.at_voxel(self.geometry.voxel_at_world(*x))
    }

    /// The largest displacement length, mm.
    pub fn max_norm_mm(&self) -> f64 {
        self.vectors_mm
            .par_iter()
            .map(|v| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt() as f64)
            .reduce(|| 0.0, f64::max)
    }
}

/// Fixed → moving: `moving_from_fixed * (x + field(x))` (the field, when present, is
/// applied first, in the fixed frame; the affine then carries the point to the moving
/// frame).
#[derive(Debug, Clone, PartialEq)]
pub struct Transform {
    pub moving_from_fixed: Matrix4<f64>,
    pub field: Option<DisplacementField>,
}

impl Default for Transform {
    fn default() -> Self {
        Self::affine(Matrix4::identity())
    }
}

impl Transform {
    pub fn affine(moving_from_fixed: Matrix4<f64>) -> Self {
        Self {
            moving_from_fixed,
            field: None,
        }
    }

    /// The moving-image point that corresponds to fixed point `x`.
    pub fn map(&self, x: &Point3<f64>) -> Point3<f64> {
        let y = match &self.field {
            Some(f) => x + f.at_world(x),
            None => *x,
        };
        self.moving_from_fixed.transform_point(&y)
    }

    /// The fixed point that maps to the moving point `y` (the inverse of [`Self::map`]
    /// at one point, as the viewer needs when a click in the other study moves the
    /// open study's cursor): solves `x + d(x) = A⁻¹ y` by fixed-point iteration
    /// `x ← A⁻¹ y - d(x)`, which converges where the field is smooth (|∇d| < 1, as a
    /// folding-free registration gives). `None` when the affine is singular.
    pub fn fixed_point_of(&self, y: &Point3<f64>) -> Option<Point3<f64>> {
        let z = self.moving_from_fixed.try_inverse()?.transform_point(y);
        let Some(field) = &self.field else {
            return Some(z);
        };
        let mut x = z;
        for _ in 0..50 {
            let next = z - field.at_world(&x);
            let step = (next - x).norm();
            x = next;
            if step < 1e-4 {
                break;
            }
        }
        Some(x)
    }

    /// `f(x, T(x))` at the world point `x` of every voxel of `grid`, computed in
    /// parallel by slice.
    fn map_grid<T: Send + Copy>(
        &self,
        grid: &Geometry,
        fill: T,
        f: impl Fn(Point3<f64>, Point3<f64>) -> T + Sync,
    ) -> Vec<T> {
        let [nx, ny, _] = grid.dims;
        let w = grid.world_from_voxel();
        let mut out = vec![fill; grid.voxel_count()];
        out.par_chunks_mut(nx * ny)
            .enumerate()
            .for_each(|(k, slice)| {
                for j in 0..ny {
                    for i in 0..nx {
                        let x = w.transform_point(&Point3::new(i as f64, j as f64, k as f64));
                        slice[j * nx + i] = f(x, self.map(&x));
                    }
                }
            });
        out
    }

    /// The total displacement `T(x) - x` at every voxel of `grid`: the ITK displacement
    /// field of this transform on that grid.
    pub fn displacement_on(&self, grid: &Geometry) -> DisplacementField {
        let vectors_mm = self.map_grid(grid, [0f32; 3], |x, y| {
            let d = y - x;
            [d.x as f32, d.y as f32, d.z as f32]
        });
        DisplacementField {
            geometry: grid.clone(),
            vectors_mm,
        }
    }

    /// The moving CT resampled onto `grid` through this transform (trilinear); points
    /// that fall outside the moving CT get `fill_hu`.
    pub fn warp_ct(&self, moving: &Volume<i16>, grid: &Geometry, fill_hu: i16) -> Volume<i16> {
        let v = moving.geometry.voxel_from_world();
        let voxels = self.map_grid(grid, fill_hu, |_, y| {
            sample_trilinear(moving, v.transform_point(&y).coords).map_or(fill_hu, round_hu)
        });
        Volume {
            geometry: grid.clone(),
            voxels,
        }
    }

    /// The moving labels resampled onto `grid` by nearest neighbour.
    pub fn warp_labels(&self, moving: &Volume<u8>, grid: &Geometry, fill: u8) -> Volume<u8> {
        let v = moving.geometry.voxel_from_world();
        let voxels = self.map_grid(grid, fill, |_, y| {
            sample_nearest(moving, v.transform_point(&y).coords).unwrap_or(fill)
        });
        Volume {
            geometry: grid.clone(),
            voxels,
        }
    }

    /// Whether the transform carries the point with world coordinates into the grid of
    /// `moving` (for overlap checks).
    pub fn lands_in(&self, x: &Point3<f64>, moving: &Geometry) -> bool {
        let p = moving.voxel_at_world(self.map(x));
        (0..3).all(|a| p[a] >= -0.5 && p[a] <= moving.dims[a] as f64 - 0.5)
    }
}

/// Jacobian determinant statistics of a transform on a grid.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct JacobianStats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// Voxels whose determinant is <= 0 (folded), percent of the voxels counted.
    pub folded_pct: f64,
    pub voxels: u64,
}

/// The Jacobian determinant of `x -> x + field(x)` at voxel (i, j, k) (central
/// differences, one-sided at the edges).
fn jacobian_det(field: &DisplacementField, i: usize, j: usize, k: usize) -> f64 {
    let g = &field.geometry;
    let v = &field.vectors_mm;
    let step = |idx: usize, n: usize| {
        let (a, b) = (idx.saturating_sub(1), (idx + 1).min(n - 1));
        (a, b, (b - a).max(1) as f64)
    };
    let (i0, i1, di) = step(i, g.dims[0]);
    let (j0, j1, dj) = step(j, g.dims[1]);
    let (k0, k1, dk) = step(k, g.dims[2]);
    let diff = |a: usize, b: usize, d: f64| {
        let (p, q) = (v[a], v[b]);
        Vector3::new(
            (q[0] - p[0]) as f64 / d,
            (q[1] - p[1]) as f64 / d,
            (q[2] - p[2]) as f64 / d,
        )
    };
    // Columns: dD/d(index a).
    let grad_index = Matrix3::from_columns(&[
        diff(g.index(i0, j, k), g.index(i1, j, k), di),
        diff(g.index(i, j0, k), g.index(i, j1, k), dj),
        diff(g.index(i, j, k0), g.index(i, j, k1), dk),
    ]);
    // d(index)/d(world) = S^-1 R^T.
    let index_from_world =
        Matrix3::from_diagonal(&g.spacing_mm.map(|s| 1.0 / s)) * g.direction.transpose();
    (Matrix3::identity() + grad_index * index_from_world).determinant()
}

/// Jacobian statistics of the displacement field `x -> x + field(x)` over the voxels
/// where `within` holds (all voxels when `None`); the affine part of a transform
/// multiplies every determinant by its own and is left out here.
pub fn jacobian_stats(field: &DisplacementField, within: Option<&[bool]>) -> JacobianStats {
    let g = &field.geometry;
    let [nx, ny, nz] = g.dims;
    let (min, max, sum, folded, n) = (0..nz)
        .into_par_iter()
        .map(|k| {
            let mut acc = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0u64, 0u64);
            for j in 0..ny {
                for i in 0..nx {
                    if within.is_some_and(|m| !m[g.index(i, j, k)]) {
                        continue;
                    }
                    let d = jacobian_det(field, i, j, k);
                    acc.0 = acc.0.min(d);
                    acc.1 = acc.1.max(d);
                    acc.2 += d;
                    acc.3 += u64::from(d <= 0.0);
                    acc.4 += 1;
                }
            }
            acc
        })
        .reduce(
            || (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0, 0),
            |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 + b.2, a.3 + b.3, a.4 + b.4),
        );
    let count = n.max(1) as f64;
    JacobianStats {
        min: if n > 0 { min } else { 1.0 },
        max: if n > 0 { max } else { 1.0 },
        mean: if n > 0 { sum / count } else { 1.0 },
        folded_pct: 100.0 * folded as f64 / count,
        voxels: n,
    }
}

/// The inverse of `x -> x + field(x)` on the same grid, by fixed-point iteration
/// (`inv(y) = -field(y + inv(y))`); converges where the field is smooth and
/// not folded (its gradient's norm below one).
pub fn invert_field(field: &DisplacementField, iterations: usize) -> DisplacementField {
    let g = &field.geometry;
    let w = g.world_from_voxel();
    let mut inv = DisplacementField::zeros(g);
    let [nx, ny, _] = g.dims;
    for _ in 0..iterations {
        let prev = inv.clone();
        inv.vectors_mm
            .par_chunks_mut(nx * ny)
            .enumerate()
            .for_each(|(k, slice)| {
                for j in 0..ny {
                    for i in 0..nx {
                        let y = w.transform_point(&Point3::new(i as f64, j as f64, k as f64));
                        let v = prev.vectors_mm[g.index(i, j, k)];
                        let x = y + Vector3::new(v[0] as f64, v[1] as f64, v[2] as f64);
                        let d = -field.at_world(&x);
                        slice[j * nx + i] = [d.x as f32, d.y as f32, d.z as f32];
                    }
                }
            });
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Rotation3;

    fn oblique_grid() -> Geometry {
        let mut g = Geometry::axis_aligned([20, 18, 12], [1.5, 1.2, 3.0], [-10.0, 5.0, 20.0]);
        g.direction = *Rotation3::from_euler_angles(0.2, -0.1, 0.3).matrix();
        g
    }

    /// A smooth field: a sine bump of `amp` mm.
    fn smooth_field(g: &Geometry, amp: f64) -> DisplacementField {
        let mut f = DisplacementField::zeros(g);
        for k in 0..g.dims[2] {
            for j in 0..g.dims[1] {
                for i in 0..g.dims[0] {
                    let x = g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                    let s = (x.x / 15.0).sin() * (x.z / 20.0).cos();
                    f.vectors_mm[g.index(i, j, k)] =
                        [(amp * s) as f32, (0.5 * amp * s) as f32, (-amp * s) as f32];
                }
            }
        }
        f
    }

    #[test]
    fn displacement_on_a_grid_composes_field_then_affine() {
        let g = oblique_grid();
        let affine = Matrix4::new_translation(&Vector3::new(3.0, -2.0, 1.0))
            * Rotation3::from_euler_angles(0.05, 0.0, -0.04).to_homogeneous();
        let field = smooth_field(&g, 2.0);
        let t = Transform {
            moving_from_fixed: affine,
            field: Some(field.clone()),
        };
        let d = t.displacement_on(&g);
        let x = g.world_at_voxel(Vector3::new(7.0, 4.0, 5.0));
        let v = field.vectors_mm[g.index(7, 4, 5)];
        let expected =
            affine.transform_point(&(x + Vector3::new(v[0] as f64, v[1] as f64, v[2] as f64)));
        let got = d.vectors_mm[g.index(7, 4, 5)];
        for a in 0..3 {
            assert!((x[a] + got[a] as f64 - expected[a]).abs() < 1e-4);
        }
        // And a transform made of that displacement alone maps points the same way.
        let again = Transform {
            moving_from_fixed: Matrix4::identity(),
            field: Some(d),
        };
        let p = g.world_at_voxel(Vector3::new(3.0, 11.0, 2.0));
        assert!((again.map(&p) - t.map(&p)).norm() < 1e-4);
    }

    #[test]
    fn inverse_field_undoes_the_field() {
        let g = oblique_grid();
        let field = smooth_field(&g, 2.5);
        let inv = invert_field(&field, 20);
        let forward = Transform {
            moving_from_fixed: Matrix4::identity(),
            field: Some(field),
        };
        let backward = Transform {
            moving_from_fixed: Matrix4::identity(),
            field: Some(inv),
        };
        let mut worst: f64 = 0.0;
        for k in 2..10 {
            for j in 3..15 {
                for i in 3..17 {
                    let y = g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                    let back = forward.map(&backward.map(&y));
                    worst = worst.max((back - y).norm());
                }
            }
        }
        assert!(worst < 0.05, "round trip error {worst} mm");
    }

    #[test]
    fn a_moving_point_maps_back_to_its_fixed_point() {
        let g = oblique_grid();
        let t = Transform {
            moving_from_fixed: Matrix4::new_translation(&Vector3::new(4.0, -3.0, 2.0))
                * Rotation3::from_euler_angles(0.1, -0.05, 0.2).to_homogeneous()
                * Matrix4::new_scaling(1.1),
            field: Some(smooth_field(&g, 3.0)),
        };
        let mut worst: f64 = 0.0;
        for (i, j, k) in [(3, 3, 2), (10, 9, 6), (16, 14, 9), (7, 12, 4)] {
            let x = g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
            let back = t.fixed_point_of(&t.map(&x)).unwrap();
            worst = worst.max((back - x).norm());
        }
        assert!(worst < 1e-3, "round trip error {worst} mm");
        // Without a field: the affine's inverse; a singular affine has no answer.
        let a = Transform::affine(Matrix4::new_translation(&Vector3::new(1.0, 2.0, 3.0)));
        let p = Point3::new(5.0, 5.0, 5.0);
        assert!((a.fixed_point_of(&p).unwrap() - Point3::new(4.0, 3.0, 2.0)).norm() < 1e-12);
        assert!(
            Transform::affine(Matrix4::zeros())
                .fixed_point_of(&p)
                .is_none()
        );
    }

    #[test]
    fn jacobian_of_a_uniform_stretch_and_of_a_fold() {
        let g = oblique_grid();
        // x -> x + 0.2 * (x - c): a 1.2x stretch in every direction: det 1.728.
        let mut f = DisplacementField::zeros(&g);
        for k in 0..g.dims[2] {
            for j in 0..g.dims[1] {
                for i in 0..g.dims[0] {
                    let x = g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                    f.vectors_mm[g.index(i, j, k)] =
                        [(0.2 * x.x) as f32, (0.2 * x.y) as f32, (0.2 * x.z) as f32];
                }
            }
        }
        let s = jacobian_stats(&f, None);
        assert!(
            (s.min - 1.728).abs() < 1e-3 && (s.max - 1.728).abs() < 1e-3,
            "{s:?}"
        );
        assert_eq!(s.folded_pct, 0.0);
        // x -> x - 2 x along x: a mirror, det -1 everywhere.
        for v in f.vectors_mm.iter_mut() {
            *v = [0.0; 3];
        }
        for k in 0..g.dims[2] {
            for j in 0..g.dims[1] {
                for i in 0..g.dims[0] {
                    let x = g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                    f.vectors_mm[g.index(i, j, k)] = [(-2.0 * x.x) as f32, 0.0, 0.0];
                }
            }
        }
        let s = jacobian_stats(&f, None);
        assert!((s.max + 1.0).abs() < 1e-3, "{s:?}");
        assert_eq!(s.folded_pct, 100.0);
    }

    #[test]
    fn warping_by_a_translation_shifts_ct_and_labels() {
        let g = Geometry::axis_aligned([16, 16, 8], [1.0, 1.0, 2.0], [0.0; 3]);
        let mut ct = Volume::filled(g.clone(), -1000i16).unwrap();
        let mut labels = Volume::filled(g.clone(), 0u8).unwrap();
        ct.set(8, 8, 4, 100);
        labels.set(8, 8, 4, 3);
        // Fixed point x maps to moving point x + (2, 0, 2): the moving voxel (8,8,4)
        // appears at fixed voxel (6, 8, 3).
        let t = Transform::affine(Matrix4::new_translation(&Vector3::new(2.0, 0.0, 2.0)));
        let w = t.warp_ct(&ct, &g, -1000);
        let l = t.warp_labels(&labels, &g, 0);
        assert_eq!(w.get(6, 8, 3), 100);
        assert_eq!(l.get(6, 8, 3), 3);
        assert_eq!(l.voxels.iter().filter(|v| **v == 3).count(), 1);
    }
}
