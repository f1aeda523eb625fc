//! View geometry of the three slice views, GUI-free: which world plane a view shows,
//! how screen pixels map to world millimetres and to voxels, zoom and pan.
//!
//! Screen axes follow the radiological convention: axial and coronal views show the
//! patient's left on the screen's right; axial has anterior up, coronal and sagittal
//! superior up; sagittal has anterior on the left. Everything is in millimetres, so
//! anisotropic voxels get the right aspect ratio.

use nalgebra::{Matrix4, Point3, Vector2, Vector3};

use crate::volume::{Geometry, patient_direction_letter};

/// The three orthogonal planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    Axial,
    Coronal,
    Sagittal,
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Axial, Plane::Coronal, Plane::Sagittal];

    pub fn name(self) -> &'static str {
        match self {
            Plane::Axial => "Axial",
            Plane::Coronal => "Coronal",
            Plane::Sagittal => "Sagittal",
        }
    }

    /// World (LPS) directions of screen right, screen down and the plane normal.
    pub fn screen_axes(self) -> [Vector3<f64>; 3] {
        match self {
            // right = patient left (+x), down = posterior (+y), normal = superior.
            Plane::Axial => [Vector3::x(), Vector3::y(), Vector3::z()],
            // right = patient left (+x), down = inferior (-z), normal = posterior.
            Plane::Coronal => [Vector3::x(), -Vector3::z(), Vector3::y()],
            // right = posterior (+y), down = inferior (-z), normal = patient left.
            Plane::Sagittal => [Vector3::y(), -Vector3::z(), Vector3::x()],
        }
    }

    /// Letters at the left, right, top and bottom edges of the view.
    pub fn edge_letters(self) -> [char; 4] {
        let [right, down, _] = self.screen_axes();
        [letter(-right), letter(right), letter(-down), letter(down)]
    }
}

/// The patient direction a (signed, axis-aligned) LPS vector points to.
fn letter(v: Vector3<f64>) -> char {
    let a = v.iamax();
    patient_direction_letter(a, v[a] > 0.0)
}

/// Zoom and pan of one view. `zoom` 1 fits the whole volume in the view.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewState {
    pub plane: Plane,
    pub zoom: f64,
    /// Offset of the view centre from the volume centre, in screen millimetres
    /// (right, down).
    pub pan_mm: Vector2<f64>,
}

impl ViewState {
    pub fn new(plane: Plane) -> Self {
        Self {
            plane,
            zoom: 1.0,
            pan_mm: Vector2::zeros(),
        }
    }

    pub fn reset(&mut self) {
        *self = Self::new(self.plane);
    }
}

/// A view laid out on a screen rectangle: maps pixels (relative to the rectangle's
/// top-left corner) to world millimetres and voxels.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewFrame {
    pub plane: Plane,
    pub size_px: Vector2<f64>,
    pub mm_per_px: f64,
    /// World position shown at the centre of the rectangle (on the cursor's slice).
    pub center_mm: Point3<f64>,
    pub right: Vector3<f64>,
    pub down: Vector3<f64>,
    pub normal: Vector3<f64>,
}

/// The world-space bounding box of a grid's voxel centres.
pub fn world_bounds(g: &Geometry) -> (Point3<f64>, Point3<f64>) {
    let mut lo = Point3::new(f64::MAX, f64::MAX, f64::MAX);
    let mut hi = Point3::new(f64::MIN, f64::MIN, f64::MIN);
    for c in 0..8 {
        let v = Vector3::new(
            if c & 1 == 0 {
                -0.5
            } else {
                g.dims[0] as f64 - 0.5
            },
            if c & 2 == 0 {
                -0.5
            } else {
                g.dims[1] as f64 - 0.5
            },
            if c & 4 == 0 {
                -0.5
            } else {
                g.dims[2] as f64 - 0.5
            },
        );
        let w = g.world_at_voxel(v);
        for a in 0..3 {
            lo[a] = lo[a].min(w[a]);
            hi[a] = hi[a].max(w[a]);
        }
    }
    (lo, hi)
}

impl ViewFrame {
    /// Lays out `state` for `geometry` on a rectangle of `size_px`, showing the slice
    /// through `cursor_mm`.
    pub fn new(
        geometry: &Geometry,
        state: &ViewState,
        size_px: Vector2<f64>,
        cursor_mm: Point3<f64>,
    ) -> Self {
        let [right, down, normal] = state.plane.screen_axes();
        let (lo, hi) = world_bounds(geometry);
        let extent = hi - lo;
        let centre = Point3::from((lo.coords + hi.coords) / 2.0);
        let (w_mm, h_mm) = (extent.dot(&right).abs(), extent.dot(&down).abs());
        let fit = (w_mm / size_px.x.max(1.0)).max(h_mm / size_px.y.max(1.0)) * 1.02;
        let mm_per_px = fit / state.zoom.max(1e-6);
        let mut center_mm = centre + right * state.pan_mm.x + down * state.pan_mm.y;
        // Put the centre on the cursor's slice.
        center_mm += normal * (cursor_mm - center_mm).dot(&normal);
        Self {
            plane: state.plane,
            size_px,
            mm_per_px,
            center_mm,
            right,
            down,
            normal,
        }
    }

    /// World position under a pixel (relative to the view's top-left corner).
    pub fn world_at_px(&self, px: Vector2<f64>) -> Point3<f64> {
        let d = (px - self.size_px / 2.0) * self.mm_per_px;
        self.center_mm + self.right * d.x + self.down * d.y
    }

    /// Pixel (relative to the top-left corner) where a world position appears, and its
    /// distance from the view plane in mm.
    pub fn px_at_world(&self, world: Point3<f64>) -> (Vector2<f64>, f64) {
        let d = world - self.center_mm;
        (
            Vector2::new(d.dot(&self.right), d.dot(&self.down)) / self.mm_per_px
                + self.size_px / 2.0,
            d.dot(&self.normal),
        )
    }

    /// Transform from normalised device coordinates of the view rectangle (x right,
    /// y up, -1..1) to continuous voxel coordinates: the shader's `voxel_from_ndc`.
    pub fn voxel_from_ndc(&self, geometry: &Geometry) -> Matrix4<f64> {
        let vfw = geometry.voxel_from_world();
        let half = self.size_px / 2.0 * self.mm_per_px;
        let mut world_from_ndc = Matrix4::zeros();
        world_from_ndc
            .fixed_view_mut::<3, 1>(0, 0)
            .copy_from(&(self.right * half.x));
        world_from_ndc
            .fixed_view_mut::<3, 1>(0, 1)
            .copy_from(&(-self.down * half.y));
        world_from_ndc
            .fixed_view_mut::<3, 1>(0, 3)
            .copy_from(&self.center_mm.coords);
        world_from_ndc[(3, 3)] = 1.0;
        vfw * world_from_ndc
    }

    /// One screen pixel step to the right and down, in voxel coordinates.
    pub fn voxel_per_px(&self, geometry: &Geometry) -> [Vector3<f64>; 2] {
        let vfw = geometry.voxel_from_world();
        let lin = vfw.fixed_view::<3, 3>(0, 0);
        [
            lin * self.right * self.mm_per_px,
            lin * self.down * self.mm_per_px,
        ]
    }

    /// Zooms by `factor` keeping the world point under `px` fixed; returns the new state.
    pub fn zoom_about(&self, state: &ViewState, px: Vector2<f64>, factor: f64) -> ViewState {
        let zoom = (state.zoom * factor).clamp(0.1, 50.0);
        let actual = zoom / state.zoom;
        // The point under the mouse moves from d to d / actual relative to the centre;
        // shift the pan so it stays.
        let d = (px - self.size_px / 2.0) * self.mm_per_px;
        let shift = d * (1.0 - 1.0 / actual);
        ViewState {
            zoom,
            pan_mm: state.pan_mm + shift,
            ..*state
        }
    }

    /// Pans by a screen-pixel drag.
    pub fn pan_by(&self, state: &ViewState, drag_px: Vector2<f64>) -> ViewState {
        ViewState {
            pan_mm: state.pan_mm - drag_px * self.mm_per_px,
            ..*state
        }
    }
}

/// Distance in mm between neighbouring slices of a view: the spacing of the voxel axis
/// most parallel to the plane normal.
pub fn slice_step_mm(geometry: &Geometry, plane: Plane) -> f64 {
    let normal = plane.screen_axes()[2];
    let a = (0..3)
        .max_by(|&a, &b| {
            let da = geometry.direction.column(a).dot(&normal).abs();
            let db = geometry.direction.column(b).dot(&normal).abs();
            da.total_cmp(&db)
        })
        .unwrap_or(2);
    geometry.spacing_mm[a]
}

/// The slice number (1-based) and count of a view at the cursor.
pub fn slice_index(geometry: &Geometry, plane: Plane, cursor_mm: Point3<f64>) -> (usize, usize) {
    let normal = plane.screen_axes()[2];
    let (lo, hi) = world_bounds(geometry);
    let step = slice_step_mm(geometry, plane);
    let lo_n = lo.coords.dot(&normal).min(hi.coords.dot(&normal)) + step / 2.0;
    let hi_n = lo.coords.dot(&normal).max(hi.coords.dot(&normal)) - step / 2.0;
    let total = (((hi_n - lo_n) / step).round() as usize) + 1;
    let idx = ((cursor_mm.coords.dot(&normal) - lo_n) / step)
        .round()
        .clamp(0.0, (total - 1) as f64) as usize;
    (idx + 1, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aniso() -> Geometry {
        Geometry::axis_aligned([100, 80, 20], [0.7, 0.7, 3.0], [-35.0, -28.0, 100.0])
    }

    #[test]
    fn screen_world_round_trip_is_exact() {
        let g = aniso();
        for plane in Plane::ALL {
            let state = ViewState {
                plane,
                zoom: 2.5,
                pan_mm: Vector2::new(3.0, -7.5),
            };
            let cursor = Point3::new(1.0, 2.0, 130.0);
            let f = ViewFrame::new(&g, &state, Vector2::new(640.0, 480.0), cursor);
            for px in [
                Vector2::new(0.0, 0.0),
                Vector2::new(321.5, 17.25),
                Vector2::new(640.0, 480.0),
            ] {
                let w = f.world_at_px(px);
                let (back, depth) = f.px_at_world(w);
                assert!((back - px).norm() < 1e-9);
                assert!(depth.abs() < 1e-9);
                // The view plane passes through the cursor.
                assert!(((w - cursor).dot(&f.normal)).abs() < 1e-9);
                // The shader's transform agrees with the CPU mapping.
                let ndc = Vector2::new(px.x / 320.0 - 1.0, 1.0 - px.y / 240.0);
                let v = f
                    .voxel_from_ndc(&g)
                    .transform_point(&Point3::new(ndc.x, ndc.y, 0.0));
                assert!((v.coords - g.voxel_at_world(w)).norm() < 1e-9);
            }
        }
    }

    #[test]
    fn aspect_ratio_is_physical() {
        // Coronal view of 3 mm slices: 20 slices span 60 mm vertically, 100 voxels of
        // 0.7 mm span 70 mm horizontally: one mm is the same number of pixels both ways.
        let g = aniso();
        let f = ViewFrame::new(
            &g,
            &ViewState::new(Plane::Coronal),
            Vector2::new(500.0, 500.0),
            Point3::origin(),
        );
        let a = f.px_at_world(Point3::new(0.0, 0.0, 110.0)).0;
        let b = f.px_at_world(Point3::new(0.0, 0.0, 113.0)).0;
        let c = f.px_at_world(Point3::new(3.0, 0.0, 110.0)).0;
        assert!(((b - a).norm() - (c - a).norm()).abs() < 1e-9);
        // Superior is up on screen, patient left is right.
        assert!(b.y < a.y);
        assert!(c.x > a.x);
    }

    #[test]
    fn radiological_letters() {
        assert_eq!(Plane::Axial.edge_letters(), ['R', 'L', 'A', 'P']);
        assert_eq!(Plane::Coronal.edge_letters(), ['R', 'L', 'S', 'I']);
        assert_eq!(Plane::Sagittal.edge_letters(), ['A', 'P', 'S', 'I']);
    }

    #[test]
    fn views_stay_linked_after_zoom_and_pan() {
        let g = aniso();
        let size = Vector2::new(400.0, 300.0);
        let cursor = Point3::new(-3.0, 4.0, 121.0);
        let mut states = Plane::ALL.map(ViewState::new);
        // Zoom the axial view about a point and pan the coronal view.
        let f0 = ViewFrame::new(&g, &states[0], size, cursor);
        let under_mouse = f0.world_at_px(Vector2::new(100.0, 50.0));
        states[0] = f0.zoom_about(&states[0], Vector2::new(100.0, 50.0), 3.0);
        let f0b = ViewFrame::new(&g, &states[0], size, cursor);
        assert!((f0b.world_at_px(Vector2::new(100.0, 50.0)) - under_mouse).norm() < 1e-9);
        let f1 = ViewFrame::new(&g, &states[1], size, cursor);
        states[1] = f1.pan_by(&states[1], Vector2::new(25.0, -10.0));
        // Clicking a point in the axial view moves the cursor there; every view then
        // shows the new cursor on its plane at the pixel where it projects.
        let click = Vector2::new(250.0, 120.0);
        let new_cursor = f0b.world_at_px(click);
        for s in &states {
            let f = ViewFrame::new(&g, s, size, new_cursor);
            let (px, depth) = f.px_at_world(new_cursor);
            assert!(depth.abs() < 1e-9);
            assert!((f.world_at_px(px) - new_cursor).norm() < 1e-9);
        }
    }

    #[test]
    fn slice_numbers() {
        let g = aniso();
        let (i, n) = slice_index(&g, Plane::Axial, Point3::new(0.0, 0.0, 100.0));
        assert_eq!((i, n), (1, 20));
        let (i, _) = slice_index(&g, Plane::Axial, Point3::new(0.0, 0.0, 157.0));
        assert_eq!(i, 20);
        assert_eq!(
            slice_index(&g, Plane::Sagittal, Point3::new(-35.0, 0.0, 0.0)),
            (1, 100)
        );
        assert_eq!(slice_step_mm(&g, Plane::Coronal), 0.7);
    }
}
