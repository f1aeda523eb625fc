//! Morphology on one label and shape-based interpolation between annotated slices.
//!
//! Both work in the bounding box of the label (plus a margin), never on the whole volume
//! beyond one scan to find that box. Distances are Euclidean in millimetres, computed by
//! an exact separable squared distance transform (Felzenszwalb–Huttenlocher) that
//! weighs each voxel axis by its spacing, so structuring elements are the anisotropic
//! ellipsoids (in voxels) of a ball in mm. Connectivity is face connectivity (4 in a
//! plane, 6 in 3D). In [`Scope::Plane`] mode every slice of that plane is processed on
//! its own (2D neighbourhoods and distances); in [`Scope::Volume`] mode in 3D.
//!
//! The border of the volume is neither background nor foreground for erosion (it does
//! not erode) and counts as outside for hole filling (a background region touching it is
//! not a hole).

use crate::volume::distance::squared_distance_1d;
use rayon::prelude::*;

use super::editor::Editor;
use super::tools::{Scope, ToolError, in_transaction, normal_axis};
use crate::view::Plane;
use crate::volume::LabelVolume;
use crate::volume::VoxelBox;

/// A morphological operation on one label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Morphology {
    /// Adds every voxel within `radius_mm` of the label.
    Dilate { radius_mm: f64 },
    /// Removes (sets to 0) every label voxel within `radius_mm` of a non-label voxel.
    Erode { radius_mm: f64 },
    /// Fills background regions enclosed by the label.
    FillHoles,
    /// Removes (sets to 0) connected components smaller than `min_volume_mm3` (voxel
    /// count × voxel volume, also in plane mode).
    RemoveIslands { min_volume_mm3: f64 },
    /// Keeps only the largest connected component (per slice in plane mode).
    KeepLargest,
}

impl Morphology {
    pub fn name(&self) -> &'static str {
        match self {
            Morphology::Dilate { .. } => "Dilate",
            Morphology::Erode { .. } => "Erode",
            Morphology::FillHoles => "Fill holes",
            Morphology::RemoveIslands { .. } => "Remove islands",
            Morphology::KeepLargest => "Keep largest component",
        }
    }
}

/// A box of the volume being worked on, with the axes along which neighbourhoods
/// extend.
#[derive(Debug, Clone)]
struct Region {
    lo: [usize; 3],
    dims: [usize; 3],
    active: [bool; 3],
    spacing: [f64; 3],
}

impl Region {
    fn len(&self) -> usize {
        self.dims.iter().product()
    }

    fn stride(&self, a: usize) -> usize {
        match a {
            0 => 1,
            1 => self.dims[0],
            _ => self.dims[0] * self.dims[1],
        }
    }

    fn unravel(&self, l: usize) -> [usize; 3] {
        let i = l % self.dims[0];
        let r = l / self.dims[0];
        [i, r % self.dims[1], r / self.dims[1]]
    }

    fn global(&self, l: usize) -> [usize; 3] {
        let p = self.unravel(l);
        [0, 1, 2].map(|a| p[a] + self.lo[a])
    }

    /// The region's voxels equal to `label`.
    fn mask(&self, labels: &LabelVolume, label: u8) -> Vec<bool> {
        let g = &labels.geometry;
        let mut out = Vec::with_capacity(self.len());
        for k in 0..self.dims[2] {
            for j in 0..self.dims[1] {
                let row = g.index(self.lo[0], self.lo[1] + j, self.lo[2] + k);
                out.extend(
                    labels.voxels[row..row + self.dims[0]]
                        .iter()
                        .map(|&v| v == label),
                );
            }
        }
        out
    }

    /// Face neighbours along the active axes.
    fn for_neighbours(&self, l: usize, mut f: impl FnMut(usize)) {
        let p = self.unravel(l);
        for (a, &pa) in p.iter().enumerate() {
            if !self.active[a] {
                continue;
            }
            let s = self.stride(a);
            if pa > 0 {
                f(l - s);
            }
            if pa + 1 < self.dims[a] {
                f(l + s);
            }
        }
    }

    fn on_border(&self, l: usize) -> bool {
        let p = self.unravel(l);
        (0..3).any(|a| self.active[a] && (p[a] == 0 || p[a] + 1 == self.dims[a]))
    }
}

/// Bounding box of the voxels equal to `label`.
pub fn label_bbox(labels: &LabelVolume, label: u8) -> Option<VoxelBox> {
    let [nx, ny, _] = labels.geometry.dims;
    labels
        .voxels
        .par_chunks(nx * ny)
        .enumerate()
        .filter_map(|(k, slice)| {
            let mut b: Option<VoxelBox> = None;
            for (j, row) in slice.chunks(nx).enumerate() {
                let first = row.iter().position(|&v| v == label);
                if let Some(i0) = first {
                    let i1 = row.iter().rposition(|&v| v == label).unwrap_or(i0);
                    let rb = VoxelBox {
                        min: [i0, j, k],
                        max: [i1, j, k],
                    };
                    b = VoxelBox::merge(b, Some(rb));
                }
            }
            b
        })
        .reduce_with(VoxelBox::union)
}

/// Squared Euclidean distance (mm²) from every voxel of the region to the nearest voxel
/// where `feature` is true, along the active axes; infinity where there is none.
fn edt_sq(region: &Region, feature: &[bool]) -> Vec<f64> {
    let mut d: Vec<f64> = feature
        .iter()
        .map(|&f| if f { 0.0 } else { f64::INFINITY })
        .collect();
    let mut line = Vec::new();
    let mut out = Vec::new();
    let (mut v, mut z) = (Vec::new(), Vec::new());
    for a in 0..3 {
        if !region.active[a] || region.dims[a] < 2 {
            continue;
        }
        let n = region.dims[a];
        let s = region.stride(a);
        let (b, c) = match a {
            0 => (1, 2),
            1 => (0, 2),
            _ => (0, 1),
        };
        for ub in 0..region.dims[b] {
            for uc in 0..region.dims[c] {
                let base = ub * region.stride(b) + uc * region.stride(c);
                line.clear();
                line.extend((0..n).map(|t| d[base + t * s]));
                out.resize(n, 0.0);
                squared_distance_1d(&line, region.spacing[a], &mut out, &mut v, &mut z);
                for t in 0..n {
                    d[base + t * s] = out[t];
                }
            }
        }
    }
    d
}

/// Connected components of the voxels where `mask == want`: component id per voxel
/// (0 = not in any) and each component's voxel count, border contact and first voxel.
struct Components {
    id: Vec<u32>,
    sizes: Vec<usize>,
    touches_border: Vec<bool>,
    first: Vec<usize>,
}

fn components(region: &Region, mask: &[bool], want: bool) -> Components {
    let mut c = Components {
        id: vec![0; mask.len()],
        sizes: Vec::new(),
        touches_border: Vec::new(),
        first: Vec::new(),
    };
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] != want || c.id[start] != 0 {
            continue;
        }
        let id = c.sizes.len() as u32 + 1;
        let (mut size, mut border) = (0usize, false);
        c.id[start] = id;
        stack.push(start);
        while let Some(l) = stack.pop() {
            size += 1;
            border |= region.on_border(l);
            region.for_neighbours(l, |n| {
                if mask[n] == want && c.id[n] == 0 {
                    c.id[n] = id;
                    stack.push(n);
                }
            });
        }
        c.sizes.push(size);
        c.touches_border.push(border);
        c.first.push(start);
    }
    c
}

fn active_axes(ed: &Editor, scope: Scope) -> [bool; 3] {
    match scope {
        Scope::Volume => [true; 3],
        Scope::Plane(plane) => {
            let mut a = [true; 3];
            a[normal_axis(&ed.labels().geometry, plane)] = false;
            a
        }
    }
}

/// Applies `op` to `label` as one undo step; returns the dirty box (None when nothing
/// changed or the label is absent). Writes go through the editor's locks and policy.
pub fn morphology(
    ed: &mut Editor,
    label: u8,
    op: Morphology,
    scope: Scope,
) -> Result<Option<VoxelBox>, ToolError> {
    let radius = match op {
        Morphology::Dilate { radius_mm } | Morphology::Erode { radius_mm } => {
            if !(radius_mm.is_finite() && radius_mm > 0.0) {
                return Err(ToolError::BadRadius(radius_mm));
            }
            radius_mm
        }
        _ => 0.0,
    };
    let g = ed.labels().geometry.clone();
    let Some(bb) = label_bbox(ed.labels(), label) else {
        return Ok(None);
    };
    let active = active_axes(ed, scope);
    let spacing: [f64; 3] = g.spacing_mm.into();
    let mut lo = [0usize; 3];
    let mut dims = [0usize; 3];
    for a in 0..3 {
        let margin = if !active[a] {
            0
        } else if matches!(op, Morphology::Dilate { .. }) {
            (radius / spacing[a]).ceil() as usize + 1
        } else {
            1
        };
        lo[a] = bb.min[a].saturating_sub(margin);
        let hi = (bb.max[a] + margin).min(g.dims[a] - 1);
        dims[a] = hi - lo[a] + 1;
    }
    let region = Region {
        lo,
        dims,
        active,
        spacing,
    };
    let mask = region.mask(ed.labels(), label);
    let r2 = radius * radius * (1.0 + 1e-9) + 1e-12;
    let new: Vec<bool> = match op {
        Morphology::Dilate { .. } => edt_sq(&region, &mask).iter().map(|&d| d <= r2).collect(),
        Morphology::Erode { .. } => {
            let bg: Vec<bool> = mask.iter().map(|&m| !m).collect();
            let d = edt_sq(&region, &bg);
            mask.iter().zip(&d).map(|(&m, &d)| m && d > r2).collect()
        }
        Morphology::FillHoles => {
            let c = components(&region, &mask, false);
            mask.iter()
                .zip(&c.id)
                .map(|(&m, &id)| m || (id > 0 && !c.touches_border[id as usize - 1]))
                .collect()
        }
        Morphology::RemoveIslands { min_volume_mm3 } => {
            let voxel_mm3 = spacing.iter().product::<f64>();
            let c = components(&region, &mask, true);
            c.id.iter()
                .map(|&id| id > 0 && c.sizes[id as usize - 1] as f64 * voxel_mm3 >= min_volume_mm3)
                .collect()
        }
        Morphology::KeepLargest => {
            let c = components(&region, &mask, true);
            // Group components per slice in plane mode, all together in 3D.
            let group_axis = (0..3).find(|&a| !active[a]);
            let group = |comp: usize| group_axis.map_or(0, |a| region.unravel(c.first[comp])[a]);
            let ngroups = group_axis.map_or(1, |a| dims[a]);
            let mut best: Vec<Option<usize>> = vec![None; ngroups];
            for comp in 0..c.sizes.len() {
                let gi = group(comp);
                if best[gi].is_none_or(|b| c.sizes[comp] > c.sizes[b]) {
                    best[gi] = Some(comp);
                }
            }
            c.id.iter()
                .map(|&id| id > 0 && best[group(id as usize - 1)] == Some(id as usize - 1))
                .collect()
        }
    };
    let name = op.name();
    in_transaction(ed, name, |ed| {
        let mut dirty: Option<VoxelBox> = None;
        for (l, (&old, &now)) in mask.iter().zip(&new).enumerate() {
            if old == now {
                continue;
            }
            let p = region.global(l);
            if ed.set(p, if now { label } else { 0 }) {
                dirty = VoxelBox::merge(dirty, Some(VoxelBox::point(p)));
            }
        }
        Ok(dirty)
    })
}

/// Signed distance (mm, negative inside) of a 2D mask: distance to the shape outside
/// minus distance to the background inside.
fn signed_distance(region: &Region, mask: &[bool]) -> Vec<f64> {
    let to_fg = edt_sq(region, mask);
    let bg: Vec<bool> = mask.iter().map(|&m| !m).collect();
    let to_bg = edt_sq(region, &bg);
    to_fg
        .iter()
        .zip(&to_bg)
        .map(|(&f, &b)| f.sqrt() - b.sqrt())
        .collect()
}

/// Shape-based interpolation of `label` along the normal of `plane`: for every pair of
/// consecutive annotated slices with unannotated slices between them, the signed
/// distance maps of the two are blended linearly by slice position and the voxels
/// where the blend is `<= 0` receive the label. One undo step for all gaps.
pub fn interpolate_slices(
    ed: &mut Editor,
    label: u8,
    plane: Plane,
) -> Result<Option<VoxelBox>, ToolError> {
    let g = ed.labels().geometry.clone();
    let Some(bb) = label_bbox(ed.labels(), label) else {
        return Ok(None);
    };
    let ax = normal_axis(&g, plane);
    let mut lo = [0usize; 3];
    let mut dims = [1usize; 3];
    let mut active = [true; 3];
    active[ax] = false;
    for a in 0..3 {
        if a == ax {
            continue;
        }
        lo[a] = bb.min[a].saturating_sub(1);
        dims[a] = (bb.max[a] + 1).min(g.dims[a] - 1) - lo[a] + 1;
    }
    let at_layer = |s: usize| {
        let mut r = Region {
            lo,
            dims,
            active,
            spacing: g.spacing_mm.into(),
        };
        r.lo[ax] = s;
        r
    };
    let annotated: Vec<usize> = (bb.min[ax]..=bb.max[ax])
        .filter(|&s| at_layer(s).mask(ed.labels(), label).contains(&true))
        .collect();
    in_transaction(ed, "Interpolate slices", |ed| {
        let mut dirty: Option<VoxelBox> = None;
        for pair in annotated.windows(2) {
            let (s0, s1) = (pair[0], pair[1]);
            if s1 <= s0 + 1 {
                continue;
            }
            let r0 = at_layer(s0);
            let sd0 = signed_distance(&r0, &r0.mask(ed.labels(), label));
            let r1 = at_layer(s1);
            let sd1 = signed_distance(&r1, &r1.mask(ed.labels(), label));
            for s in s0 + 1..s1 {
                // Weights (s1 - s) and (s - s0): the blend's sign without rounding of t.
                let (w0, w1) = ((s1 - s) as f64, (s - s0) as f64);
                let r = at_layer(s);
                for (l, (a, b)) in sd0.iter().zip(&sd1).enumerate() {
                    if w0 * a + w1 * b <= 0.0 {
                        let p = r.global(l);
                        if ed.set(p, label) {
                            dirty = VoxelBox::merge(dirty, Some(VoxelBox::point(p)));
                        }
                    }
                }
            }
        }
        Ok(dirty)
    })
}

/// [`interpolate_slices`] of `label` along the axial axis, only between axial layers
/// `from..=to`: the interpolation runs on a scratch copy holding the label only in those
/// layers (locks lifted there), and the new voxels are written through `ed` (locks,
/// policy) as one undo step.
pub fn interpolate_between(
    ed: &mut Editor,
    label: u8,
    from: usize,
    to: usize,
) -> Result<Option<VoxelBox>, ToolError> {
    let labels = ed.labels();
    let g = labels.geometry.clone();
    let ax = normal_axis(&g, Plane::Axial);
    let mut scratch = labels.clone();
    for k in 0..g.dims[2] {
        for j in 0..g.dims[1] {
            for i in 0..g.dims[0] {
                let idx = g.index(i, j, k);
                if scratch.voxels[idx] == label && !(from..=to).contains(&[i, j, k][ax]) {
                    scratch.voxels[idx] = 0;
                }
            }
        }
    }
    let mut table = ed.table().clone();
    table.labels.iter_mut().for_each(|l| l.locked = false);
    let mut work = Editor::new(scratch, table);
    let Some(bb) = interpolate_slices(&mut work, label, Plane::Axial)? else {
        return Ok(None);
    };
    // The committed step's box is the changed voxels' box.
    in_transaction(ed, "Interpolate slices", |ed| {
        for k in bb.min[2]..=bb.max[2] {
            for j in bb.min[1]..=bb.max[1] {
                for i in bb.min[0]..=bb.max[0] {
                    let idx = g.index(i, j, k);
                    if work.labels().voxels[idx] == label {
                        ed.set_index(idx, label);
                    }
                }
            }
        }
        Ok(None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edt_is_anisotropic_and_exact() {
        let region = Region {
            lo: [0; 3],
            dims: [5, 4, 1],
            active: [true, true, false],
            spacing: [1.0, 2.0, 3.0],
        };
        let mut f = vec![false; 20];
        f[0] = true;
        let d = edt_sq(&region, &f);
        for (l, &dl) in d.iter().enumerate() {
            let p = region.unravel(l);
            let want = (p[0] as f64).powi(2) + (2.0 * p[1] as f64).powi(2);
            assert!((dl - want).abs() < 1e-9, "{p:?}: {dl} vs {want}");
        }
        assert!(
            edt_sq(&region, &[false; 20])
                .iter()
                .all(|d| d.is_infinite())
        );
    }
}
