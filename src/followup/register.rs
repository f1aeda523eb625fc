//! The registration pipeline: lung-centroid start, rigid then affine by mutual
//! information on a two-level pyramid, then multi-level demons inside the lungs' box.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nalgebra::Matrix4;
use serde::Serialize;

use super::FollowupError;
use super::affine::{self, Parameters, Samples};
use super::demons::{self, DemonsSettings, Level};
use super::image::{self, Image, level_grid, normalised, resampled};
use super::transform::{DisplacementField, JacobianStats, Transform, jacobian_stats};
use crate::volume::{Geometry, Volume};

/// The two CTs to register and their lung masks (any non-zero label is lung).
pub struct Pair<'a> {
    /// The follow-up: the frame everything is mapped onto.
    pub fixed: &'a Volume<i16>,
    /// The baseline, to be warped onto the follow-up.
    pub moving: &'a Volume<i16>,
    pub fixed_lungs: Option<&'a Volume<u8>>,
    pub moving_lungs: Option<&'a Volume<u8>>,
    /// Lesions (non-zero voxels) of each time point on its CT's grid, when known: kept
    /// out of the intensity force.
    pub fixed_lesions: Option<&'a Volume<u8>>,
    pub moving_lesions: Option<&'a Volume<u8>>,
    /// Names for messages (file names).
    pub fixed_name: &'a str,
    pub moving_name: &'a str,
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// Run the deformable stage (otherwise affine only).
    pub deformable: bool,
    /// Spacing of the affine pyramid levels, mm (coarse to fine).
    pub affine_levels_mm: Vec<f64>,
    /// The finest demons level's spacing, mm (never finer than the fixed CT's).
    pub finest_mm: f64,
    /// Demons iterations per level, coarse to fine (each level halves the spacing).
    pub demons_iterations: Vec<usize>,
    pub demons: DemonsSettings,
    /// Fixed samples for mutual information.
    pub samples: usize,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        Self {
            deformable: true,
            affine_levels_mm: vec![8.0, 4.0],
            finest_mm: 2.0,
            demons_iterations: vec![60, 40, 20],
            demons: DemonsSettings {
                iterations: 0,
                sigma_fluid: 1.0,
                sigma_diffusion: 1.0,
                max_step: 2.0,
                mask_weight: 1.0,
            },
            samples: 30_000,
        }
    }
}

/// Progress and cancellation.
pub struct Steps<'a> {
    pub cancel: &'a AtomicBool,
    /// Called with the stage's name and the overall fraction done.
    pub progress: &'a (dyn Fn(&str, f64) + Sync),
}

impl Steps<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// One stage of the report.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: String,
    pub spacing_mm: [f64; 3],
    pub dims: [usize; 3],
    pub iterations: usize,
    /// Negative mutual information (affine) or mean squared intensity difference in the
    /// lungs (demons, intensities over -1000..200 HU mapped to 0..1).
    pub metric_before: f64,
    pub metric_after: f64,
    pub seconds: f64,
}

/// What the registration did and how well the lungs overlap.
#[derive(Debug, Clone, Serialize)]
pub struct RegistrationReport {
    pub stages: Vec<StageReport>,
    /// Fixed → moving affine (world LPS mm, row-major 4x4).
    pub moving_from_fixed: [[f64; 4]; 4],
    pub affine_determinant: f64,
    /// Of the deformable field alone (the affine multiplies every value by its
    /// determinant), over the lungs' box at the field's resolution.
    pub jacobian: Option<JacobianStats>,
    /// Dice of the fixed lungs with the moving lungs warped (affine only, then final);
    /// `None` without masks.
    pub lung_dice_affine: Option<f64>,
    pub lung_dice_final: Option<f64>,
    pub largest_displacement_mm: f64,
    pub seconds: f64,
}

/// The result: the transform (fixed → moving) and its report.
pub struct Registration {
    pub transform: Transform,
    pub report: RegistrationReport,
}

/// Lung-like voxels (-950..-500 HU) stand in for a lung mask's centroid when there is none.
fn lung_like(v: f32) -> bool {
    let hu = image::HU_RANGE.0 + v as f64 * (image::HU_RANGE.1 - image::HU_RANGE.0);
    (-950.0..=-500.0).contains(&hu)
}

/// A soft mask on `grid`, dilated by about `radius_mm` (smoothed, then any trace kept).
fn dilated_region(mask: &Image, grid: &Geometry, radius_mm: f64) -> Vec<bool> {
    let mut m = resampled(mask, grid, 0.0).voxels;
    image::smooth(&mut m, grid, radius_mm / 2.0);
    m.iter().map(|v| *v > 0.02).collect()
}

/// Dice of the non-zero voxels of two masks on one grid (0 when the grids differ).
fn dice(a: &Volume<u8>, b: &Volume<u8>) -> f64 {
    crate::metrics::overlap_metrics(a, b, crate::metrics::Target::AnyForeground)
        .map_or(0.0, |m| m.dice)
}

/// The box (on the fixed grid) around the dilated lungs, with `margin_mm`.
fn lung_box(fixed: &Geometry, lungs: &Volume<u8>, margin_mm: f64) -> Option<Geometry> {
    let [nx, ny, nz] = fixed.dims;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                if lungs.voxels[fixed.index(i, j, k)] > 0 {
                    for (a, v) in [i, j, k].into_iter().enumerate() {
                        lo[a] = lo[a].min(v);
                        hi[a] = hi[a].max(v);
                    }
                }
            }
        }
    }
    if lo[0] == usize::MAX {
        return None;
    }
    let mut start = [0usize; 3];
    let mut size = [0usize; 3];
    for a in 0..3 {
        let m = (margin_mm / fixed.spacing_mm[a]).ceil() as usize;
        start[a] = lo[a].saturating_sub(m);
        let end = (hi[a] + m).min(fixed.dims[a] - 1);
        size[a] = end - start[a] + 1;
    }
    fixed.sub_grid(start, size).ok()
}

/// Voxels of `grid` within about 4 mm of a lesion of either time point (the moving
/// lesions carried by the transform found so far), or `None` when no lesions are known.
fn lesion_exclusion(
    pair: &Pair<'_>,
    grid: &Geometry,
    moving_from_fixed: Matrix4<f64>,
    field: &Option<DisplacementField>,
) -> Option<Vec<bool>> {
    if pair.fixed_lesions.is_none() && pair.moving_lesions.is_none() {
        return None;
    }
    let mut soft = vec![0f32; grid.voxel_count()];
    if let Some(f) = pair.fixed_lesions {
        let on_grid = resampled(&image::mask_image(f), grid, 0.0);
        soft.iter_mut()
            .zip(&on_grid.voxels)
            .for_each(|(a, b)| *a += b);
    }
    if let Some(m) = pair.moving_lesions {
        let t = Transform {
            moving_from_fixed,
            field: field.clone(),
        };
        let warped = t.warp_labels(m, grid, 0);
        soft.iter_mut()
            .zip(&warped.voxels)
            .for_each(|(a, b)| *a += f32::from(u8::from(*b > 0)));
    }
    image::smooth(&mut soft, grid, 2.0);
    Some(soft.iter().map(|v| *v > 0.05).collect())
}

fn to_rows(m: &Matrix4<f64>) -> [[f64; 4]; 4] {
    [0, 1, 2, 3].map(|r| [0, 1, 2, 3].map(|c| m[(r, c)]))
}

/// Registers `pair.moving` (baseline) to `pair.fixed` (follow-up).
pub fn register(
    pair: &Pair<'_>,
    options: &RegisterOptions,
    steps: &Steps<'_>,
) -> Result<Registration, FollowupError> {
    let start = Instant::now();
    let both = || (pair.fixed_name.to_string(), pair.moving_name.to_string());
    for (ct, name) in [
        (pair.fixed, pair.fixed_name),
        (pair.moving, pair.moving_name),
    ] {
        ct.geometry
            .validate()
            .map_err(|e| FollowupError::Geometry {
                file: name.to_string(),
                message: e.to_string(),
            })?;
    }
    for (ct, mask, name, what) in [
        (pair.fixed, pair.fixed_lungs, pair.fixed_name, "lung mask"),
        (
            pair.moving,
            pair.moving_lungs,
            pair.moving_name,
            "lung mask",
        ),
        (
            pair.fixed,
            pair.fixed_lesions,
            pair.fixed_name,
            "lesion mask",
        ),
        (
            pair.moving,
            pair.moving_lesions,
            pair.moving_name,
            "lesion mask",
        ),
    ] {
        let Some(m) = mask else { continue };
        if let Some(diff) = ct.geometry.grid_difference(&m.geometry) {
            return Err(FollowupError::Geometry {
                file: name.to_string(),
                message: format!("its {what} is not on the CT's grid: {diff}"),
            });
        }
        if what == "lung mask" && !m.voxels.iter().any(|v| *v > 0) {
            return Err(FollowupError::Geometry {
                file: name.to_string(),
                message: "its lung mask is empty".into(),
            });
        }
    }
    let masks = match (pair.fixed_lungs, pair.moving_lungs) {
        (Some(f), Some(m)) => Some((image::mask_image(f), image::mask_image(m))),
        _ => None,
    };
    (steps.progress)("preparing", 0.0);
    let fixed = normalised(pair.fixed);
    let moving = normalised(pair.moving);

    // Start: lung centroids coincide.
    let centre_of = |img: &Image, mask: Option<&Image>| match mask {
        Some(m) => image::centroid(m, |v| v > 0.5),
        None => image::centroid(img, lung_like),
    };
    let fixed_centre = centre_of(&fixed, masks.as_ref().map(|m| &m.0));
    let moving_centre = centre_of(&moving, masks.as_ref().map(|m| &m.1));
    let (Some(fc), Some(mc)) = (fixed_centre, moving_centre) else {
        let (fixed, moving) = both();
        return Err(FollowupError::NoLungs { fixed, moving });
    };
    let initial = Matrix4::new_translation(&(mc - fc));
    let params = Parameters { centre: fc };
    let mut p = [0.0f64; 12];
    let mut stages = Vec::new();

    // Rigid, then affine, by mutual information.
    let n_affine = options.affine_levels_mm.len();
    for (li, &level_mm) in options.affine_levels_mm.iter().enumerate() {
        if steps.cancelled() {
            return Err(FollowupError::Cancelled);
        }
        let grid = level_grid(&pair.fixed.geometry, level_mm);
        let fl = resampled(&fixed, &grid, 0.0);
        let ml = resampled(&moving, &level_grid(&pair.moving.geometry, level_mm), 0.0);
        let keep: Vec<bool> = match &masks {
            Some((fm, _)) => dilated_region(fm, &grid, 15.0),
            None => fl.voxels.iter().map(|v| *v > 0.03).collect(),
        };
        let samples = Samples::from_image(&fl, &keep, options.samples);
        if samples.points.len() < 100 {
            let (fixed, moving) = both();
            return Err(FollowupError::NoLungs { fixed, moving });
        }
        let cost = |q: &[f64; 12]| {
            affine::neg_mutual_information(&samples, &ml, &(initial * params.matrix(q))).0
        };
        let cancelled = || steps.cancelled();
        let passes: &[(usize, &str)] = if li == 0 {
            &[(6, "rigid"), (12, "affine")]
        } else {
            &[(12, "affine")]
        };
        for &(free, name) in passes {
            let t1 = Instant::now();
            let r = affine::optimise(
                &cost,
                p,
                free,
                level_mm,
                0.02 * level_mm,
                0.25 * level_mm,
                150,
                &cancelled,
            );
            p = r.parameters;
            stages.push(StageReport {
                stage: name.to_string(),
                spacing_mm: grid.spacing_mm.into(),
                dims: grid.dims,
                iterations: r.iterations,
                metric_before: r.metric_before,
                metric_after: r.metric_after,
                seconds: t1.elapsed().as_secs_f64(),
            });
        }
        (steps.progress)("affine", 0.2 * (li + 1) as f64 / n_affine as f64);
    }
    if steps.cancelled() {
        return Err(FollowupError::Cancelled);
    }
    let moving_from_fixed = initial * params.matrix(&p);
    let mut transform = Transform::affine(moving_from_fixed);

    // The lungs must overlap after the affine stage.
    let lung_dice_affine = match (pair.fixed_lungs, pair.moving_lungs) {
        (Some(f), Some(m)) => {
            let warped = transform.warp_labels(m, &f.geometry, 0);
            Some(dice(f, &warped))
        }
        _ => None,
    };
    if let Some(d) = lung_dice_affine
        && d < 0.3
    {
        let (fixed, moving) = both();
        return Err(FollowupError::NoOverlap {
            fixed,
            moving,
            dice: d,
        });
    }

    // Deformable: demons from coarse to fine inside the lungs' box.
    let mut jacobian = None;
    if options.deformable && !options.demons_iterations.is_empty() {
        let region_grid = match pair.fixed_lungs {
            Some(l) => lung_box(&pair.fixed.geometry, l, 20.0)
                .unwrap_or_else(|| pair.fixed.geometry.clone()),
            None => pair.fixed.geometry.clone(),
        };
        let base = options.finest_mm.max(pair.fixed.geometry.spacing_mm.min());
        let levels = options.demons_iterations.len();
        let mut field: Option<DisplacementField> = None;
        for (li, &iterations) in options.demons_iterations.iter().enumerate() {
            if steps.cancelled() {
                return Err(FollowupError::Cancelled);
            }
            let t0 = Instant::now();
            let level_mm = base * f64::powi(2.0, (levels - 1 - li) as i32);
            let grid = level_grid(&region_grid, level_mm);
            let fl = resampled(&fixed, &grid, 0.0);
            let ml = resampled(&moving, &level_grid(&pair.moving.geometry, level_mm), 0.0);
            let soft = masks.as_ref().map(|(fm, mm)| {
                (
                    resampled(fm, &grid, 0.0),
                    resampled(mm, &level_grid(&pair.moving.geometry, level_mm), 0.0),
                )
            });
            let region: Vec<bool> = match &masks {
                Some((fm, _)) => dilated_region(fm, &grid, 6.0),
                None => fl.voxels.iter().map(|v| *v > 0.03).collect(),
            };
            let intensity_region = match lesion_exclusion(pair, &grid, moving_from_fixed, &field) {
                Some(excluded) => region
                    .iter()
                    .zip(&excluded)
                    .map(|(r, x)| *r && !x)
                    .collect(),
                None => region.clone(),
            };
            // Carry the coarser field onto this level's grid.
            let mut level_field = match &field {
                Some(f) => {
                    let t = Transform {
                        moving_from_fixed: Matrix4::identity(),
                        field: Some(f.clone()),
                    };
                    t.displacement_on(&grid)
                }
                None => DisplacementField::zeros(&grid),
            };
            let level = Level {
                fixed: &fl,
                fixed_mask: soft.as_ref().map(|s| &s.0),
                moving: &ml,
                moving_mask: soft.as_ref().map(|s| &s.1),
                region: &region,
                intensity_region: &intensity_region,
                moving_from_fixed,
            };
            let settings = DemonsSettings {
                iterations,
                ..options.demons
            };
            let r = demons::run_level(&level, &mut level_field, &settings, &|| steps.cancelled());
            stages.push(StageReport {
                stage: "demons".into(),
                spacing_mm: grid.spacing_mm.into(),
                dims: grid.dims,
                iterations: r.iterations,
                metric_before: r.mse_before,
                metric_after: r.mse_after,
                seconds: t0.elapsed().as_secs_f64(),
            });
            if li + 1 == levels {
                jacobian = Some(jacobian_stats(&level_field, Some(&region)));
            }
            field = Some(level_field);
            (steps.progress)("deformable", 0.2 + 0.8 * (li + 1) as f64 / levels as f64);
        }
        if steps.cancelled() {
            return Err(FollowupError::Cancelled);
        }
        transform.field = field;
    }
    let lung_dice_final = match (pair.fixed_lungs, pair.moving_lungs) {
        (Some(f), Some(m)) => Some(dice(f, &transform.warp_labels(m, &f.geometry, 0))),
        _ => None,
    };
    let largest_displacement_mm = transform
        .field
        .as_ref()
        .map_or(0.0, DisplacementField::max_norm_mm);
    let report = RegistrationReport {
        stages,
        moving_from_fixed: to_rows(&moving_from_fixed),
        affine_determinant: moving_from_fixed.fixed_view::<3, 3>(0, 0).determinant(),
        jacobian,
        lung_dice_affine,
        lung_dice_final,
        largest_displacement_mm,
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok(Registration { transform, report })
}
