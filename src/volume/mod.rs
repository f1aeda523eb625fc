//! The volume model: voxels (x fastest) on a grid placed in the DICOM patient frame (LPS).
//!
//! A [`Geometry`] is the grid: `dims`, `spacing_mm`, the world position of voxel (0,0,0)'s
//! centre (`origin_mm`) and the direction cosines of the three voxel axes. World
//! coordinates are millimetres in LPS (+x towards the patient's left, +y posterior,
//! +z superior), as DICOM stores them. NIfTI's RAS frame is reached only through
//! [`Geometry::to_ras_affine`] / [`Geometry::from_ras_affine`].
//!
//! CT is stored as i16 Hounsfield units ([`CtVolume`]), labels as u8 ([`LabelVolume`]).

pub mod distance;
mod resample;
mod voxel_box;
pub mod window;

pub use resample::{
    TrilinearCell, resample_labels_nearest, resample_trilinear, round_hu, sample_nearest,
    sample_trilinear,
};
pub use voxel_box::VoxelBox;
pub use window::WindowPreset;

use nalgebra::{Matrix3, Matrix4, Point3, Vector3};

/// Errors of the volume model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VolumeError {
    #[error("voxel buffer holds {got} values but dims {dims:?} need {expected}")]
    BufferSize {
        dims: [usize; 3],
        expected: usize,
        got: usize,
    },
    #[error("dims {0:?} contain a zero")]
    EmptyDims([usize; 3]),
    #[error("sub-volume start {start:?} + size {size:?} exceeds dims {dims:?}")]
    OutOfBounds {
        start: [usize; 3],
        size: [usize; 3],
        dims: [usize; 3],
    },
    #[error("spacing {0:?} mm is not positive and finite")]
    BadSpacing([f64; 3]),
    #[error("direction cosines are degenerate (determinant {0:.3e})")]
    DegenerateDirection(f64),
}

/// A regular grid placed in the patient (LPS) frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Geometry {
    /// Voxels along i, j, k (i fastest in memory).
    pub dims: [usize; 3],
    /// Distance between voxel centres along i, j, k in millimetres.
    pub spacing_mm: Vector3<f64>,
    /// World (LPS, mm) position of the centre of voxel (0, 0, 0).
    pub origin_mm: Vector3<f64>,
    /// Columns: unit vectors (LPS) of the i, j and k voxel axes.
    pub direction: Matrix3<f64>,
}

/// How close two grids must be to count as the same ([`Geometry::grid_difference`]).
pub struct GridTolerance {
    /// Relative difference of each spacing (float32 NIfTI headers against float64 DICOM
    /// positions; two tools' estimates of one slice spacing).
    pub spacing_relative: f64,
    /// Distance between origins, in voxels of the smaller spacing.
    pub origin_voxels: f64,
    /// Length of the difference of each pair of unit axis vectors.
    pub direction: f64,
}

/// The tolerance every check of "same grid" uses.
pub const GRID_TOLERANCE: GridTolerance = GridTolerance {
    spacing_relative: 1e-4,
    origin_voxels: 0.1,
    direction: 1e-3,
};

impl Geometry {
    /// An axis-aligned grid (identity direction: i→L, j→P, k→S).
    pub fn axis_aligned(dims: [usize; 3], spacing_mm: [f64; 3], origin_mm: [f64; 3]) -> Self {
        Self {
            dims,
            spacing_mm: Vector3::from(spacing_mm),
            origin_mm: Vector3::from(origin_mm),
            direction: Matrix3::identity(),
        }
    }

    /// Checks dims, spacing and direction.
    pub fn validate(&self) -> Result<(), VolumeError> {
        if self.dims.contains(&0) {
            return Err(VolumeError::EmptyDims(self.dims));
        }
        if self.spacing_mm.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(VolumeError::BadSpacing(self.spacing_mm.into()));
        }
        let det = self.direction.determinant();
        if !det.is_finite() || det.abs() < 1e-6 {
            return Err(VolumeError::DegenerateDirection(det));
        }
        Ok(())
    }

    /// How `other` differs from this grid, in words; `None` when both are the same grid
    /// within [`GRID_TOLERANCE`]: equal dims, spacings within a relative 1e-4, origins
    /// within 0.1 of the smaller voxel, axes within 1e-3 (0.06 degrees). Two volumes
    /// whose voxels are compared one by one must pass this: a label map flipped along x
    /// or shifted by 1,000 mm has the CT's dims and spacing but not its voxels.
    pub fn grid_difference(&self, other: &Geometry) -> Option<String> {
        let t = GRID_TOLERANCE;
        if self.dims != other.dims {
            return Some(format!("dims {:?} vs {:?}", self.dims, other.dims));
        }
        let spacing_ok = (0..3).all(|i| {
            let (x, y) = (self.spacing_mm[i], other.spacing_mm[i]);
            (x - y).abs() <= t.spacing_relative * x.abs().max(y.abs())
        });
        if !spacing_ok {
            return Some(format!(
                "spacing {:?} vs {:?} mm",
                <[f64; 3]>::from(self.spacing_mm),
                <[f64; 3]>::from(other.spacing_mm)
            ));
        }
        let axis_names = ["i (x)", "j (y)", "k (z)"];
        for (a, axis_name) in axis_names.iter().enumerate() {
            let (u, v) = (self.direction.column(a), other.direction.column(a));
            if (u - v).norm() > t.direction {
                let flipped = (u + v).norm() < t.direction;
                return Some(format!(
                    "the {} axis points along {:.3?} vs {:.3?}{}",
                    axis_name,
                    [u[0], u[1], u[2]],
                    [v[0], v[1], v[2]],
                    if flipped { " (flipped)" } else { "" }
                ));
            }
        }
        let smallest = self.spacing_mm.min().min(other.spacing_mm.min());
        let shift = (self.origin_mm - other.origin_mm).norm();
        let origin_ok = shift <= t.origin_voxels * smallest; // false for NaN
        if !origin_ok {
            return Some(format!(
                "origins {:.2?} vs {:.2?} mm ({shift:.2} mm apart)",
                <[f64; 3]>::from(self.origin_mm),
                <[f64; 3]>::from(other.origin_mm)
            ));
        }
        None
    }

    pub fn voxel_count(&self) -> usize {
        self.dims.iter().product()
    }

    /// Linear index of voxel (i, j, k), i fastest.
    #[inline]
    pub fn index(&self, i: usize, j: usize, k: usize) -> usize {
        i + self.dims[0] * (j + self.dims[1] * k)
    }

    /// Homogeneous transform from continuous voxel coordinates (voxel centres at
    /// integers) to world millimetres (LPS).
    pub fn world_from_voxel(&self) -> Matrix4<f64> {
        let linear = self.direction * Matrix3::from_diagonal(&self.spacing_mm);
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0).copy_from(&linear);
        m.fixed_view_mut::<3, 1>(0, 3).copy_from(&self.origin_mm);
        m
    }

    /// Inverse of [`Self::world_from_voxel`].
    pub fn voxel_from_world(&self) -> Matrix4<f64> {
        let linear = self.direction * Matrix3::from_diagonal(&self.spacing_mm);
        let inv = linear.try_inverse().unwrap_or_else(Matrix3::identity);
        let mut m = Matrix4::identity();
        m.fixed_view_mut::<3, 3>(0, 0).copy_from(&inv);
        m.fixed_view_mut::<3, 1>(0, 3)
            .copy_from(&(-(inv * self.origin_mm)));
        m
    }

    /// World position (LPS, mm) of continuous voxel coordinates.
    pub fn world_at_voxel(&self, voxel: Vector3<f64>) -> Point3<f64> {
        Point3::from(self.origin_mm + self.direction * voxel.component_mul(&self.spacing_mm))
    }

    /// Continuous voxel coordinates of a world position (LPS, mm).
    pub fn voxel_at_world(&self, world_mm: Point3<f64>) -> Vector3<f64> {
        self.voxel_from_world().transform_point(&world_mm).coords
    }

    /// Whether continuous voxel coordinates lie inside the grid (within half a voxel of
    /// a voxel centre).
    pub fn contains_voxel(&self, voxel: Vector3<f64>) -> bool {
        (0..3).all(|a| voxel[a] >= -0.5 && voxel[a] < self.dims[a] as f64 - 0.5)
    }

    /// The grid moved so that its voxel `start` becomes voxel (0,0,0), with `size` voxels.
    pub fn sub_grid(&self, start: [usize; 3], size: [usize; 3]) -> Result<Geometry, VolumeError> {
        if (0..3).any(|a| size[a] == 0 || start[a] + size[a] > self.dims[a]) {
            return Err(VolumeError::OutOfBounds {
                start,
                size,
                dims: self.dims,
            });
        }
        let start_f = Vector3::new(start[0] as f64, start[1] as f64, start[2] as f64);
        Ok(Geometry {
            dims: size,
            spacing_mm: self.spacing_mm,
            origin_mm: self.world_at_voxel(start_f).coords,
            direction: self.direction,
        })
    }

    /// The same physical extent (voxel-centre span kept as closely as whole voxels allow)
    /// sampled at another spacing.
    pub fn with_spacing(&self, spacing_mm: [f64; 3]) -> Geometry {
        let mut dims = [0usize; 3];
        for a in 0..3 {
            let extent = (self.dims[a] as f64) * self.spacing_mm[a];
            dims[a] = ((extent / spacing_mm[a]).round() as usize).max(1);
        }
        // Keep the centre of the grid where it was.
        let old_centre =
            self.world_at_voxel(Vector3::from_fn(|a, _| (self.dims[a] as f64 - 1.0) / 2.0));
        let half = Vector3::from_fn(|a, _| (dims[a] as f64 - 1.0) / 2.0 * spacing_mm[a]);
        Geometry {
            dims,
            spacing_mm: Vector3::from(spacing_mm),
            origin_mm: old_centre.coords - self.direction * half,
            direction: self.direction,
        }
    }

    /// NIfTI-style 4x4 affine from voxel coordinates to RAS millimetres.
    pub fn to_ras_affine(&self) -> Matrix4<f64> {
        ras_from_lps() * self.world_from_voxel()
    }

    /// Builds a geometry from a voxel→RAS affine (NIfTI qform/sform). Spacing is the
    /// column norms; direction the normalised columns, converted to LPS.
    pub fn from_ras_affine(
        dims: [usize; 3],
        ras_from_voxel: &Matrix4<f64>,
    ) -> Result<Geometry, VolumeError> {
        let lps = ras_from_lps() * ras_from_voxel; // diag(-1,-1,1) is its own inverse
        let linear = lps.fixed_view::<3, 3>(0, 0).into_owned();
        let mut spacing = Vector3::zeros();
        let mut direction = Matrix3::zeros();
        for a in 0..3 {
            let col = linear.column(a);
            let n = col.norm();
            spacing[a] = n;
            if n > 0.0 {
                direction.set_column(a, &(col / n));
            }
        }
        let g = Geometry {
            dims,
            spacing_mm: spacing,
            origin_mm: lps.fixed_view::<3, 1>(0, 3).into_owned(),
            direction,
        };
        g.validate()?;
        Ok(g)
    }

    /// Three letters naming, for each voxel axis, the patient direction its index
    /// increases towards (ITK's convention: "LPS" is DICOM's usual axial order).
    pub fn orientation_code(&self) -> String {
        (0..3)
            .map(|a| {
                let col = self.direction.column(a);
                let (axis, v) = (0..3)
                    .map(|w| (w, col[w]))
                    .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
                    .unwrap_or((0, 1.0));
                patient_direction_letter(axis, v >= 0.0)
            })
            .collect()
    }

    /// Largest angle (degrees) between a voxel axis and the world axis closest to it:
    /// 0 for an axis-aligned grid.
    pub fn obliquity_degrees(&self) -> f64 {
        (0..3)
            .map(|a| {
                let col = self.direction.column(a);
                let m = col.iter().fold(0.0f64, |m, v| m.max(v.abs())).min(1.0);
                m.acos().to_degrees()
            })
            .fold(0.0, f64::max)
    }
}

/// A zeroed buffer of `len` values for a large volume. On Linux the kernel is asked to
/// back it with transparent huge pages, so filling it takes a few hundred page faults
/// instead of tens of thousands (a 512 x 512 x 300 CT: 75 faults instead of 38 400).
pub fn zeroed_buffer<T: bytemuck::Zeroable + Clone>(len: usize) -> Vec<T> {
    let v = vec![T::zeroed(); len];
    #[cfg(target_os = "linux")]
    {
        let bytes = std::mem::size_of_val(v.as_slice());
        if bytes >= 8 << 20 {
            let start = v.as_ptr() as usize;
            let page = 2 << 20;
            let aligned = start.div_ceil(page) * page;
            let end = (start + bytes) / page * page;
            if end > aligned {
                // SAFETY: the range lies inside the vector's allocation; MADV_HUGEPAGE is
                // only advice and does not change the memory's contents.
                unsafe {
                    libc::madvise(
                        aligned as *mut libc::c_void,
                        end - aligned,
                        libc::MADV_HUGEPAGE,
                    );
                }
            }
        }
    }
    v
}

/// The patient direction letter of a world (LPS) axis: +x L, -x R, +y P, -y A, +z S, -z I.
pub fn patient_direction_letter(axis: usize, positive: bool) -> char {
    match (axis, positive) {
        (0, true) => 'L',
        (0, false) => 'R',
        (1, true) => 'P',
        (1, false) => 'A',
        (_, true) => 'S',
        (_, false) => 'I',
    }
}

/// diag(-1, -1, 1, 1): converts between LPS and RAS (its own inverse).
pub fn ras_from_lps() -> Matrix4<f64> {
    Matrix4::from_diagonal(&nalgebra::Vector4::new(-1.0, -1.0, 1.0, 1.0))
}

/// Voxels on a grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    pub geometry: Geometry,
    /// `dims[0] * dims[1] * dims[2]` values, i fastest, then j, then k.
    pub voxels: Vec<T>,
}

/// CT in Hounsfield units.
pub type CtVolume = Volume<i16>;
/// Label map (0 = background).
pub type LabelVolume = Volume<u8>;

impl<T: Copy + Send + Sync> Volume<T> {
    pub fn new(geometry: Geometry, voxels: Vec<T>) -> Result<Self, VolumeError> {
        geometry.validate()?;
        let expected = geometry.voxel_count();
        if voxels.len() != expected {
            return Err(VolumeError::BufferSize {
                dims: geometry.dims,
                expected,
                got: voxels.len(),
            });
        }
        Ok(Self { geometry, voxels })
    }

    pub fn filled(geometry: Geometry, value: T) -> Result<Self, VolumeError> {
        let n = geometry.voxel_count();
        Self::new(geometry, vec![value; n])
    }

    pub fn dims(&self) -> [usize; 3] {
        self.geometry.dims
    }

    #[inline]
    pub fn get(&self, i: usize, j: usize, k: usize) -> T {
        self.voxels[self.geometry.index(i, j, k)]
    }

    #[inline]
    pub fn set(&mut self, i: usize, j: usize, k: usize, value: T) {
        let idx = self.geometry.index(i, j, k);
        self.voxels[idx] = value;
    }

    /// One axial (constant k) slice, i fastest.
    pub fn slice_k(&self, k: usize) -> &[T] {
        let n = self.geometry.dims[0] * self.geometry.dims[1];
        &self.voxels[k * n..(k + 1) * n]
    }

    /// The box of `size` voxels starting at `start`, with its geometry placed so that
    /// every voxel keeps its world position.
    pub fn subvolume(&self, start: [usize; 3], size: [usize; 3]) -> Result<Volume<T>, VolumeError> {
        let geometry = self.geometry.sub_grid(start, size)?;
        let max = [0, 1, 2].map(|a| start[a] + size[a] - 1);
        let voxels = self.box_voxels(VoxelBox { min: start, max });
        Ok(Volume { geometry, voxels })
    }

    /// Converts every voxel.
    pub fn map<U: Copy + Send + Sync>(&self, f: impl Fn(T) -> U + Sync) -> Volume<U> {
        use rayon::prelude::*;
        Volume {
            geometry: self.geometry.clone(),
            voxels: self.voxels.par_iter().map(|&v| f(v)).collect(),
        }
    }
}

impl<T: Copy + PartialOrd> Volume<T> {
    /// Smallest and largest voxel value.
    pub fn min_max(&self) -> Option<(T, T)> {
        let mut it = self.voxels.iter().copied();
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), v| {
            (if v < lo { v } else { lo }, if v > hi { v } else { hi })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::Rotation3;

    fn oblique() -> Geometry {
        let rot = Rotation3::from_euler_angles(0.2, -0.1, 0.35);
        Geometry {
            dims: [7, 5, 4],
            spacing_mm: Vector3::new(0.7, 0.8, 2.5),
            origin_mm: Vector3::new(-120.0, 33.5, 1001.25),
            direction: *rot.matrix(),
        }
    }

    #[test]
    fn world_from_voxel_round_trips() {
        let g = oblique();
        let v = Vector3::new(1.5, 2.25, 3.0);
        let w = g.world_at_voxel(v);
        let m = g.world_from_voxel().transform_point(&Point3::from(v));
        assert!((w - m).norm() < 1e-9);
        assert!((g.voxel_at_world(w) - v).norm() < 1e-9);
        let id = g.voxel_from_world() * g.world_from_voxel();
        assert!((id - Matrix4::identity()).norm() < 1e-12);
    }

    #[test]
    fn ras_affine_round_trip_is_exact_for_axis_aligned() {
        let g = Geometry::axis_aligned(
            [512, 512, 154],
            [0.9765625, 0.9765625, 3.0],
            [-250.0, -200.5, -400.0],
        );
        let a = g.to_ras_affine();
        // RAS flips x and y.
        assert_eq!(a[(0, 0)], -0.9765625);
        assert_eq!(a[(1, 1)], -0.9765625);
        assert_eq!(a[(0, 3)], 250.0);
        assert_eq!(a[(1, 3)], 200.5);
        let back = Geometry::from_ras_affine(g.dims, &a).unwrap();
        assert_eq!(back, g);
    }

    #[test]
    fn ras_affine_round_trip_oblique() {
        let g = oblique();
        let back = Geometry::from_ras_affine(g.dims, &g.to_ras_affine()).unwrap();
        assert!((back.direction - g.direction).norm() < 1e-12);
        assert!((back.spacing_mm - g.spacing_mm).norm() < 1e-12);
        assert!((back.origin_mm - g.origin_mm).norm() < 1e-12);
    }

    #[test]
    fn subvolume_keeps_world_positions() {
        let g = oblique();
        let n = g.voxel_count();
        let vol = Volume::new(g.clone(), (0..n as i32).collect::<Vec<_>>()).unwrap();
        let sub = vol.subvolume([2, 1, 1], [3, 2, 2]).unwrap();
        assert_eq!(sub.dims(), [3, 2, 2]);
        for k in 0..2 {
            for j in 0..2 {
                for i in 0..3 {
                    assert_eq!(sub.get(i, j, k), vol.get(i + 2, j + 1, k + 1));
                    let ws = sub
                        .geometry
                        .world_at_voxel(Vector3::new(i as f64, j as f64, k as f64));
                    let wv = vol.geometry.world_at_voxel(Vector3::new(
                        (i + 2) as f64,
                        (j + 1) as f64,
                        (k + 1) as f64,
                    ));
                    assert!((ws - wv).norm() < 1e-9);
                }
            }
        }
        assert!(vol.subvolume([5, 0, 0], [3, 1, 1]).is_err());
    }

    #[test]
    fn buffer_size_is_checked() {
        let g = Geometry::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]);
        assert_eq!(
            Volume::new(g.clone(), vec![0u8; 7]).unwrap_err(),
            VolumeError::BufferSize {
                dims: [2, 2, 2],
                expected: 8,
                got: 7
            }
        );
        let mut bad = g;
        bad.spacing_mm.x = 0.0;
        assert!(matches!(bad.validate(), Err(VolumeError::BadSpacing(_))));
    }

    #[test]
    fn orientation_codes() {
        let g = Geometry::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]);
        assert_eq!(g.orientation_code(), "LPS");
        let mut ras = g.clone();
        ras.direction = Matrix3::from_diagonal(&Vector3::new(-1.0, -1.0, 1.0));
        assert_eq!(ras.orientation_code(), "RAS");
        assert_eq!(g.obliquity_degrees(), 0.0);
        assert!(oblique().obliquity_degrees() > 5.0);
    }

    #[test]
    fn with_spacing_keeps_centre() {
        let g = Geometry::axis_aligned([100, 100, 50], [0.5, 0.5, 2.0], [10.0, 20.0, 30.0]);
        let r = g.with_spacing([1.0, 1.0, 1.0]);
        assert_eq!(r.dims, [50, 50, 100]);
        let c0 = g.world_at_voxel(Vector3::new(49.5, 49.5, 24.5));
        let c1 = r.world_at_voxel(Vector3::new(24.5, 24.5, 49.5));
        assert!((c0 - c1).norm() < 1e-9);
    }
}
