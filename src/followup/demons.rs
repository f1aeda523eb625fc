//! Deformable registration by compositive demons (Vercauteren et al., "Diffeomorphic
//! demons", NeuroImage 2009) with symmetric (ESM) forces, on one pyramid level.
//!
//! The transform is `A(x + d(x))` with the affine `A` fixed here and `d` a dense field on
//! the level grid. Each iteration: warp the moving image (and its lung mask), compute the
//! update `u = (F - W) J / (|J|^2 + (F - W)^2 / sigma_x^2)` with `J` the mean of the fixed
//! and warped gradients (at most `sigma_x / 2` long), smooth it (fluid-like), compose it
//! (`d <- u + d o (id + u)`, which keeps small steps invertible) and smooth the field
//! (diffusion-like). Forces act only inside the region given (the dilated lungs), so
//! the chest wall does not drag the lungs, which slide along it when breathing; the
//! intensity force also stays out of the lesions of either time point when they are
//! known, where only the lung outline guides the field.

use nalgebra::{Matrix4, Point3, Vector3};
use rayon::prelude::*;

use super::image::{Image, gradient_world, smooth_voxels};
use super::transform::DisplacementField;
use crate::volume::{TrilinearCell, Volume, sample_trilinear};

/// Settings of one level.
#[derive(Debug, Clone, Copy)]
pub struct DemonsSettings {
    pub iterations: usize,
    /// Gaussian sigma of the update, voxels.
    pub sigma_fluid: f64,
    /// Gaussian sigma of the field after each update, voxels.
    pub sigma_diffusion: f64,
    /// Largest step per iteration, in voxels of the level's smallest spacing.
    pub max_step: f64,
    /// Weight of the lung-mask channel beside the intensity channel.
    pub mask_weight: f32,
}

/// One level's images.
pub struct Level<'a> {
    pub fixed: &'a Image,
    pub fixed_mask: Option<&'a Image>,
    pub moving: &'a Image,
    pub moving_mask: Option<&'a Image>,
    /// Where forces act (fixed grid).
    pub region: &'a [bool],
    /// Where the intensity force acts (inside `region`, less the lesions of either time
    /// point: a lesion that grows, shrinks or turns solid must not pull the lungs).
    pub intensity_region: &'a [bool],
    pub moving_from_fixed: Matrix4<f64>,
}

/// What a level did.
#[derive(Debug, Clone, Copy)]
pub struct LevelResult {
    pub iterations: usize,
    pub mse_before: f64,
    pub mse_after: f64,
}

/// The three components of a field as separate buffers (for smoothing).
type Components = [Vec<f32>; 3];

fn split(field: &DisplacementField) -> Components {
    [0, 1, 2].map(|c| field.vectors_mm.iter().map(|v| v[c]).collect())
}

fn join(c: &Components, field: &mut DisplacementField) {
    field
        .vectors_mm
        .par_iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = [c[0][i], c[1][i], c[2][i]]);
}

/// Trilinear sample of the three components at continuous voxel `p` (edge values beyond).
fn sample3(c: &Components, dims: [usize; 3], p: Vector3<f64>) -> [f32; 3] {
    let cell = TrilinearCell::at(dims, p);
    [0, 1, 2].map(|ci| cell.interpolate(|i| c[ci][i] as f64) as f32)
}

/// The moving image and mask warped onto the fixed grid through `A(x + d(x))`; voxels
/// that leave the moving image are marked outside (and take the fixed value: no force).
fn warp(level: &Level<'_>, d: &Components) -> (Vec<f32>, Vec<f32>, Vec<bool>) {
    let g = &level.fixed.geometry;
    let [nx, ny, _] = g.dims;
    let w = g.world_from_voxel();
    let to_moving = level.moving.geometry.voxel_from_world() * level.moving_from_fixed;
    let n = g.voxel_count();
    let plane = nx * ny;
    let with_mask = level.moving_mask.is_some();
    let mut image = vec![0f32; n];
    let mut mask = vec![0f32; if with_mask { n } else { 0 }];
    let mut inside = vec![false; n];
    // One pass: the moving point of each voxel serves the image and the mask.
    let mut mask_chunks: Vec<&mut [f32]> = if with_mask {
        mask.chunks_mut(plane).collect()
    } else {
        (0..g.dims[2]).map(|_| &mut [][..]).collect()
    };
    image
        .par_chunks_mut(plane)
        .zip(inside.par_chunks_mut(plane))
        .zip(mask_chunks.par_iter_mut())
        .enumerate()
        .for_each(|(k, ((img, ins), msk))| {
            for j in 0..ny {
                for i in 0..nx {
                    let idx = k * plane + j * nx + i;
                    let x = w.transform_point(&Point3::new(i as f64, j as f64, k as f64))
                        + Vector3::new(d[0][idx] as f64, d[1][idx] as f64, d[2][idx] as f64);
                    let p = to_moving.transform_point(&x).coords;
                    let at = j * nx + i;
                    match sample_trilinear(level.moving, p) {
                        Some(v) => {
                            img[at] = v as f32;
                            ins[at] = true;
                        }
                        None => img[at] = level.fixed.voxels[idx],
                    }
                    if let Some(mm) = level.moving_mask {
                        msk[at] = sample_trilinear(mm, p).unwrap_or(0.0) as f32;
                    }
                }
            }
        });
    (image, mask, inside)
}

/// Adds the demons update of one channel into `u`.
#[allow(clippy::too_many_arguments)]
fn add_force(
    u: &mut Components,
    fixed: &[f32],
    fixed_grad: &[[f32; 3]],
    warped: &[f32],
    warped_grad: &[[f32; 3]],
    use_voxel: &[bool],
    weight: f32,
    inv_sigma2: f32,
) {
    let [u0, u1, u2] = u;
    u0.par_iter_mut()
        .zip(u1.par_iter_mut())
        .zip(u2.par_iter_mut())
        .enumerate()
        .for_each(|(i, ((a, b), c))| {
            if !use_voxel[i] {
                return;
            }
            let diff = fixed[i] - warped[i];
            let (gf, gw) = (fixed_grad[i], warped_grad[i]);
            let j = [
                0.5 * (gf[0] + gw[0]),
                0.5 * (gf[1] + gw[1]),
                0.5 * (gf[2] + gw[2]),
            ];
            let denom = j[0] * j[0] + j[1] * j[1] + j[2] * j[2] + diff * diff * inv_sigma2;
            if denom > 1e-12 {
                let s = weight * diff / denom;
                *a += s * j[0];
                *b += s * j[1];
                *c += s * j[2];
            }
        });
}

/// Runs demons on one level, updating `field` (on the level's fixed grid) in place.
pub fn run_level(
    level: &Level<'_>,
    field: &mut DisplacementField,
    settings: &DemonsSettings,
    cancelled: &dyn Fn() -> bool,
) -> LevelResult {
    let g = level.fixed.geometry.clone();
    let dims = g.dims;
    let n = g.voxel_count();
    let fixed_grad = gradient_world(level.fixed);
    let fixed_mask_grad = level.fixed_mask.map(gradient_world);
    let sigma_x = settings.max_step * g.spacing_mm.min();
    let inv_sigma2 = (1.0 / (sigma_x * sigma_x)) as f32;
    let to_index = g.voxel_from_world();
    let world = g.world_from_voxel();
    let mut d = split(field);
    let mse = |warped: &[f32], inside: &[bool]| {
        let (s, c) = warped
            .par_iter()
            .zip(level.fixed.voxels.par_iter())
            .enumerate()
            .filter(|(i, _)| level.intensity_region[*i] && inside[*i])
            .map(|(_, (w, f))| (((w - f) * (w - f)) as f64, 1u64))
            .reduce(|| (0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        s / c.max(1) as f64
    };
    let mut first = None;
    let mut last = 0.0;
    let mut iterations = 0;
    for _ in 0..settings.iterations {
        if cancelled() {
            break;
        }
        let (warped, warped_mask, inside) = warp(level, &d);
        let m = mse(&warped, &inside);
        first.get_or_insert(m);
        last = m;
        iterations += 1;
        let use_voxel: Vec<bool> = (0..n)
            .map(|i| level.intensity_region[i] && inside[i])
            .collect();
        let use_mask_voxel: Vec<bool> = (0..n).map(|i| level.region[i] && inside[i]).collect();
        let warped_img = Volume {
            geometry: g.clone(),
            voxels: warped,
        };
        let warped_grad = gradient_world(&warped_img);
        let mut u: Components = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
        add_force(
            &mut u,
            &level.fixed.voxels,
            &fixed_grad,
            &warped_img.voxels,
            &warped_grad,
            &use_voxel,
            1.0,
            inv_sigma2,
        );
        if let (Some(fm), Some(fmg)) = (level.fixed_mask, &fixed_mask_grad) {
            let wm = Volume {
                geometry: g.clone(),
                voxels: warped_mask,
            };
            let wmg = gradient_world(&wm);
            add_force(
                &mut u,
                &fm.voxels,
                fmg,
                &wm.voxels,
                &wmg,
                &use_mask_voxel,
                settings.mask_weight,
                inv_sigma2,
            );
        }
        for c in u.iter_mut() {
            smooth_voxels(c, dims, settings.sigma_fluid);
        }
        // Compose: d'(x) = u(x) + d(x + u(x)).
        let mut next: Components = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
        {
            let [n0, n1, n2] = &mut next;
            let (nx, ny) = (dims[0], dims[1]);
            n0.par_iter_mut()
                .zip(n1.par_iter_mut())
                .zip(n2.par_iter_mut())
                .enumerate()
                .for_each(|(idx, ((a, b), c))| {
                    let uu = Vector3::new(u[0][idx] as f64, u[1][idx] as f64, u[2][idx] as f64);
                    let (i, j, k) = (idx % nx, (idx / nx) % ny, idx / (nx * ny));
                    let x = world.transform_point(&Point3::new(i as f64, j as f64, k as f64));
                    let p = to_index.transform_point(&(x + uu)).coords;
                    let dv = sample3(&d, dims, p);
                    *a = u[0][idx] + dv[0];
                    *b = u[1][idx] + dv[1];
                    *c = u[2][idx] + dv[2];
                });
        }
        d = next;
        for c in d.iter_mut() {
            smooth_voxels(c, dims, settings.sigma_diffusion);
        }
    }
    join(&d, field);
    if iterations > 0 {
        let (warped, _, inside) = warp(level, &d);
        last = mse(&warped, &inside);
    }
    LevelResult {
        iterations,
        mse_before: first.unwrap_or(last),
        mse_after: last,
    }
}
