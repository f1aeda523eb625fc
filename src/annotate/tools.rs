//! Editing tools, sized in world millimetres, each one a single undo step.
//!
//! - [`paint_stroke`] / [`Stroke`]: brush and eraser (value 0), a disc in a view plane or
//!   a ball, round or square, optionally limited to an HU window of the CT. Successive
//!   mouse positions are joined exactly: each segment rasterises the swept shape (a
//!   capsule for round brushes, the swept square/cube for square ones), so fast drags
//!   leave no gaps.
//! - [`flood_fill`]: region growing from a seed, in a view plane or in 3D.
//! - [`polygon_fill`]: lasso fill of one slice (even-odd rule).
//! - [`morphology`] (dilate, erode, fill holes, remove islands, keep largest) and
//!   [`interpolate_slices`] (shape-based, signed distance transforms).
//!
//! A voxel belongs to a shape when its centre does. The "slice" of a view plane through
//! a point is the layer of voxels along the voxel axis most parallel to the plane normal
//! ([`normal_axis`]) at the point's rounded index; for axis-aligned grids it is exactly
//! the displayed slice. Every write goes through the [`Editor`] (locks, overwrite policy)
//! and only the bounding box of the shape is visited.

use nalgebra::{Matrix3, Point3, Vector3};

use super::editor::Editor;
use crate::view::Plane;
use crate::volume::VoxelBox;
use crate::volume::{CtVolume, Geometry};

pub use super::morph::{Morphology, interpolate_slices, morphology};

/// Errors of the editing tools.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ToolError {
    #[error("an HU limit of {lo}..={hi} needs the CT, but none was given")]
    MissingCt { lo: i16, hi: i16 },
    #[error("the CT grid {ct:?} does not match the label grid {labels:?}")]
    GridMismatch { ct: [usize; 3], labels: [usize; 3] },
    #[error("seed voxel {seed:?} lies outside the volume {dims:?}")]
    SeedOutside { seed: [usize; 3], dims: [usize; 3] },
    #[error("point {0:?} mm lies outside the volume's slices")]
    OutsideVolume([f64; 3]),
    #[error("a polygon needs at least 3 vertices, got {0}")]
    TooFewVertices(usize),
    #[error("radius {0} mm must be positive and finite")]
    BadRadius(f64),
    #[error("HU range {lo}..={hi} is empty")]
    EmptyRange { lo: i16, hi: i16 },
}

/// 2D (in the slices of one view plane) or 3D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Plane(Plane),
    Volume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrushShape {
    /// Disc or ball (Euclidean distance in mm).
    Round,
    /// Square or cube with sides along the view's screen axes (the LPS axes for a ball),
    /// `radius_mm` being half the side.
    Square,
}

/// Where a brush paints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrushExtent {
    /// The slice of a view plane through the first point of each segment.
    Disc(Plane),
    /// 3D.
    Ball,
}

/// A brush (value > 0) or eraser (value 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Brush {
    pub radius_mm: f64,
    pub shape: BrushShape,
    pub extent: BrushExtent,
    pub value: u8,
    /// Paint only voxels whose CT value lies in `lo..=hi` HU.
    pub hu_range: Option<(i16, i16)>,
}

impl Brush {
    /// A round disc brush in `plane`.
    pub fn disc(plane: Plane, radius_mm: f64, value: u8) -> Self {
        Self {
            radius_mm,
            shape: BrushShape::Round,
            extent: BrushExtent::Disc(plane),
            value,
            hu_range: None,
        }
    }

    /// A round 3D brush.
    pub fn ball(radius_mm: f64, value: u8) -> Self {
        Self {
            extent: BrushExtent::Ball,
            ..Self::disc(Plane::Axial, radius_mm, value)
        }
    }

    /// The eraser: a brush writing 0.
    pub fn eraser(extent: BrushExtent, radius_mm: f64) -> Self {
        Self {
            extent,
            ..Self::disc(Plane::Axial, radius_mm, 0)
        }
    }

    pub fn name(&self) -> &'static str {
        if self.value == 0 { "Eraser" } else { "Brush" }
    }
}

/// World offset (mm) of one voxel step along i, j and k (columns).
pub(crate) fn voxel_steps(g: &Geometry) -> Matrix3<f64> {
    g.direction * Matrix3::from_diagonal(&g.spacing_mm)
}

/// The voxel axis most parallel to the normal of `plane`.
pub fn normal_axis(g: &Geometry, plane: Plane) -> usize {
    let n = plane.screen_axes()[2];
    (0..3)
        .max_by(|&a, &b| {
            let da = g.direction.column(a).dot(&n).abs();
            let db = g.direction.column(b).dot(&n).abs();
            da.total_cmp(&db)
        })
        .unwrap_or(2)
}

/// Index along [`normal_axis`] of the slice of `plane` through `p`.
pub fn slice_at(g: &Geometry, plane: Plane, p: Point3<f64>) -> Result<usize, ToolError> {
    let ax = normal_axis(g, plane);
    let v = g.voxel_at_world(p)[ax].round();
    if v < 0.0 || v >= g.dims[ax] as f64 || !v.is_finite() {
        return Err(ToolError::OutsideVolume([p.x, p.y, p.z]));
    }
    Ok(v as usize)
}

/// The CT voxels and the HU window `lo..=hi` of an intensity limit.
pub(crate) type HuLimit<'a> = (&'a [i16], i16, i16);

/// Checks that the CT (when an HU range needs it) matches the labels.
pub(crate) fn check_ct<'a>(
    ed: &Editor,
    hu_range: Option<(i16, i16)>,
    ct: Option<&'a CtVolume>,
) -> Result<Option<HuLimit<'a>>, ToolError> {
    let Some((lo, hi)) = hu_range else {
        return Ok(None);
    };
    if lo > hi {
        return Err(ToolError::EmptyRange { lo, hi });
    }
    let ct = ct.ok_or(ToolError::MissingCt { lo, hi })?;
    let labels = ed.labels().geometry.dims;
    if ct.geometry.dims != labels {
        return Err(ToolError::GridMismatch {
            ct: ct.geometry.dims,
            labels,
        });
    }
    Ok(Some((&ct.voxels, lo, hi)))
}

/// Runs `f` inside one transaction named `name` and returns the dirty box (the
/// committed step's box, or `f`'s own when the transaction joins an outer one).
pub(crate) fn in_transaction(
    ed: &mut Editor,
    name: &str,
    f: impl FnOnce(&mut Editor) -> Result<Option<VoxelBox>, ToolError>,
) -> Result<Option<VoxelBox>, ToolError> {
    ed.begin(name);
    let r = f(ed);
    let committed = ed.commit();
    if committed.is_none()
        && let Ok(b) = &r
    {
        // Joined an outer transaction: the display still shows the change now.
        ed.note_open_changes(*b);
    }
    r.map(|b| committed.or(b))
}

/// Clamped voxel index range `[lo, hi]` around continuous coordinate `c` ± `ext`.
fn axis_range(lo_c: f64, hi_c: f64, ext: f64, dim: usize) -> Option<(usize, usize)> {
    let lo = (lo_c - ext).floor().max(0.0);
    let hi = (hi_c + ext).ceil().min(dim as f64 - 1.0);
    (lo <= hi && hi >= 0.0 && lo.is_finite() && hi.is_finite())
        .then_some((lo as usize, hi as usize))
}

fn nearest_voxel(g: &Geometry, v: Vector3<f64>) -> Option<[usize; 3]> {
    let mut out = [0usize; 3];
    for a in 0..3 {
        let r = v[a].round();
        if !(r >= 0.0 && r < g.dims[a] as f64) {
            return None;
        }
        out[a] = r as usize;
    }
    Some(out)
}

/// A brush drag in progress. Use inside an open transaction
/// ([`Editor::begin`] … [`Editor::commit`]) so the whole drag is one undo step, or use
/// [`paint_stroke`] for a complete polyline.
#[derive(Debug, Clone)]
pub struct Stroke {
    pub brush: Brush,
    last: Option<Point3<f64>>,
}

impl Stroke {
    pub fn new(brush: Brush) -> Self {
        Self { brush, last: None }
    }

    /// Adds a mouse position (world mm): paints the segment from the previous position
    /// (or a single stamp for the first). Returns the box of the voxels changed.
    pub fn add_point(
        &mut self,
        ed: &mut Editor,
        ct: Option<&CtVolume>,
        p: Point3<f64>,
    ) -> Result<Option<VoxelBox>, ToolError> {
        let r = self.brush.radius_mm;
        if !(r.is_finite() && r > 0.0) {
            return Err(ToolError::BadRadius(r));
        }
        let hu = check_ct(ed, self.brush.hu_range, ct)?;
        let a = self.last.unwrap_or(p);
        self.last = Some(p);
        let changed = paint_segment(ed, &self.brush, hu, a, p);
        ed.note_open_changes(changed);
        Ok(changed)
    }
}

/// Paints a polyline of mouse positions (world mm) as one undo step.
pub fn paint_stroke(
    ed: &mut Editor,
    brush: &Brush,
    ct: Option<&CtVolume>,
    points: &[Point3<f64>],
) -> Result<Option<VoxelBox>, ToolError> {
    let mut stroke = Stroke::new(*brush);
    in_transaction(ed, brush.name(), |ed| {
        let mut dirty = None;
        for &p in points {
            dirty = VoxelBox::merge(dirty, stroke.add_point(ed, ct, p)?);
        }
        Ok(dirty)
    })
}

/// Rasterises the brush swept from `a` to `b`.
fn paint_segment(
    ed: &mut Editor,
    brush: &Brush,
    hu: Option<HuLimit<'_>>,
    a: Point3<f64>,
    b: Point3<f64>,
) -> Option<VoxelBox> {
    let g = ed.labels().geometry.clone();
    let m = voxel_steps(&g);
    let r = brush.radius_mm;
    let r2 = r * r * (1.0 + 1e-9) + 1e-12;
    let va = g.voxel_at_world(a);
    let vb = g.voxel_at_world(b);
    let (axes, layer) = match brush.extent {
        BrushExtent::Disc(plane) => {
            let ax = normal_axis(&g, plane);
            let l = va[ax].round();
            if !(l >= 0.0 && l < g.dims[ax] as f64) {
                return None;
            }
            (plane.screen_axes(), Some((ax, l as usize)))
        }
        BrushExtent::Ball => (Plane::Axial.screen_axes(), None),
    };
    // In-plane: remove the normal component of offsets.
    let flatten = |d: Vector3<f64>| match layer {
        Some(_) => d - axes[2] * d.dot(&axes[2]),
        None => d,
    };
    let seg = flatten(b - a);
    let seg2 = seg.norm_squared();
    let reach = match brush.shape {
        BrushShape::Round => r,
        BrushShape::Square => r * 3f64.sqrt(),
    };
    let mut range = [(0usize, 0usize); 3];
    for ax in 0..3 {
        if let Some((lax, l)) = layer
            && lax == ax
        {
            range[ax] = (l, l);
            continue;
        }
        range[ax] = axis_range(
            va[ax].min(vb[ax]),
            va[ax].max(vb[ax]),
            reach / g.spacing_mm[ax],
            g.dims[ax],
        )?;
    }
    let n_axes = if layer.is_some() { 2 } else { 3 };
    let inside = |d: Vector3<f64>| -> bool {
        let d = flatten(d);
        match brush.shape {
            BrushShape::Round => {
                let t = if seg2 > 0.0 {
                    (d.dot(&seg) / seg2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                (d - seg * t).norm_squared() <= r2
            }
            BrushShape::Square => {
                let (mut t0, mut t1) = (0.0f64, 1.0f64);
                for e in &axes[..n_axes] {
                    let p = d.dot(e);
                    let q = seg.dot(e);
                    let tol = r * (1.0 + 1e-9) + 1e-12;
                    if q.abs() < 1e-12 {
                        if p.abs() > tol {
                            return false;
                        }
                    } else {
                        let (x, y) = ((p - tol) / q, (p + tol) / q);
                        t0 = t0.max(x.min(y));
                        t1 = t1.min(x.max(y));
                    }
                }
                t0 <= t1
            }
        }
    };
    let value = brush.value;
    let mut dirty: Option<VoxelBox> = None;
    let mut write = |ed: &mut Editor, p: [usize; 3]| {
        let idx = g.index(p[0], p[1], p[2]);
        if let Some((ct, lo, hi)) = hu
            && !(lo..=hi).contains(&ct[idx])
        {
            return;
        }
        if ed.set_index(idx, value) {
            dirty = VoxelBox::merge(dirty, Some(VoxelBox::point(p)));
        }
    };
    for k in range[2].0..=range[2].1 {
        for j in range[1].0..=range[1].1 {
            let row = Vector3::new(range[0].0 as f64, j as f64, k as f64) - va;
            let mut d = m * row;
            let step = m.column(0).into_owned();
            for i in range[0].0..=range[0].1 {
                if inside(d) {
                    write(ed, [i, j, k]);
                }
                d += step;
            }
        }
    }
    // The voxels under the end points are always painted, so that brushes smaller than
    // a voxel still draw.
    for v in [va, vb] {
        if let Some(mut p) = nearest_voxel(&g, v) {
            if let Some((ax, l)) = layer {
                p[ax] = l;
            }
            write(ed, p);
        }
    }
    dirty
}

/// Region growing from a seed voxel.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionGrow {
    pub seed: [usize; 3],
    /// The value written into the region.
    pub value: u8,
    /// `Plane(p)`: the slice of `p` through the seed, 4-connected; `Volume`: 6-connected.
    pub scope: Scope,
    /// Only voxels with CT in `lo..=hi` HU belong to the region (needs the CT).
    pub hu_range: Option<(i16, i16)>,
    /// Only voxels whose current label is in this set belong to the region.
    pub within_labels: Option<Vec<u8>>,
}

impl RegionGrow {
    /// A plain bucket fill: with neither `hu_range` nor `within_labels`, the region is
    /// the connected voxels sharing the seed's label.
    pub fn new(seed: [usize; 3], value: u8, scope: Scope) -> Self {
        Self {
            seed,
            value,
            scope,
            hu_range: None,
            within_labels: None,
        }
    }
}

/// Fills the connected region of the seed (iterative scanline fill with an explicit
/// stack, no recursion) as one undo step.
/// Region membership is decided on the labels as they were before the fill; voxels the
/// editor refuses (locked, policy) stay unchanged but do not block the growth.
pub fn flood_fill(
    ed: &mut Editor,
    params: &RegionGrow,
    ct: Option<&CtVolume>,
) -> Result<Option<VoxelBox>, ToolError> {
    let g = ed.labels().geometry.clone();
    let dims = g.dims;
    let seed = params.seed;
    if (0..3).any(|a| seed[a] >= dims[a]) {
        return Err(ToolError::SeedOutside { seed, dims });
    }
    let hu = check_ct(ed, params.hu_range, ct)?;
    let mut allowed = [false; 256];
    let seed_label = ed.labels().voxels[g.index(seed[0], seed[1], seed[2])];
    match &params.within_labels {
        Some(set) => set.iter().for_each(|&l| allowed[l as usize] = true),
        None if hu.is_none() => allowed[seed_label as usize] = true,
        None => allowed = [true; 256],
    }
    let (mut lo, mut hi) = ([0usize; 3], [dims[0] - 1, dims[1] - 1, dims[2] - 1]);
    if let Scope::Plane(plane) = params.scope {
        let ax = normal_axis(&g, plane);
        lo[ax] = seed[ax];
        hi[ax] = seed[ax];
    }
    let bdims = [0, 1, 2].map(|a| hi[a] - lo[a] + 1);
    let local =
        |p: [usize; 3]| (p[0] - lo[0]) + bdims[0] * ((p[1] - lo[1]) + bdims[1] * (p[2] - lo[2]));
    let nlocal = bdims.iter().product::<usize>();
    let mut visited = vec![0u64; nlocal.div_ceil(64)];
    let belongs = |ed: &Editor, idx: usize| {
        allowed[ed.labels().voxels[idx] as usize]
            && hu.is_none_or(|(ct, lo, hi)| (lo..=hi).contains(&ct[idx]))
    };
    let name = if params.hu_range.is_some() || params.within_labels.is_some() {
        "Region growing"
    } else {
        "Fill"
    };
    let is_visited = |visited: &[u64], l: usize| visited[l / 64] & (1 << (l % 64)) != 0;
    let mark = |visited: &mut [u64], l: usize| visited[l / 64] |= 1 << (l % 64);
    in_transaction(ed, name, |ed| {
        if !belongs(ed, g.index(seed[0], seed[1], seed[2])) {
            return Ok(None);
        }
        // Scanline fill: each popped voxel grows into the run along i it belongs to;
        // the neighbouring rows (j ± 1, k ± 1) of the run seed new runs.
        let mut dirty: Option<VoxelBox> = None;
        let mut stack = vec![seed];
        mark(&mut visited, local(seed));
        while let Some([i, j, k]) = stack.pop() {
            let row_g = g.index(0, j, k);
            let row_l = local([lo[0], j, k]);
            let (mut l, mut r) = (i, i);
            while l > lo[0]
                && !is_visited(&visited, row_l + l - 1 - lo[0])
                && belongs(ed, row_g + l - 1)
            {
                l -= 1;
                mark(&mut visited, row_l + l - lo[0]);
            }
            while r < hi[0]
                && !is_visited(&visited, row_l + r + 1 - lo[0])
                && belongs(ed, row_g + r + 1)
            {
                r += 1;
                mark(&mut visited, row_l + r - lo[0]);
            }
            let mut changed: Option<(usize, usize)> = None;
            for x in l..=r {
                if ed.set_index(row_g + x, params.value) {
                    changed = Some(changed.map_or((x, x), |(a, _)| (a, x)));
                }
            }
            if let Some((a, b)) = changed {
                let run = VoxelBox {
                    min: [a, j, k],
                    max: [b, j, k],
                };
                dirty = VoxelBox::merge(dirty, Some(run));
            }
            let mut rows = [None; 4];
            if j > lo[1] {
                rows[0] = Some((j - 1, k));
            }
            if j < hi[1] {
                rows[1] = Some((j + 1, k));
            }
            if k > lo[2] {
                rows[2] = Some((j, k - 1));
            }
            if k < hi[2] {
                rows[3] = Some((j, k + 1));
            }
            for (nj, nk) in rows.into_iter().flatten() {
                let ng = g.index(0, nj, nk);
                let nl = local([lo[0], nj, nk]);
                let mut in_run = false;
                for x in l..=r {
                    if !is_visited(&visited, nl + x - lo[0]) && belongs(ed, ng + x) {
                        if !in_run {
                            mark(&mut visited, nl + x - lo[0]);
                            stack.push([x, nj, nk]);
                        }
                        in_run = true;
                    } else {
                        in_run = false;
                    }
                }
            }
        }
        Ok(dirty)
    })
}

/// Fills the voxels of the slice of `plane` through `vertices[0]` whose centres lie
/// inside the polygon (projected onto the plane), by the **even-odd** rule: a
/// self-intersecting lasso leaves its doubly enclosed parts empty. One undo step.
pub fn polygon_fill(
    ed: &mut Editor,
    plane: Plane,
    vertices: &[Point3<f64>],
    value: u8,
) -> Result<Option<VoxelBox>, ToolError> {
    if vertices.len() < 3 {
        return Err(ToolError::TooFewVertices(vertices.len()));
    }
    let g = ed.labels().geometry.clone();
    let ax = normal_axis(&g, plane);
    let layer = slice_at(&g, plane, vertices[0])?;
    let [right, down, _] = plane.screen_axes();
    let v0 = vertices[0];
    let poly: Vec<(f64, f64)> = vertices
        .iter()
        .map(|v| ((v - v0).dot(&right), (v - v0).dot(&down)))
        .collect();
    let vv: Vec<Vector3<f64>> = vertices.iter().map(|&v| g.voxel_at_world(v)).collect();
    let mut range = [(layer, layer); 3];
    for (a, r) in range.iter_mut().enumerate() {
        if a == ax {
            continue;
        }
        let lo = vv.iter().map(|v| v[a]).fold(f64::MAX, f64::min);
        let hi = vv.iter().map(|v| v[a]).fold(f64::MIN, f64::max);
        match axis_range(lo, hi, 1.0, g.dims[a]) {
            Some(x) => *r = x,
            None => return Ok(None),
        }
    }
    let m = voxel_steps(&g);
    let origin = g.voxel_at_world(v0);
    in_transaction(ed, "Polygon fill", |ed| {
        let mut dirty: Option<VoxelBox> = None;
        for k in range[2].0..=range[2].1 {
            for j in range[1].0..=range[1].1 {
                for i in range[0].0..=range[0].1 {
                    let d = m * (Vector3::new(i as f64, j as f64, k as f64) - origin);
                    if point_in_polygon_even_odd(&poly, d.dot(&right), d.dot(&down))
                        && ed.set_index(g.index(i, j, k), value)
                    {
                        dirty = VoxelBox::merge(dirty, Some(VoxelBox::point([i, j, k])));
                    }
                }
            }
        }
        Ok(dirty)
    })
}

/// Even-odd point-in-polygon test (ray towards +x, half-open edges).
pub fn point_in_polygon_even_odd(poly: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}
