//! Float working images for registration: intensity mapping, separable Gaussian
//! smoothing, resampling onto coarser grids, gradients, soft masks.

use nalgebra::{Matrix3, Vector3};
use rayon::prelude::*;

use crate::volume::{Geometry, Volume, sample_trilinear};

/// A working image: f32 values on a grid.
pub type Image = Volume<f32>;

/// HU range mapped to [0, 1] for the intensity metrics: air to soft tissue. Bone and
/// contrast above it saturate, so that they do not dominate the lung's vessels.
pub const HU_RANGE: (f64, f64) = (-1000.0, 200.0);

/// The CT as [0, 1] intensities over [`HU_RANGE`].
pub fn normalised(ct: &Volume<i16>) -> Image {
    let (lo, hi) = HU_RANGE;
    ct.map(|hu| ((hu as f64 - lo) / (hi - lo)).clamp(0.0, 1.0) as f32)
}

/// A binary mask (any non-zero label) as 0/1 floats.
pub fn mask_image(mask: &Volume<u8>) -> Image {
    mask.map(|v| if v > 0 { 1.0 } else { 0.0 })
}

/// The 1D Gaussian kernel of `sigma` voxels, truncated at 3 sigma and normalised.
fn kernel(sigma: f64) -> Vec<f32> {
    let r = (3.0 * sigma).ceil().max(1.0) as isize;
    let mut k: Vec<f64> = (-r..=r)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k.into_iter().map(|v| v as f32).collect()
}

/// Convolves `data` (x fastest, `dims`) along `axis` with `k` (odd length), replicating
/// the edge voxels.
fn convolve_axis(data: &[f32], dims: [usize; 3], axis: usize, k: &[f32]) -> Vec<f32> {
    let [nx, ny, nz] = dims;
    let r = (k.len() / 2) as isize;
    let mut out = vec![0f32; data.len()];
    let plane = nx * ny;
    match axis {
        0 => out
            .par_chunks_mut(nx)
            .zip(data.par_chunks(nx))
            .for_each(|(o, row)| {
                for (i, v) in o.iter_mut().enumerate() {
                    let mut acc = 0f32;
                    for (t, w) in k.iter().enumerate() {
                        let s = (i as isize + t as isize - r).clamp(0, nx as isize - 1);
                        acc += w * row[s as usize];
                    }
                    *v = acc;
                }
            }),
        1 => out
            .par_chunks_mut(plane)
            .zip(data.par_chunks(plane))
            .for_each(|(o, slice)| {
                for j in 0..ny {
                    let orow = &mut o[j * nx..(j + 1) * nx];
                    for (t, w) in k.iter().enumerate() {
                        let s = (j as isize + t as isize - r).clamp(0, ny as isize - 1) as usize;
                        let irow = &slice[s * nx..(s + 1) * nx];
                        for (a, b) in orow.iter_mut().zip(irow) {
                            *a += w * b;
                        }
                    }
                }
            }),
        _ => out.par_chunks_mut(plane).enumerate().for_each(|(kz, o)| {
            for (t, w) in k.iter().enumerate() {
                let s = (kz as isize + t as isize - r).clamp(0, nz as isize - 1) as usize;
                let islice = &data[s * plane..(s + 1) * plane];
                for (a, b) in o.iter_mut().zip(islice) {
                    *a += w * b;
                }
            }
        }),
    }
    out
}

/// Gaussian smoothing of a flat buffer on `geometry` with `sigma_mm` (per axis, in
/// millimetres; axes whose sigma is below a tenth of a voxel are left alone).
pub fn smooth(data: &mut Vec<f32>, geometry: &Geometry, sigma_mm: f64) {
    for axis in 0..3 {
        let sigma = sigma_mm / geometry.spacing_mm[axis];
        if sigma < 0.1 || geometry.dims[axis] < 2 {
            continue;
        }
        *data = convolve_axis(data, geometry.dims, axis, &kernel(sigma));
    }
}

/// Gaussian smoothing with `sigma` in voxels of each axis.
pub fn smooth_voxels(data: &mut Vec<f32>, dims: [usize; 3], sigma_voxels: f64) {
    if sigma_voxels < 0.1 {
        return;
    }
    let k = kernel(sigma_voxels);
    for axis in 0..3 {
        if dims[axis] >= 2 {
            *data = convolve_axis(data, dims, axis, &k);
        }
    }
}

/// `image` smoothed for `grid`'s coarser spacing (anti-aliasing sigma of 0.4 target
/// voxels where the target is coarser) and resampled onto it trilinearly; points outside
/// `image` get `fill`.
pub fn resampled(image: &Image, grid: &Geometry, fill: f32) -> Image {
    resampled_from(image, grid, fill, true)
}

fn resampled_from(image: &Image, grid: &Geometry, fill: f32, crop: bool) -> Image {
    let coarser = (0..3).all(|a| grid.spacing_mm[a] >= image.geometry.spacing_mm[a] * 1.01);
    let sigmas = [0, 1, 2].map(|axis| {
        let target = grid.spacing_mm[axis];
        let own = image.geometry.spacing_mm[axis];
        0.4 * (target * target - own * own).max(0.0).sqrt() / own
    });
    // Only the part of `image` the grid's samples reach, with the smoothing kernel's
    // reach around it (a lung box of a 512 x 512 x 300 CT is a fraction of it): the
    // same values as smoothing the whole image, for a fraction of the work.
    let radius = if coarser {
        sigmas
            .iter()
            .filter(|s| **s >= 0.1)
            .map(|s| kernel(*s).len() / 2)
            .max()
            .unwrap_or(0)
    } else {
        0
    };
    let part = if crop {
        reached_part(image, grid, radius + 2)
    } else {
        Some(None)
    };
    let Some(part) = part else {
        return Volume {
            geometry: grid.clone(),
            voxels: vec![fill; grid.voxel_count()],
        };
    };
    let image = part.as_ref().unwrap_or(image);
    let source = if coarser {
        let mut data = image.voxels.clone();
        for (axis, &sigma) in sigmas.iter().enumerate() {
            if sigma >= 0.1 {
                data = convolve_axis(&data, image.geometry.dims, axis, &kernel(sigma));
            }
        }
        Volume {
            geometry: image.geometry.clone(),
            voxels: data,
        }
    } else {
        image.clone()
    };
    let m = image.geometry.voxel_from_world() * grid.world_from_voxel();
    let [nx, ny, _] = grid.dims;
    let mut out = vec![fill; grid.voxel_count()];
    out.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, slice)| {
            for j in 0..ny {
                for i in 0..nx {
                    let p = m.transform_point(&nalgebra::Point3::new(i as f64, j as f64, k as f64));
                    slice[j * nx + i] =
                        sample_trilinear(&source, p.coords).map_or(fill, |v| v as f32);
                }
            }
        });
    Volume {
        geometry: grid.clone(),
        voxels: out,
    }
}

/// The box of `image` that holds every voxel centre of `grid` with `margin` voxels
/// around it: `Some(Some(part))` when that is smaller than `image`, `Some(None)` when it
/// is all of it, `None` when `grid` lies wholly outside `image`.
fn reached_part(image: &Image, grid: &Geometry, margin: usize) -> Option<Option<Image>> {
    let m = image.geometry.voxel_from_world() * grid.world_from_voxel();
    let d = grid.dims.map(|n| n.saturating_sub(1) as f64);
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for c in 0..8 {
        let corner = nalgebra::Point3::new(
            if c & 1 == 0 { 0.0 } else { d[0] },
            if c & 2 == 0 { 0.0 } else { d[1] },
            if c & 4 == 0 { 0.0 } else { d[2] },
        );
        let p = m.transform_point(&corner);
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    let dims = image.geometry.dims;
    let mut start = [0usize; 3];
    let mut size = [0usize; 3];
    for a in 0..3 {
        let first = (lo[a].floor() - margin as f64).max(0.0);
        let last = (hi[a].ceil() + margin as f64).min((dims[a] - 1) as f64);
        if first > last {
            return None;
        }
        start[a] = first as usize;
        size[a] = last as usize - start[a] + 1;
    }
    if size == dims {
        return Some(None);
    }
    image.subvolume(start, size).ok().map(Some)
}

/// A grid over `grid`'s extent with spacing `level_mm` on every axis (never finer than
/// the grid's own spacing), keeping the centre.
pub fn level_grid(grid: &Geometry, level_mm: f64) -> Geometry {
    let spacing = [0, 1, 2].map(|a| grid.spacing_mm[a].max(level_mm));
    grid.with_spacing(spacing)
}

/// Central-difference gradient of `image` in world millimetres (LPS), at every voxel
/// (one-sided at the edges).
pub fn gradient_world(image: &Image) -> Vec<[f32; 3]> {
    let g = &image.geometry;
    let [nx, ny, nz] = g.dims;
    let plane = nx * ny;
    // world gradient = R * S^-1 * index gradient
    let m: Matrix3<f64> = g.direction * Matrix3::from_diagonal(&g.spacing_mm.map(|s| 1.0 / s));
    let mf: [[f32; 3]; 3] = [0, 1, 2].map(|r| [0, 1, 2].map(|c| m[(r, c)] as f32));
    let v = &image.voxels;
    let mut out = vec![[0f32; 3]; v.len()];
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(k, slice)| {
            let (k0, k1) = (k.saturating_sub(1), (k + 1).min(nz - 1));
            let dk = (k1 - k0).max(1) as f32;
            for j in 0..ny {
                let (j0, j1) = (j.saturating_sub(1), (j + 1).min(ny - 1));
                let dj = (j1 - j0).max(1) as f32;
                for i in 0..nx {
                    let (i0, i1) = (i.saturating_sub(1), (i + 1).min(nx - 1));
                    let di = (i1 - i0).max(1) as f32;
                    let at = |i, j, k| v[k * plane + j * nx + i];
                    let gi = [
                        (at(i1, j, k) - at(i0, j, k)) / di,
                        (at(i, j1, k) - at(i, j0, k)) / dj,
                        (at(i, j, k1) - at(i, j, k0)) / dk,
                    ];
                    let mut gw = [0f32; 3];
                    for (r, row) in mf.iter().enumerate() {
                        gw[r] = row[0] * gi[0] + row[1] * gi[1] + row[2] * gi[2];
                    }
                    slice[j * nx + i] = gw;
                }
            }
        });
    out
}

/// The centroid (world mm) of the voxels where `keep` holds, or `None` when none does.
pub fn centroid(image: &Image, keep: impl Fn(f32) -> bool + Sync) -> Option<Vector3<f64>> {
    let g = &image.geometry;
    let [nx, ny, _] = g.dims;
    let (sum, n) = image
        .voxels
        .par_chunks(nx * ny)
        .enumerate()
        .map(|(k, slice)| {
            let mut s = Vector3::zeros();
            let mut n = 0u64;
            for (idx, v) in slice.iter().enumerate() {
                if keep(*v) {
                    s += Vector3::new((idx % nx) as f64, (idx / nx) as f64, k as f64);
                    n += 1;
                }
            }
            (s, n)
        })
        .reduce(|| (Vector3::zeros(), 0), |a, b| (a.0 + b.0, a.1 + b.1));
    (n > 0).then(|| g.world_at_voxel(sum / n as f64).coords)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_a_part_gives_what_resampling_the_whole_gives() {
        let mut g = Geometry::axis_aligned([60, 50, 40], [0.8, 0.8, 1.5], [-20.0, -10.0, 5.0]);
        g.direction = *nalgebra::Rotation3::from_euler_angles(0.1, 0.0, -0.2).matrix();
        let voxels: Vec<f32> = (0..g.voxel_count())
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let image = Volume {
            geometry: g.clone(),
            voxels,
        };
        // A coarser box well inside, one across the edge, one outside, one finer.
        let inside = g
            .sub_grid([20, 15, 10], [20, 18, 12])
            .unwrap()
            .with_spacing([2.0; 3]);
        let edge = g
            .sub_grid([40, 30, 25], [20, 20, 15])
            .unwrap()
            .with_spacing([2.5; 3]);
        let mut outside = inside.clone();
        outside.origin_mm += Vector3::new(500.0, 0.0, 0.0);
        let finer = g
            .sub_grid([10, 10, 10], [8, 8, 8])
            .unwrap()
            .with_spacing([0.5; 3]);
        for (name, grid) in [
            ("inside", inside),
            ("edge", edge),
            ("outside", outside),
            ("finer", finer),
        ] {
            let part = resampled_from(&image, &grid, -1.0, true);
            let whole = resampled_from(&image, &grid, -1.0, false);
            // The same values up to float rounding (the part's voxel coordinates come
            // through another origin).
            let worst = part
                .voxels
                .iter()
                .zip(&whole.voxels)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "{name}: {worst}");
            assert_eq!(part.geometry, grid, "{name}");
        }
    }

    #[test]
    fn smoothing_keeps_the_mean_and_spreads_a_spike() {
        let g = Geometry::axis_aligned([9, 9, 9], [1.0, 1.0, 2.0], [0.0; 3]);
        let mut data = vec![0f32; 729];
        data[g.index(4, 4, 4)] = 1.0;
        smooth(&mut data, &g, 1.0);
        let sum: f32 = data.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "sum {sum}");
        assert!(data[g.index(4, 4, 4)] < 0.2);
        assert!(data[g.index(5, 4, 4)] > data[g.index(6, 4, 4)]);
        // Symmetric along each axis.
        assert!((data[g.index(3, 4, 4)] - data[g.index(5, 4, 4)]).abs() < 1e-6);
        assert!((data[g.index(4, 4, 3)] - data[g.index(4, 4, 5)]).abs() < 1e-6);
    }

    #[test]
    fn gradient_of_a_ramp_is_its_slope_in_world_units() {
        // value = 2 * world x, on a grid whose i axis points along -x (flipped) with
        // 0.5 mm spacing: the world gradient must still be (2, 0, 0).
        let mut g = Geometry::axis_aligned([6, 5, 4], [0.5, 1.0, 3.0], [10.0, 0.0, 0.0]);
        g.direction = Matrix3::new(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0);
        let mut v = vec![0f32; g.voxel_count()];
        for k in 0..4 {
            for j in 0..5 {
                for i in 0..6 {
                    let w = g.world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                    v[g.index(i, j, k)] = 2.0 * w.x as f32;
                }
            }
        }
        let grad = gradient_world(&Volume::new(g.clone(), v).unwrap());
        for gw in grad {
            assert!((gw[0] - 2.0).abs() < 1e-4 && gw[1].abs() < 1e-5 && gw[2].abs() < 1e-5);
        }
    }
}
