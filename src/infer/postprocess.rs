//! Post-processing of raw model output on the CT grid.
//!
//! - Lungs: the two largest 6-connected components of "any lung" are kept (when the
//!   second is under 10 % of the first the lungs touch, and the largest is cut by the
//!   sagittal plane through its centroid); the one with the larger mean patient x (LPS:
//!   towards the patient's left) becomes the left lung; holes are filled slice by slice
//!   (vessels and airways enclosed by lung in an axial slice are lung, as in manual
//!   lung masks).
//! - Lesions: voxels farther than a margin (mm, in-plane) from the lung mask are dropped,
//!   then lesion components (any lesion class, 26-connected) under a minimum volume.

use rayon::prelude::*;

use super::{LEFT_LUNG, RIGHT_LUNG};
use crate::metrics::instances::{Connectivity, connected_components};
use crate::metrics::{Target, voxel_volume_ml};
use crate::volume::LabelVolume;
use crate::volume::distance::squared_distance_1d;

/// Left (1) / right (2) lungs from any non-zero voxels of `raw`.
pub fn lungs(raw: &LabelVolume) -> LabelVolume {
    let g = &raw.geometry;
    let inst = connected_components(raw, Target::AnyForeground, Connectivity::Six);
    let mut out = raw.map(|_| 0u8);
    if inst.count() == 0 {
        return out;
    }
    let mut order: Vec<usize> = (0..inst.count()).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(inst.voxel_counts[c]));
    let first = order[0] as u32 + 1;
    let second = order
        .get(1)
        .filter(|&&c| inst.voxel_counts[c] * 10 >= inst.voxel_counts[order[0]])
        .map(|&c| c as u32 + 1);
    // Centroid world x of each kept component (and of the first, for a split plane).
    let [sx, sy, sz] = inst.size;
    // World x is affine in the voxel index: x0 + a·(i, j, k).
    let x0 = g.world_at_voxel(nalgebra::Vector3::zeros())[0];
    let a = [0, 1, 2].map(|axis| {
        let mut e = nalgebra::Vector3::zeros();
        e[axis] = 1.0;
        g.world_at_voxel(e)[0] - x0
    });
    let world_x =
        |i: usize, j: usize, k: usize| x0 + a[0] * i as f64 + a[1] * j as f64 + a[2] * k as f64;
    let mut sum_x = [0.0f64; 2];
    let mut n = [0u64; 2];
    for z in 0..sz {
        for y in 0..sy {
            for x in 0..sx {
                let id = inst.ids[x + sx * (y + sy * z)];
                let slot = if id == first {
                    0
                } else if Some(id) == second {
                    1
                } else {
                    continue;
                };
                sum_x[slot] += world_x(x + inst.start[0], y + inst.start[1], z + inst.start[2]);
                n[slot] += 1;
            }
        }
    }
    let cx = [sum_x[0] / n[0].max(1) as f64, sum_x[1] / n[1].max(1) as f64];
    for z in 0..sz {
        for y in 0..sy {
            for x in 0..sx {
                let id = inst.ids[x + sx * (y + sy * z)];
                let (i, j, k) = (x + inst.start[0], y + inst.start[1], z + inst.start[2]);
                let value = match second {
                    Some(s) if id == first || id == s => {
                        let mine = if id == first { cx[0] } else { cx[1] };
                        let other = if id == first { cx[1] } else { cx[0] };
                        if mine > other { LEFT_LUNG } else { RIGHT_LUNG }
                    }
                    None if id == first => {
                        if world_x(i, j, k) > cx[0] {
                            LEFT_LUNG
                        } else {
                            RIGHT_LUNG
                        }
                    }
                    _ => 0,
                };
                if value != 0 {
                    out.set(i, j, k, value);
                }
            }
        }
    }
    fill_holes_axial(&mut out, &[LEFT_LUNG, RIGHT_LUNG]);
    out
}

/// Calls `f` with the 4-connected neighbours of pixel `p` of a `w` x `h` image.
#[inline]
pub(crate) fn for_each_neighbour4(p: usize, w: usize, h: usize, f: &mut impl FnMut(usize)) {
    let (x, y) = (p % w, p / w);
    if x > 0 {
        f(p - 1);
    }
    if x + 1 < w {
        f(p + 1);
    }
    if y > 0 {
        f(p - w);
    }
    if y + 1 < h {
        f(p + w);
    }
}

/// Fills, in every axial slice and for each of `values`, the background regions that the
/// label encloses (4-connected background not reaching the slice border and touching
/// only that label).
pub fn fill_holes_axial(labels: &mut LabelVolume, values: &[u8]) {
    let [nx, ny, _] = labels.geometry.dims;
    labels.voxels.par_chunks_mut(nx * ny).for_each(|slice| {
        let mut seen = vec![false; nx * ny];
        let mut stack = Vec::new();
        let mut region = Vec::new();
        for start in 0..nx * ny {
            if seen[start] || slice[start] != 0 {
                continue;
            }
            region.clear();
            stack.push(start);
            seen[start] = true;
            let mut border = false;
            let mut touching: Option<u8> = None;
            let mut mixed = false;
            while let Some(p) = stack.pop() {
                region.push(p);
                let (x, y) = (p % nx, p / nx);
                if x == 0 || y == 0 || x + 1 == nx || y + 1 == ny {
                    border = true;
                }
                let mut visit = |q: usize| {
                    let v = slice[q];
                    if v == 0 {
                        if !seen[q] {
                            seen[q] = true;
                            stack.push(q);
                        }
                    } else {
                        match touching {
                            None => touching = Some(v),
                            Some(t) if t != v => mixed = true,
                            _ => {}
                        }
                    }
                };
                for_each_neighbour4(p, nx, ny, &mut visit);
            }
            if let (false, false, Some(v)) = (border, mixed, touching)
                && values.contains(&v)
            {
                for &p in &region {
                    slice[p] = v;
                }
            }
        }
    });
}

/// Zeroes the labels of one axial slice farther than `margin_mm` (in-plane) from the
/// non-zero pixels of `lung` (all of them when the lung slice is empty).
fn restrict_slice_to_margin(
    labels: &mut [u8],
    lung: &[u8],
    nx: usize,
    spacing_mm: [f64; 2],
    margin_mm: f64,
) {
    let ny = labels.len() / nx;
    let mut d: Vec<f64> = lung
        .iter()
        .map(|&v| if v != 0 { 0.0 } else { f64::INFINITY })
        .collect();
    let (mut v, mut z) = (Vec::new(), Vec::new());
    let mut out = vec![0.0; nx.max(ny)];
    for row in d.chunks_mut(nx) {
        squared_distance_1d(row, spacing_mm[0], &mut out[..nx], &mut v, &mut z);
        row.copy_from_slice(&out[..nx]);
    }
    let mut col = vec![0.0; ny];
    let m2 = margin_mm * margin_mm;
    for x in 0..nx {
        for y in 0..ny {
            col[y] = d[x + nx * y];
        }
        squared_distance_1d(&col, spacing_mm[1], &mut out[..ny], &mut v, &mut z);
        for y in 0..ny {
            if out[y] > m2 {
                labels[x + nx * y] = 0;
            }
        }
    }
}

/// Restricts lesion labels to within `margin_mm` of `lungs` (when given) and removes
/// lesion components under `min_volume_mm3`.
pub fn lesions(
    labels: &mut LabelVolume,
    lungs: Option<&LabelVolume>,
    margin_mm: f64,
    min_volume_mm3: f64,
) {
    if let Some(lungs) = lungs
        && lungs.geometry.dims == labels.geometry.dims
    {
        // Only slices holding lesion labels need the distance to the lungs.
        let [nx, ny, _] = labels.geometry.dims;
        let s = labels.geometry.spacing_mm;
        labels
            .voxels
            .par_chunks_mut(nx * ny)
            .zip(lungs.voxels.par_chunks(nx * ny))
            .filter(|(slice, _)| slice.iter().any(|&v| v != 0))
            .for_each(|(slice, lung)| {
                restrict_slice_to_margin(slice, lung, nx, [s[0], s[1]], margin_mm)
            });
    }
    let voxel_mm3 = voxel_volume_ml(&labels.geometry) * 1000.0;
    let inst = connected_components(labels, Target::AnyForeground, Connectivity::TwentySix);
    let small: Vec<bool> = inst
        .voxel_counts
        .iter()
        .map(|&n| (n as f64) * voxel_mm3 < min_volume_mm3)
        .collect();
    if !small.iter().any(|&s| s) {
        return;
    }
    let [sx, sy, sz] = inst.size;
    for z in 0..sz {
        for y in 0..sy {
            for x in 0..sx {
                let id = inst.ids[x + sx * (y + sy * z)];
                if id != 0 && small[id as usize - 1] {
                    labels.set(x + inst.start[0], y + inst.start[1], z + inst.start[2], 0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{Geometry, Volume};

    fn grid(dims: [usize; 3]) -> LabelVolume {
        Volume::filled(Geometry::axis_aligned(dims, [1.0; 3], [0.0; 3]), 0u8).unwrap()
    }

    fn block(v: &mut LabelVolume, lo: [usize; 3], hi: [usize; 3], value: u8) {
        for k in lo[2]..hi[2] {
            for j in lo[1]..hi[1] {
                for i in lo[0]..hi[0] {
                    v.set(i, j, k, value);
                }
            }
        }
    }

    #[test]
    fn two_lungs_split_by_side_with_holes_filled_and_debris_removed() {
        let mut raw = grid([30, 12, 4]);
        block(&mut raw, [2, 2, 0], [12, 10, 4], 1); // patient right (small x)
        block(&mut raw, [16, 2, 0], [28, 10, 4], 1); // patient left (large x)
        raw.set(6, 5, 1, 0); // a vessel hole
        raw.set(14, 0, 0, 1); // debris
        let out = lungs(&raw);
        assert_eq!(out.get(20, 5, 2), LEFT_LUNG);
        assert_eq!(out.get(5, 5, 2), RIGHT_LUNG);
        assert_eq!(out.get(6, 5, 1), RIGHT_LUNG, "hole filled");
        assert_eq!(out.get(14, 0, 0), 0, "debris removed");
        let n1 = out.voxels.iter().filter(|&&v| v == 1).count();
        let n2 = out.voxels.iter().filter(|&&v| v == 2).count();
        assert_eq!((n1, n2), (12 * 8 * 4, 10 * 8 * 4));
    }

    #[test]
    fn touching_lungs_are_cut_at_the_centroid() {
        let mut raw = grid([20, 6, 2]);
        block(&mut raw, [0, 0, 0], [20, 6, 2], 1);
        let out = lungs(&raw);
        assert_eq!(out.get(19, 3, 1), LEFT_LUNG);
        assert_eq!(out.get(0, 3, 1), RIGHT_LUNG);
        assert_eq!(
            out.voxels.iter().filter(|&&v| v == LEFT_LUNG).count(),
            10 * 6 * 2
        );
    }

    #[test]
    fn lesions_outside_lungs_and_tiny_ones_go() {
        let mut lung = grid([30, 30, 3]);
        block(&mut lung, [5, 5, 0], [15, 15, 3], 1);
        let mut l = grid([30, 30, 3]);
        block(&mut l, [6, 6, 0], [10, 10, 3], 3); // inside: 48 mm³
        l.set(12, 12, 1, 4); // inside but 1 mm³
        block(&mut l, [16, 5, 0], [18, 8, 3], 4); // within 3 mm of the lung
        block(&mut l, [25, 25, 0], [28, 28, 3], 3); // far outside
        lesions(&mut l, Some(&lung), 3.0, 10.0);
        assert_eq!(l.get(7, 7, 1), 3);
        assert_eq!(l.get(12, 12, 1), 0);
        assert_eq!(l.get(16, 6, 1), 4);
        assert_eq!(l.get(26, 26, 1), 0);
    }
}
