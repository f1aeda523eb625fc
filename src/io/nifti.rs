//! NIfTI-1 reader and writer (`.nii`, `.nii.gz`), written from the NIfTI-1 specification
//! (no nifti crate).
//!
//! Reading: gzip is detected by its magic bytes (1f 8b), not by the name; little- and
//! big-endian headers (told apart by `sizeof_hdr` = 348); datatypes uint8, int8, int16,
//! uint16, int32, uint32, float32 and float64; `scl_slope`/`scl_inter`; `vox_offset`; 3D
//! images, or 4D with a single volume. The grid is placed from the sform when
//! `sform_code > 0`, else from the qform when `qform_code > 0`, else from `pixdim` alone
//! (with a warning), through [`Geometry::from_ras_affine`].
//!
//! Writing ([`write_nifti`]): int16 CT or uint8 labels, a single-file `n+1` image with
//! both the sform (the exact [`Geometry::to_ras_affine`], rounded to float32 as the format
//! stores it) and a qform that agrees with it, so that a label map written here overlays
//! its CT in every viewer whichever of the two it trusts. Writes are atomic (temporary
//! file in the same folder, fsync, rename).
//!
//! Every error names the file; nothing here panics on malformed input.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nalgebra::{Matrix3, Matrix4, Vector3};

use super::ReadVolume;
use super::guard;
use super::samples::{self, InvalidValue, SampleType, Target};
use crate::volume::{Geometry, Volume, VolumeError, ras_from_lps};

/// Errors of the NIfTI reader and writer. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum NiftiError {
    #[error("{}: {context}: {source}", path.display())]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a NIfTI-1 file: {reason}", path.display())]
    NotNifti { path: PathBuf, reason: String },
    #[error("{}: file is truncated: {what}", path.display())]
    Truncated { path: PathBuf, what: String },
    #[error("{}: bad NIfTI header: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },
    #[error("{}: unsupported NIfTI datatype code {code} ({name}); supported: uint8, int8, int16, uint16, int32, uint32, float32, float64", path.display())]
    UnsupportedDatatype {
        path: PathBuf,
        code: i16,
        name: &'static str,
    },
    #[error("{}: is a 4D (or higher) image with {volumes} volumes (dim = {dims:?}); only 3D volumes can be opened", path.display())]
    NotThreeD {
        path: PathBuf,
        dims: Vec<i16>,
        volumes: u64,
    },
    #[error("{}: {message}", path.display())]
    BadValue { path: PathBuf, message: String },
    #[error("{}: invalid geometry in the header: {source}", path.display())]
    Geometry {
        path: PathBuf,
        #[source]
        source: VolumeError,
    },
    #[error("cannot write {}: {reason}", path.display())]
    Unwritable { path: PathBuf, reason: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Reads a NIfTI-1 image as CT: values (after `scl_slope`/`scl_inter`) are rounded to the
/// nearest integer and saturated to i16, with a warning counting clamped voxels.
pub fn read_nifti_ct(path: &Path) -> Result<ReadVolume<i16>, NiftiError> {
    read_nifti::<i16>(path)
}

/// Reads a NIfTI-1 image as a label map: every value (after `scl_slope`/`scl_inter`)
/// must be an integer in 0..=255, otherwise the error names the first offending value.
pub fn read_nifti_labels(path: &Path) -> Result<ReadVolume<u8>, NiftiError> {
    read_nifti::<u8>(path)
}

/// The voxel types [`write_nifti`] can store: i16 (NIfTI datatype 4, CT) and u8
/// (datatype 2, labels).
pub trait NiftiScalar: Copy + Send + Sync + sealed::Sealed {
    /// NIfTI `datatype` code.
    const DATATYPE: i16;
    /// NIfTI `bitpix`.
    const BITPIX: i16;
    /// Appends the values as little-endian bytes.
    #[doc(hidden)]
    fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for i16 {}
    impl Sealed for u8 {}
}

impl NiftiScalar for i16 {
    const DATATYPE: i16 = 4;
    const BITPIX: i16 = 16;
    fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>) {
        out.reserve(values.len() * 2);
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

impl NiftiScalar for u8 {
    const DATATYPE: i16 = 2;
    const BITPIX: i16 = 8;
    fn extend_le_bytes(values: &[Self], out: &mut Vec<u8>) {
        out.extend_from_slice(values);
    }
}

/// Writes `volume` as a single-file NIfTI-1 image (`.nii.gz` when the name ends in
/// `.gz`, else `.nii`), atomically: the bytes go to `.<name>.tmp-<pid>-<n>` in the same
/// folder, are fsynced, and the file is renamed over `path`. On failure the temporary file
/// is removed and the error names `path`.
///
/// The header holds the sform (code 1, scanner anatomical: the exact
/// [`Geometry::to_ras_affine`] rounded to float32) and a qform (code 1) built from the
/// orthonormalised direction (qfac = -1 for left-handed grids), `pixdim` = spacing,
/// units mm, `vox_offset` 352, `scl_slope` 1 / `scl_inter` 0.
pub fn write_nifti<T: NiftiScalar>(path: &Path, volume: &Volume<T>) -> Result<(), NiftiError> {
    let unwritable = |reason: String| NiftiError::Unwritable {
        path: path.to_path_buf(),
        reason,
    };
    let g = &volume.geometry;
    check_writable(path, g, volume.voxels.len(), "voxels")?;
    let header = Header::for_volume(g, T::DATATYPE, T::BITPIX).map_err(unwritable)?;
    let header_bytes = header.to_bytes(false);
    let gz = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".gz"))
        .unwrap_or(false);
    super::atomic::write_atomically(path, gz.then_some(GZIP_LEVEL), |w| {
        w.write_all(&header_bytes)?;
        w.write_all(&[0u8; 4])?; // extension flag: no extensions
        let mut buf = Vec::with_capacity(1 << 17);
        for chunk in volume.voxels.chunks(1 << 16) {
            buf.clear();
            T::extend_le_bytes(chunk, &mut buf);
            w.write_all(&buf)?;
        }
        Ok(())
    })
    .map_err(|source| NiftiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A valid geometry holding `len` values (`what`: "voxels", "vectors"), or the error
/// that names `path`.
fn check_writable(path: &Path, g: &Geometry, len: usize, what: &str) -> Result<(), NiftiError> {
    let unwritable = |reason: String| NiftiError::Unwritable {
        path: path.to_path_buf(),
        reason,
    };
    g.validate().map_err(|e| unwritable(e.to_string()))?;
    if len != g.voxel_count() {
        return Err(unwritable(format!(
            "the volume holds {len} {what} but its dims {:?} need {}",
            g.dims,
            g.voxel_count()
        )));
    }
    Ok(())
}

/// gzip level for written `.nii.gz` files: a little below the default, which costs several
/// times as long on CT for a few percent of size.
const GZIP_LEVEL: u32 = 4;

/// NIfTI intent code of a vector image (ITK writes displacement fields with it).
const INTENT_VECTOR: i16 = 1007;
/// NIfTI intent code of a displacement vector image.
const INTENT_DISPLACEMENT_VECT: i16 = 1006;

/// Writes a 3-vector image (a displacement field) the way ITK writes one, so that
/// SimpleITK, ANTs and Slicer read it as a vector image: float32, `dim` = (5, nx, ny, nz,
/// 1, 3), intent 1007 (vector), all x components first, then y, then z. The components
/// are stored as given: for a displacement field, millimetres in the patient frame (LPS,
/// ITK's physical frame), not flipped to RAS (ITK does not flip them either).
pub fn write_nifti_vectors(path: &Path, field: &Volume<[f32; 3]>) -> Result<(), NiftiError> {
    let unwritable = |reason: String| NiftiError::Unwritable {
        path: path.to_path_buf(),
        reason,
    };
    let g = &field.geometry;
    check_writable(path, g, field.voxels.len(), "vectors")?;
    let mut header = Header::for_volume(g, 16, 32).map_err(unwritable)?;
    header.dim[0] = 5;
    header.dim[5] = 3;
    header.intent_code = INTENT_VECTOR;
    let header_bytes = header.to_bytes(false);
    let gz = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".gz"))
        .unwrap_or(false);
    // Float vectors of a displacement field do not compress (at level 1 a 943 MB field
    // of a 512 x 512 x 300 CT became 1,000 MB, in 10 s): stored deflate blocks (level
    // 0), a valid gzip stream that costs only its CRC.
    super::atomic::write_atomically(path, gz.then_some(0), |w| {
        w.write_all(&header_bytes)?;
        w.write_all(&[0u8; 4])?;
        let mut buf = Vec::with_capacity(1 << 18);
        for c in 0..3 {
            for chunk in field.voxels.chunks(1 << 16) {
                buf.clear();
                for v in chunk {
                    buf.extend_from_slice(&v[c].to_le_bytes());
                }
                w.write_all(&buf)?;
            }
        }
        Ok(())
    })
    .map_err(|source| NiftiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a 3-vector image written by [`write_nifti_vectors`], ITK, SimpleITK or ANTs:
/// `dim` (5, nx, ny, nz, 1, 3) with intent 1006 or 1007 (or none), float32 or float64.
/// Components come back in LPS as ITK reads them: as stored for intent 1007 (or none),
/// with x and y negated for intent 1006 (a displacement vector, which ITK takes as RAS).
pub fn read_nifti_vectors(path: &Path) -> Result<Volume<[f32; 3]>, NiftiError> {
    let mut src = Stream::open(path)?;
    let (h, big_endian) = src.read_header()?;
    let bad = |reason: String| bad_header(path, reason);
    if h.dim[0] != 5 || h.dim[4] != 1 || h.dim[5] != 3 {
        return Err(bad(format!(
            "not a 3-vector image: dim = {:?} (a displacement field has dim (5, nx, ny, nz, 1, 3))",
            &h.dim[..=(h.dim[0].clamp(0, 7) as usize)]
        )));
    }
    if ![0, INTENT_VECTOR, INTENT_DISPLACEMENT_VECT].contains(&h.intent_code) {
        return Err(bad(format!(
            "intent code {} is not a vector (1007) or displacement (1006) image",
            h.intent_code
        )));
    }
    let size = match h.datatype {
        16 => 4,
        64 => 8,
        code => {
            return Err(bad(format!(
                "vector datatype code {code}: only float32 (16) and float64 (64) are read"
            )));
        }
    };
    let mut warnings = Vec::new();
    let dims = [h.dim[1], h.dim[2], h.dim[3]];
    if dims.iter().any(|d| *d < 1) {
        return Err(bad(format!("dims {dims:?} are not positive")));
    }
    let dims = dims.map(|d| d as usize);
    let geometry = header_geometry(&h, dims, &mut warnings).map_err(|e| match e {
        GeometryProblem::Header(reason) => bad_header(path, reason),
        GeometryProblem::Volume(source) => NiftiError::Geometry {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let offset = voxel_offset(path, &h, &mut warnings)?;
    let ty = if size == 4 {
        SampleType::F32
    } else {
        SampleType::F64
    };
    // The three components are three volumes one after the other.
    let count = src.check_voxel_sizes::<f32>([dims[0], dims[1], dims[2] * 3], ty, offset)? / 3;
    src.skip_to(offset)?;
    let mut voxels = guard::try_filled_vec(count, [0f32; 3], || format!("a {dims:?} vector field"))
        .map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0u8; size << 16];
    for c in 0..3 {
        for chunk in voxels.chunks_mut(1 << 16) {
            let bytes = &mut buf[..chunk.len() * size];
            src.reader
                .read_exact(bytes)
                .map_err(io_error(path, "reading the vector data"))?;
            for (v, b) in chunk.iter_mut().zip(bytes.chunks_exact(size)) {
                let x = match (size, big_endian) {
                    (4, false) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
                    (4, true) => f32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64,
                    (_, false) => f64::from_le_bytes(b.try_into().unwrap_or([0; 8])),
                    (_, true) => f64::from_be_bytes(b.try_into().unwrap_or([0; 8])),
                };
                if !x.is_finite() {
                    return Err(NiftiError::BadValue {
                        path: path.to_path_buf(),
                        message: format!("a vector component is {x} (not finite)"),
                    });
                }
                // ITK reads a displacement-vector image (intent 1006) as RAS and
                // negates x and y; a vector image (1007, what ITK writes) is LPS as stored.
                let lps = if h.intent_code == INTENT_DISPLACEMENT_VECT && c < 2 {
                    -x
                } else {
                    x
                };
                v[c] = lps as f32;
            }
        }
    }
    src.finish()?;
    Volume::new(geometry, voxels).map_err(|source| NiftiError::Geometry {
        path: path.to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------
// Header

const HEADER_SIZE: usize = 348;
const SINGLE_FILE_OFFSET: usize = 352;

/// The NIfTI-1 header fields this module reads or writes.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    dim: [i16; 8],
    intent_code: i16,
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    vox_offset: f32,
    scl_slope: f32,
    scl_inter: f32,
    xyzt_units: u8,
    cal_max: f32,
    cal_min: f32,
    descrip: [u8; 80],
    qform_code: i16,
    sform_code: i16,
    quatern: [f32; 3],
    qoffset: [f32; 3],
    srow: [[f32; 4]; 3],
    magic: [u8; 4],
}

/// Byte offsets of the NIfTI-1 header fields.
mod off {
    pub const SIZEOF_HDR: usize = 0;
    pub const REGULAR: usize = 38;
    pub const DIM: usize = 40;
    pub const INTENT_CODE: usize = 68;
    pub const DATATYPE: usize = 70;
    pub const BITPIX: usize = 72;
    pub const PIXDIM: usize = 76;
    pub const VOX_OFFSET: usize = 108;
    pub const SCL_SLOPE: usize = 112;
    pub const SCL_INTER: usize = 116;
    pub const XYZT_UNITS: usize = 123;
    pub const CAL_MAX: usize = 124;
    pub const CAL_MIN: usize = 128;
    pub const DESCRIP: usize = 148;
    pub const QFORM_CODE: usize = 252;
    pub const SFORM_CODE: usize = 254;
    pub const QUATERN_B: usize = 256;
    pub const QOFFSET_X: usize = 268;
    pub const SROW_X: usize = 280;
    pub const MAGIC: usize = 344;
}

struct Fields<'a> {
    bytes: &'a [u8; HEADER_SIZE],
    big_endian: bool,
}

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.bytes[at..at + N]);
        a
    }
    fn i16(&self, at: usize) -> i16 {
        let a = self.array::<2>(at);
        if self.big_endian {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }
    }
    fn i32(&self, at: usize) -> i32 {
        let a = self.array::<4>(at);
        if self.big_endian {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }
    }
    fn f32(&self, at: usize) -> f32 {
        let a = self.array::<4>(at);
        if self.big_endian {
            f32::from_be_bytes(a)
        } else {
            f32::from_le_bytes(a)
        }
    }
}

impl Header {
    /// Parses the 348 header bytes; returns the header and whether it is big-endian.
    fn parse(bytes: &[u8; HEADER_SIZE]) -> Result<(Header, bool), String> {
        let le = i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let be = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let big_endian = match (le, be) {
            (348, _) => false,
            (_, 348) => true,
            (540, _) | (_, 540) => {
                return Err(
                    "this is a NIfTI-2 header (sizeof_hdr 540); only NIfTI-1 is supported".into(),
                );
            }
            _ => {
                return Err(format!(
                    "sizeof_hdr is {le} (or {be} byte-swapped), not 348"
                ));
            }
        };
        let f = Fields { bytes, big_endian };
        debug_assert_eq!(f.i32(off::SIZEOF_HDR), 348);
        let mut h = Header {
            dim: [0; 8],
            intent_code: f.i16(off::INTENT_CODE),
            datatype: f.i16(off::DATATYPE),
            bitpix: f.i16(off::BITPIX),
            pixdim: [0.0; 8],
            vox_offset: f.f32(off::VOX_OFFSET),
            scl_slope: f.f32(off::SCL_SLOPE),
            scl_inter: f.f32(off::SCL_INTER),
            xyzt_units: bytes[off::XYZT_UNITS],
            cal_max: f.f32(off::CAL_MAX),
            cal_min: f.f32(off::CAL_MIN),
            descrip: f.array::<80>(off::DESCRIP),
            qform_code: f.i16(off::QFORM_CODE),
            sform_code: f.i16(off::SFORM_CODE),
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[0.0; 4]; 3],
            magic: f.array::<4>(off::MAGIC),
        };
        for i in 0..8 {
            h.dim[i] = f.i16(off::DIM + 2 * i);
            h.pixdim[i] = f.f32(off::PIXDIM + 4 * i);
        }
        for i in 0..3 {
            h.quatern[i] = f.f32(off::QUATERN_B + 4 * i);
            h.qoffset[i] = f.f32(off::QOFFSET_X + 4 * i);
            for j in 0..4 {
                h.srow[i][j] = f.f32(off::SROW_X + 16 * i + 4 * j);
            }
        }
        Ok((h, big_endian))
    }

    /// Serialises the 348 header bytes.
    fn to_bytes(&self, big_endian: bool) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        let i16b = |v: i16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let i32b = |v: i32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let f32b = |v: f32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        put(off::SIZEOF_HDR, &i32b(HEADER_SIZE as i32));
        put(off::REGULAR, b"r");
        for i in 0..8 {
            put(off::DIM + 2 * i, &i16b(self.dim[i]));
            put(off::PIXDIM + 4 * i, &f32b(self.pixdim[i]));
        }
        put(off::INTENT_CODE, &i16b(self.intent_code));
        put(off::DATATYPE, &i16b(self.datatype));
        put(off::BITPIX, &i16b(self.bitpix));
        put(off::VOX_OFFSET, &f32b(self.vox_offset));
        put(off::SCL_SLOPE, &f32b(self.scl_slope));
        put(off::SCL_INTER, &f32b(self.scl_inter));
        put(off::XYZT_UNITS, &[self.xyzt_units]);
        put(off::CAL_MAX, &f32b(self.cal_max));
        put(off::CAL_MIN, &f32b(self.cal_min));
        put(off::DESCRIP, &self.descrip);
        put(off::QFORM_CODE, &i16b(self.qform_code));
        put(off::SFORM_CODE, &i16b(self.sform_code));
        for i in 0..3 {
            put(off::QUATERN_B + 4 * i, &f32b(self.quatern[i]));
            put(off::QOFFSET_X + 4 * i, &f32b(self.qoffset[i]));
            for j in 0..4 {
                put(off::SROW_X + 16 * i + 4 * j, &f32b(self.srow[i][j]));
            }
        }
        put(off::MAGIC, &self.magic);
        b
    }

    /// The header [`write_nifti`] writes for a grid.
    fn for_volume(g: &Geometry, datatype: i16, bitpix: i16) -> Result<Header, String> {
        let mut dim = [1i16; 8];
        dim[0] = 3;
        for a in 0..3 {
            dim[a + 1] = i16::try_from(g.dims[a]).map_err(|_| {
                format!(
                    "dims {:?} exceed NIfTI-1's limit of 32767 voxels per axis",
                    g.dims
                )
            })?;
        }
        let affine = g.to_ras_affine();
        if affine
            .iter()
            .any(|v| !v.is_finite() || v.abs() > f32::MAX as f64)
        {
            return Err("the voxel-to-world affine does not fit in float32".into());
        }
        let q = qform_from_direction(&(ras_from_lps().fixed_view::<3, 3>(0, 0) * g.direction));
        let mut pixdim = [1.0f32; 8];
        pixdim[0] = q.qfac as f32;
        for a in 0..3 {
            pixdim[a + 1] = g.spacing_mm[a] as f32;
        }
        let mut srow = [[0f32; 4]; 3];
        for (r, row) in srow.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = affine[(r, c)] as f32;
            }
        }
        let mut descrip = [0u8; 80];
        let text = b"pulmo";
        descrip[..text.len()].copy_from_slice(text);
        Ok(Header {
            dim,
            intent_code: 0,
            datatype,
            bitpix,
            pixdim,
            vox_offset: SINGLE_FILE_OFFSET as f32,
            scl_slope: 1.0,
            scl_inter: 0.0,
            xyzt_units: 2, // NIFTI_UNITS_MM
            cal_max: 0.0,
            cal_min: 0.0,
            descrip,
            qform_code: 1,
            sform_code: 1,
            quatern: [q.b as f32, q.c as f32, q.d as f32],
            qoffset: [srow[0][3], srow[1][3], srow[2][3]],
            srow,
            magic: *b"n+1\0",
        })
    }
}

/// The rotation part of a qform: quaternion (b, c, d; a >= 0 implied) and qfac.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Qform {
    b: f64,
    c: f64,
    d: f64,
    qfac: f64,
}

/// Quaternion and qfac of a direction matrix (RAS, columns = voxel axes), after
/// orthonormalising it (polar decomposition) when its columns are not orthonormal. A
/// left-handed matrix gets qfac = -1 and its third column negated, as NIfTI-1 specifies.
fn qform_from_direction(direction_ras: &Matrix3<f64>) -> Qform {
    let mut r = *direction_ras;
    if (r.transpose() * r - Matrix3::identity()).abs().max() > 1e-12 {
        let svd = r.svd(true, true);
        if let (Some(u), Some(v_t)) = (svd.u, svd.v_t) {
            r = u * v_t;
        }
    }
    let mut qfac = 1.0;
    if r.determinant() < 0.0 {
        qfac = -1.0;
        let neg = -r.column(2);
        r.set_column(2, &neg);
    }
    // nifti_mat44_to_quatern (nifti1_io.c).
    let (r11, r12, r13) = (r[(0, 0)], r[(0, 1)], r[(0, 2)]);
    let (r21, r22, r23) = (r[(1, 0)], r[(1, 1)], r[(1, 2)]);
    let (r31, r32, r33) = (r[(2, 0)], r[(2, 1)], r[(2, 2)]);
    let trace_plus_one = r11 + r22 + r33 + 1.0;
    let (b, c, d) = if trace_plus_one > 0.5 {
        let a = 0.5 * trace_plus_one.sqrt();
        (
            0.25 * (r32 - r23) / a,
            0.25 * (r13 - r31) / a,
            0.25 * (r21 - r12) / a,
        )
    } else {
        let xd = 1.0 + r11 - (r22 + r33);
        let yd = 1.0 + r22 - (r11 + r33);
        let zd = 1.0 + r33 - (r11 + r22);
        let (a, b, c, d) = if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            (
                0.25 * (r32 - r23) / b,
                b,
                0.25 * (r12 + r21) / b,
                0.25 * (r13 + r31) / b,
            )
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            (
                0.25 * (r13 - r31) / c,
                0.25 * (r12 + r21) / c,
                c,
                0.25 * (r23 + r32) / c,
            )
        } else {
            let d = 0.5 * zd.sqrt();
            (
                0.25 * (r21 - r12) / d,
                0.25 * (r13 + r31) / d,
                0.25 * (r23 + r32) / d,
                d,
            )
        };
        // Keep a >= 0 (it is not stored).
        if a < 0.0 { (-b, -c, -d) } else { (b, c, d) }
    };
    Qform { b, c, d, qfac }
}

/// The voxel→RAS affine of a qform (nifti_quatern_to_mat44). Spacings that are not
/// positive are taken as 1 (as nifti1_io does).
fn qform_affine(q: Qform, spacing: [f64; 3], offset: [f64; 3]) -> Matrix4<f64> {
    let (mut b, mut c, mut d) = (q.b, q.c, q.d);
    let mut a = 1.0 - (b * b + c * c + d * d);
    if a < 1e-7 {
        let s = 1.0 / (b * b + c * c + d * d).sqrt();
        b *= s;
        c *= s;
        d *= s;
        a = 0.0;
    } else {
        a = a.sqrt();
    }
    let [xd, yd, zd] = spacing.map(|s| if s > 0.0 { s } else { 1.0 });
    let zd = if q.qfac < 0.0 { -zd } else { zd };
    Matrix4::new(
        (a * a + b * b - c * c - d * d) * xd,
        2.0 * (b * c - a * d) * yd,
        2.0 * (b * d + a * c) * zd,
        offset[0],
        2.0 * (b * c + a * d) * xd,
        (a * a + c * c - b * b - d * d) * yd,
        2.0 * (c * d - a * b) * zd,
        offset[1],
        2.0 * (b * d - a * c) * xd,
        2.0 * (c * d + a * b) * yd,
        (a * a + d * d - c * c - b * b) * zd,
        offset[2],
        0.0,
        0.0,
        0.0,
        1.0,
    )
}

fn sample_type(code: i16) -> Result<SampleType, &'static str> {
    Ok(match code {
        2 => SampleType::U8,
        4 => SampleType::I16,
        8 => SampleType::I32,
        16 => SampleType::F32,
        64 => SampleType::F64,
        256 => SampleType::I8,
        512 => SampleType::U16,
        768 => SampleType::U32,
        0 => return Err("unknown"),
        1 => return Err("binary"),
        32 => return Err("complex64"),
        128 => return Err("RGB24"),
        1024 => return Err("int64"),
        1280 => return Err("uint64"),
        1536 => return Err("float128"),
        1792 => return Err("complex128"),
        2048 => return Err("complex256"),
        2304 => return Err("RGBA32"),
        _ => return Err("not a NIfTI-1 datatype"),
    })
}

// ---------------------------------------------------------------------------------------
// Reader

/// Reads `buf.len()` bytes or up to the end of the stream; returns how many were read.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a NIfTI-1 image, step by step: open (gunzipping when needed), header, dims, voxel
/// type, scaling, grid (before the voxels, so that a bad header fails fast), voxel bytes,
/// conversion to `T`.
fn read_nifti<T: Target>(path: &Path) -> Result<ReadVolume<T>, NiftiError> {
    let mut src = Stream::open(path)?;
    let (h, big_endian) = src.read_header()?;
    let mut warnings = Vec::new();
    let dims = spatial_dims(path, &h)?;
    let ty = stored_sample_type(path, &h, &mut warnings)?;
    let scaling = value_scaling(&h, &mut warnings);
    let geometry = header_geometry(&h, dims, &mut warnings).map_err(|e| match e {
        GeometryProblem::Header(reason) => bad_header(path, reason),
        GeometryProblem::Volume(source) => NiftiError::Geometry {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let offset = voxel_offset(path, &h, &mut warnings)?;
    let count = src.check_voxel_sizes::<T>(dims, ty, offset)?;
    src.skip_to(offset)?;
    let decoded = src.read_voxels::<T>(count, dims, ty, big_endian, scaling)?;
    src.finish()?;
    decoded
        .into_read_volume(geometry, path, warnings)
        .map_err(|source| NiftiError::Geometry {
            path: path.to_path_buf(),
            source,
        })
}

/// An I/O error while reading `path`: [`NiftiError::Truncated`] when the data ended
/// early, else [`NiftiError::Io`] with `context`.
fn io_error<'a>(
    path: &'a Path,
    context: &'static str,
) -> impl FnOnce(io::Error) -> NiftiError + 'a {
    move |source: io::Error| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            NiftiError::Truncated {
                path: path.to_path_buf(),
                what: format!("{context}: {source}"),
            }
        } else {
            NiftiError::Io {
                path: path.to_path_buf(),
                context,
                source,
            }
        }
    }
}

fn bad_header(path: &Path, reason: String) -> NiftiError {
    NiftiError::BadHeader {
        path: path.to_path_buf(),
        reason,
    }
}

fn not_nifti(path: &Path, reason: String) -> NiftiError {
    NiftiError::NotNifti {
        path: path.to_path_buf(),
        reason,
    }
}

/// The bytes of an open NIfTI file, gunzipped on the fly when the file starts with the
/// gzip magic bytes (whatever its name).
struct Stream<'a> {
    path: &'a Path,
    reader: Box<dyn Read>,
    gz: bool,
    /// The file's length in bytes (compressed, for a gzip stream).
    file_len: u64,
}

impl<'a> Stream<'a> {
    fn open(path: &'a Path) -> Result<Self, NiftiError> {
        let file = guard::open_regular_file(path).map_err(io_error(path, "cannot open"))?;
        let file_len = file
            .metadata()
            .map_err(io_error(path, "cannot open"))?
            .len();
        let mut buffered = BufReader::with_capacity(1 << 16, file);
        let gz = {
            let head = buffered.fill_buf().map_err(io_error(path, "cannot read"))?;
            head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
        };
        let reader: Box<dyn Read> = if gz {
            Box::new(MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        Ok(Stream {
            path,
            reader,
            gz,
            file_len,
        })
    }

    /// What the bytes come from, for messages.
    fn name(&self) -> &'static str {
        if self.gz { "gzip stream" } else { "file" }
    }

    fn truncated(&self, what: String) -> NiftiError {
        NiftiError::Truncated {
            path: self.path.to_path_buf(),
            what,
        }
    }

    /// Reads and parses the 348-byte header (returned with whether it is big-endian) and
    /// checks that it is a single-file NIfTI-1 header.
    fn read_header(&mut self) -> Result<(Header, bool), NiftiError> {
        let mut hbytes = [0u8; HEADER_SIZE];
        let got = read_up_to(&mut self.reader, &mut hbytes)
            .map_err(io_error(self.path, "reading the header"))?;
        if got < HEADER_SIZE {
            return Err(self.short_header(&hbytes, got));
        }
        let (h, big_endian) =
            Header::parse(&hbytes).map_err(|reason| not_nifti(self.path, reason))?;
        check_magic(self.path, &h.magic)?;
        Ok((h, big_endian))
    }

    /// The error for a stream that ends after `got` (< 348) bytes: not NIfTI at all, or a
    /// NIfTI-1 header cut short when its `sizeof_hdr` says 348.
    fn short_header(&self, hbytes: &[u8; HEADER_SIZE], got: usize) -> NiftiError {
        let stream = self.name();
        let size_field = [hbytes[0], hbytes[1], hbytes[2], hbytes[3]];
        let looks_like_nifti = [
            i32::from_le_bytes(size_field),
            i32::from_be_bytes(size_field),
        ]
        .contains(&(HEADER_SIZE as i32));
        if got < 4 || !looks_like_nifti {
            not_nifti(
                self.path,
                format!(
                    "the {stream} holds only {got} bytes, which do not start a 348-byte NIfTI-1 header"
                ),
            )
        } else {
            self.truncated(format!(
                "the {stream} ends after {got} bytes, inside the 348-byte header"
            ))
        }
    }

    /// Skips the header extensions, from the end of the header to byte `offset`.
    fn skip_to(&mut self, offset: u64) -> Result<(), NiftiError> {
        let skip = offset - HEADER_SIZE as u64;
        let skipped = io::copy(&mut (&mut self.reader).take(skip), &mut io::sink())
            .map_err(io_error(self.path, "reading the header extensions"))?;
        if skipped < skip {
            return Err(self.truncated(format!(
                "the {} ends after {} bytes, before vox_offset {offset}",
                self.name(),
                HEADER_SIZE as u64 + skipped
            )));
        }
        Ok(())
    }

    /// Checks, before anything is allocated, that `dims` voxels of `ty` can be in the
    /// file (an uncompressed file must hold them after `offset`; a gzip stream cannot
    /// expand more than [`guard::DEFLATE_MAX_RATIO`] times) and that the converted
    /// volume fits the memory budget. Returns the voxel count.
    fn check_voxel_sizes<T>(
        &self,
        dims: [usize; 3],
        ty: SampleType,
        offset: u64,
    ) -> Result<usize, NiftiError> {
        let bad = |reason: String| bad_header(self.path, reason);
        let count =
            guard::check_grid(dims, std::mem::size_of::<T>()).map_err(|e| bad(e.to_string()))?;
        let nbytes = (count as u64).saturating_mul(ty.size() as u64);
        if self.gz {
            let most = self.file_len.saturating_mul(guard::DEFLATE_MAX_RATIO);
            if nbytes.saturating_add(offset) > most {
                return Err(self.truncated(format!(
                    "dims {dims:?} of {} need {} of voxel data, more than a {} gzip stream can hold",
                    ty.name(),
                    guard::human_bytes(nbytes),
                    guard::human_bytes(self.file_len)
                )));
            }
        } else if nbytes.saturating_add(offset) > self.file_len {
            return Err(self.truncated(format!(
                "dims {dims:?} of {} need {nbytes} bytes of voxel data after vox_offset {offset}, but the file holds {} bytes",
                ty.name(),
                self.file_len
            )));
        }
        Ok(count)
    }

    /// Reads and converts `count` voxels in chunks (the stored bytes are never all in
    /// memory beside the converted values).
    fn read_voxels<T: Target>(
        &mut self,
        count: usize,
        dims: [usize; 3],
        ty: SampleType,
        big_endian: bool,
        scaling: Option<(f64, f64)>,
    ) -> Result<samples::Decoded<T>, NiftiError> {
        samples::decode_stream::<T>(&mut self.reader, count, ty, big_endian, scaling).map_err(|e| {
            match e {
                samples::StreamError::Io(source) => {
                    io_error(self.path, "reading the voxel data")(source)
                }
                samples::StreamError::Short(got) => self.truncated(format!(
                    "the {} holds {got} of the {} bytes of voxel data ({:?} voxels of {})",
                    self.name(),
                    count * ty.size(),
                    dims,
                    ty.name()
                )),
                samples::StreamError::Invalid(v) => {
                    bad_value::<T>(self.path, v, dims, scaling.is_some())
                }
            }
        })
    }

    /// Closes the stream; a gzip stream is first decompressed to its end so that its
    /// trailer (CRC and length) is checked.
    fn finish(mut self) -> Result<(), NiftiError> {
        if self.gz {
            io::copy(&mut self.reader, &mut io::sink())
                .map_err(io_error(self.path, "checking the gzip stream"))?;
        }
        Ok(())
    }
}

/// Accepts the single-file magic "n+1" only, naming what other magics are.
fn check_magic(path: &Path, magic: &[u8; 4]) -> Result<(), NiftiError> {
    match magic {
        b"n+1\0" => Ok(()),
        b"ni1\0" => Err(not_nifti(
            path,
            "this is the header of a .hdr/.img pair (magic \"ni1\"); only single-file .nii / .nii.gz images are supported".into(),
        )),
        m => Err(not_nifti(
            path,
            format!(
                "magic is {:?}, not \"n+1\" (ANALYZE 7.5 images are not supported)",
                String::from_utf8_lossy(m)
            ),
        )),
    }
}

/// The three spatial dims of `dim`; a 4D (or higher) image must hold a single volume.
fn spatial_dims(path: &Path, h: &Header) -> Result<[usize; 3], NiftiError> {
    let ndim = h.dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(bad_header(
            path,
            format!("dim[0] = {ndim} is not in 1..=7 (dim = {:?})", h.dim),
        ));
    }
    let ndim = ndim as usize;
    let mut dims = [1usize; 3];
    let mut extra: u64 = 1;
    for i in 1..=ndim {
        let d = h.dim[i];
        if d < 1 {
            return Err(bad_header(
                path,
                format!("dim[{i}] = {d} is not positive (dim = {:?})", h.dim),
            ));
        }
        if i <= 3 {
            dims[i - 1] = d as usize;
        } else {
            extra = extra.saturating_mul(d as u64);
        }
    }
    if extra > 1 {
        return Err(NiftiError::NotThreeD {
            path: path.to_path_buf(),
            dims: h.dim[..=ndim].to_vec(),
            volumes: extra,
        });
    }
    Ok(dims)
}

/// The stored sample type of `datatype`; a `bitpix` that disagrees is warned about (the
/// datatype is trusted).
fn stored_sample_type(
    path: &Path,
    h: &Header,
    warnings: &mut Vec<String>,
) -> Result<SampleType, NiftiError> {
    let ty = sample_type(h.datatype).map_err(|name| NiftiError::UnsupportedDatatype {
        path: path.to_path_buf(),
        code: h.datatype,
        name,
    })?;
    if h.bitpix as usize != ty.size() * 8 {
        warnings.push(format!(
            "bitpix is {} but datatype {} ({}) has {} bits; the datatype was trusted",
            h.bitpix,
            h.datatype,
            ty.name(),
            ty.size() * 8
        ));
    }
    Ok(ty)
}

/// (`scl_slope`, `scl_inter`) when they change the values: a slope that is finite,
/// non-zero and not the identity with a zero intercept (a non-finite intercept counts as 0).
fn value_scaling(h: &Header, warnings: &mut Vec<String>) -> Option<(f64, f64)> {
    let slope = h.scl_slope as f64;
    let inter = if h.scl_inter.is_finite() {
        h.scl_inter as f64
    } else {
        if slope.is_finite() && slope != 0.0 {
            warnings.push(format!(
                "scl_inter is {} (not a number): 0 was used, so values may be offset",
                h.scl_inter
            ));
        }
        0.0
    };
    if !slope.is_finite() {
        warnings.push(format!(
            "scl_slope is {slope} (not a finite number): the stored values were used unscaled"
        ));
    }
    if slope.is_finite() && slope != 0.0 && !(slope == 1.0 && inter == 0.0) {
        Some((slope, inter))
    } else {
        None
    }
}

/// The byte offset of the voxels: `vox_offset`, raised to 352 (with a warning) when below
/// the minimum for a single-file NIfTI.
fn voxel_offset(path: &Path, h: &Header, warnings: &mut Vec<String>) -> Result<u64, NiftiError> {
    let vox_offset = h.vox_offset;
    if !vox_offset.is_finite() || vox_offset < 0.0 || vox_offset.fract() != 0.0 {
        return Err(bad_header(
            path,
            format!("vox_offset {vox_offset} is not a whole number of bytes"),
        ));
    }
    let offset = vox_offset as u64;
    if offset < SINGLE_FILE_OFFSET as u64 {
        warnings.push(format!(
            "vox_offset {offset} is below 352, the minimum for a single-file NIfTI; the voxels were read from byte 352"
        ));
        return Ok(SINGLE_FILE_OFFSET as u64);
    }
    Ok(offset)
}

fn bad_value<T: Target>(
    path: &Path,
    e: InvalidValue,
    dims: [usize; 3],
    scaled: bool,
) -> NiftiError {
    NiftiError::BadValue {
        path: path.to_path_buf(),
        message: samples::invalid_value_message::<T>(e, dims, scaled),
    }
}

enum GeometryProblem {
    Header(String),
    Volume(VolumeError),
}

/// The grid of a header: sform, else qform, else pixdim.
fn header_geometry(
    h: &Header,
    dims: [usize; 3],
    warnings: &mut Vec<String>,
) -> Result<Geometry, GeometryProblem> {
    let unit_scale = match h.xyzt_units & 0x07 {
        0 | 2 => 1.0,
        1 => {
            warnings.push("spatial units are metres; converted to millimetres".into());
            1000.0
        }
        3 => {
            warnings.push("spatial units are micrometres; converted to millimetres".into());
            0.001
        }
        u => {
            warnings.push(format!(
                "unknown spatial unit code {u}; millimetres assumed"
            ));
            1.0
        }
    };
    let spacing = [1, 2, 3].map(|i| h.pixdim[i] as f64);
    if h.sform_code > 0 && !spacing.iter().all(|v| v.is_finite() && *v > 0.0) {
        warnings.push(format!(
            "pixdim[1..3] = {spacing:?} are not valid voxel sizes; the sform's spacing was used"
        ));
    }
    let norm2: f64 = h.quatern.iter().map(|&v| (v as f64).powi(2)).sum();
    if h.qform_code > 0 && h.sform_code <= 0 && (norm2.is_nan() || norm2 > 1.0 + 1e-4) {
        warnings.push(format!(
            "the qform quaternion (b, c, d) = {:?} has b² + c² + d² = {norm2:.4} > 1: it was \
             normalised, so the orientation may be wrong",
            h.quatern
        ));
    }
    let qform = || {
        let q = Qform {
            b: h.quatern[0] as f64,
            c: h.quatern[1] as f64,
            d: h.quatern[2] as f64,
            qfac: if h.pixdim[0] < 0.0 { -1.0 } else { 1.0 },
        };
        qform_affine(q, spacing, h.qoffset.map(|v| v as f64))
    };
    let sform = || {
        let s = h.srow.map(|row| row.map(|v| v as f64));
        Matrix4::new(
            s[0][0], s[0][1], s[0][2], s[0][3], s[1][0], s[1][1], s[1][2], s[1][3], s[2][0],
            s[2][1], s[2][2], s[2][3], 0.0, 0.0, 0.0, 1.0,
        )
    };
    let check_finite = |m: &Matrix4<f64>, what: &str| {
        if m.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(GeometryProblem::Header(format!(
                "the {what} holds non-finite values"
            )))
        }
    };
    let qform_spacing_ok = |warnings: &mut Vec<String>| {
        if spacing.iter().any(|s| s.is_nan() || *s <= 0.0) {
            warnings.push(format!(
                "pixdim {:?} holds non-positive spacings; 1 mm used for those axes",
                &h.pixdim[1..4]
            ));
        }
    };
    let mut affine = if h.sform_code > 0 {
        let s = sform();
        check_finite(&s, "sform")?;
        let linear = s.fixed_view::<3, 3>(0, 0);
        let cols: Vec<Vector3<f64>> = (0..3).map(|a| linear.column(a).normalize()).collect();
        let max_cos = [(0, 1), (0, 2), (1, 2)]
            .iter()
            .map(|&(x, y)| cols[x].dot(&cols[y]).abs())
            .fold(0.0f64, f64::max);
        if max_cos > 1e-4 {
            warnings.push(format!(
                "the sform's voxel axes are not orthogonal (shear: largest |cos| between axes {max_cos:.2e}); loaded as is, but other tools may place it differently"
            ));
        }
        if h.qform_code > 0 {
            let q = qform();
            if q.iter().all(|v| v.is_finite()) {
                let diff = (q - s).abs().max();
                if diff > 1e-3 {
                    warnings.push(format!(
                        "the qform and the sform disagree (by up to {diff:.3} mm); the sform was used, but tools that prefer the qform will place this image differently"
                    ));
                }
            }
        }
        s
    } else if h.qform_code > 0 {
        let q = qform();
        check_finite(&q, "qform")?;
        qform_spacing_ok(warnings);
        q
    } else {
        warnings.push(
            "the header has neither sform nor qform: the image was placed with its pixdim spacing only, at the origin and without orientation (treat left/right with caution)".into(),
        );
        let [dx, dy, dz] = spacing.map(|s| if s > 0.0 && s.is_finite() { s } else { 1.0 });
        Matrix4::new(
            dx, 0.0, 0.0, 0.0, 0.0, dy, 0.0, 0.0, 0.0, 0.0, dz, 0.0, 0.0, 0.0, 0.0, 1.0,
        )
    };
    if unit_scale != 1.0 {
        let mut top = affine.fixed_view_mut::<3, 4>(0, 0);
        top *= unit_scale;
    }
    Geometry::from_ras_affine(dims, &affine).map_err(GeometryProblem::Volume)
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use nalgebra::Rotation3;
    use std::ffi::OsString;
    use std::fs;
    use std::io::Write;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn ramp_ct(g: &Geometry) -> Volume<i16> {
        let n = g.voxel_count();
        let voxels = (0..n)
            .map(|i| ((i as i64 * 37) % 4000 - 1024) as i16)
            .collect();
        Volume::new(g.clone(), voxels).unwrap()
    }

    fn oblique(spacing: [f64; 3]) -> Geometry {
        Geometry {
            dims: [5, 4, 3],
            spacing_mm: Vector3::from(spacing),
            origin_mm: Vector3::new(-120.25, 33.5, 1001.125),
            direction: *Rotation3::from_euler_angles(0.2, -0.1, 0.35).matrix(),
        }
    }

    /// A header for hand-built test files: int16, dims 2x3x4, no sform, no qform.
    fn base_header(dims: [i16; 3], datatype: i16, bitpix: i16) -> Header {
        Header {
            dim: [3, dims[0], dims[1], dims[2], 1, 1, 1, 1],
            intent_code: 0,
            datatype,
            bitpix,
            pixdim: [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            vox_offset: 352.0,
            scl_slope: 0.0,
            scl_inter: 0.0,
            xyzt_units: 2,
            cal_max: 0.0,
            cal_min: 0.0,
            descrip: [0; 80],
            qform_code: 0,
            sform_code: 0,
            quatern: [0.0; 3],
            qoffset: [0.0; 3],
            srow: [[0.0; 4]; 3],
            magic: *b"n+1\0",
        }
    }

    fn file_bytes(h: &Header, big_endian: bool, data: &[u8]) -> Vec<u8> {
        let mut out = h.to_bytes(big_endian).to_vec();
        out.resize(h.vox_offset.max(352.0) as usize, 0);
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn i16_le(values: &[i16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn assert_geometry_close(a: &Geometry, b: &Geometry, tol: f64) {
        assert_eq!(a.dims, b.dims);
        assert!(
            (a.spacing_mm - b.spacing_mm).abs().max() <= tol,
            "{a:?} vs {b:?}"
        );
        assert!(
            (a.origin_mm - b.origin_mm).abs().max() <= tol,
            "{a:?} vs {b:?}"
        );
        assert!(
            (a.direction - b.direction).abs().max() <= tol,
            "{a:?} vs {b:?}"
        );
    }

    /// The written file with its sform code zeroed, so that readers fall back to the qform.
    fn qform_only_copy(src: &Path, dst: &Path) {
        let mut bytes = fs::read(src).unwrap();
        assert_eq!(&bytes[0..4], &348i32.to_le_bytes());
        bytes[off::SFORM_CODE..off::SFORM_CODE + 2].copy_from_slice(&0i16.to_le_bytes());
        fs::write(dst, bytes).unwrap();
    }

    #[test]
    fn round_trip_axis_aligned_is_exact() {
        let dir = tmp();
        let g = Geometry::axis_aligned(
            [7, 5, 3],
            [0.9765625, 0.9765625, 3.0],
            [-249.51171875, -449.5, -740.0],
        );
        let ct = ramp_ct(&g);
        for name in ["ct.nii", "ct.nii.gz"] {
            let path = dir.path().join(name);
            write_nifti(&path, &ct).unwrap();
            let back = read_nifti_ct(&path).unwrap();
            assert_eq!(back.volume, ct, "{name}");
            assert!(back.warnings.is_empty(), "{:?}", back.warnings);
            assert_eq!(back.path, path);
        }
        let labels = ct.map(|v| (v.rem_euclid(7)) as u8);
        let path = dir.path().join("labels.nii.gz");
        write_nifti(&path, &labels).unwrap();
        let back = read_nifti_labels(&path).unwrap();
        assert_eq!(back.volume, labels);
        assert!(back.warnings.is_empty());
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        // The qform alone gives the same grid.
        let q = dir.path().join("q.nii");
        qform_only_copy(&dir.path().join("ct.nii"), &q);
        assert_eq!(read_nifti_ct(&q).unwrap().volume.geometry, g);
    }

    #[test]
    fn written_header_fields_are_at_their_offsets() {
        let dir = tmp();
        let g = Geometry::axis_aligned([2, 3, 4], [0.5, 0.75, 2.0], [10.0, 20.0, 30.0]);
        let path = dir.path().join("x.nii");
        write_nifti(&path, &Volume::filled(g, 7u8).unwrap()).unwrap();
        let b = fs::read(&path).unwrap();
        assert_eq!(b.len(), 352 + 24);
        let i16_at = |o: usize| i16::from_le_bytes([b[o], b[o + 1]]);
        let f32_at = |o: usize| f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        assert_eq!(i32::from_le_bytes([b[0], b[1], b[2], b[3]]), 348);
        assert_eq!(
            (40..56).step_by(2).map(i16_at).collect::<Vec<_>>(),
            vec![3, 2, 3, 4, 1, 1, 1, 1]
        );
        assert_eq!(i16_at(70), 2);
        assert_eq!(i16_at(72), 8);
        assert_eq!([f32_at(80), f32_at(84), f32_at(88)], [0.5, 0.75, 2.0]);
        assert_eq!(f32_at(108), 352.0);
        assert_eq!(b[123], 2);
        assert_eq!((i16_at(252), i16_at(254)), (1, 1));
        // LPS (10, 20, 30) is RAS (-10, -20, 30).
        assert_eq!(
            [f32_at(268), f32_at(272), f32_at(276)],
            [-10.0, -20.0, 30.0]
        );
        assert_eq!(
            [
                f32_at(280),
                f32_at(292),
                f32_at(300),
                f32_at(320),
                f32_at(324)
            ],
            [-0.5, -10.0, -0.75, 2.0, 30.0]
        );
        assert_eq!(&b[344..352], b"n+1\0\0\0\0\0");
        assert!(b[352..].iter().all(|&v| v == 7));
    }

    #[test]
    fn round_trip_oblique() {
        let dir = tmp();
        let path = dir.path().join("obl.nii.gz");
        let g = oblique([0.7, 0.8, 2.5]);
        let ct = ramp_ct(&g);
        write_nifti(&path, &ct).unwrap();
        let first = read_nifti_ct(&path).unwrap();
        assert_eq!(first.volume.voxels, ct.voxels);
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);
        // The header stores float32: the first read is within float32 precision...
        assert_geometry_close(&first.volume.geometry, &g, 1e-4);
        // ...and from then on a write/read round trip changes nothing (to 1e-9).
        write_nifti(&path, &first.volume).unwrap();
        let second = read_nifti_ct(&path).unwrap();
        assert_geometry_close(&second.volume.geometry, &first.volume.geometry, 1e-9);
        // The qform agrees with the sform.
        let q = dir.path().join("q.nii.gz");
        let plain = dir.path().join("plain.nii");
        write_nifti(&plain, &first.volume).unwrap();
        qform_only_copy(&plain, &q);
        let from_q = read_nifti_ct(&q).unwrap();
        assert_geometry_close(&from_q.volume.geometry, &first.volume.geometry, 1e-5);

        // An oblique grid whose affine is exact in float32 round-trips to 1e-9 at once.
        let mut exact = Geometry::axis_aligned([4, 3, 2], [1.25, 2.5, 5.0], [-100.5, 20.25, 7.0]);
        exact.direction = Matrix3::new(0.6, -0.8, 0.0, 0.8, 0.6, 0.0, 0.0, 0.0, 1.0);
        let path = dir.path().join("exact.nii");
        write_nifti(&path, &Volume::filled(exact.clone(), 3u8).unwrap()).unwrap();
        assert_geometry_close(
            &read_nifti_labels(&path).unwrap().volume.geometry,
            &exact,
            1e-9,
        );
    }

    #[test]
    fn left_handed_grid_uses_qfac() {
        let dir = tmp();
        let mut g = oblique([0.7, 0.8, 2.5]);
        let flipped = -g.direction.column(2);
        g.direction.set_column(2, &flipped);
        assert!(g.direction.determinant() < 0.0);
        let path = dir.path().join("lh.nii");
        write_nifti(&path, &Volume::filled(g.clone(), 1u8).unwrap()).unwrap();
        let b = fs::read(&path).unwrap();
        assert_eq!(f32::from_le_bytes([b[76], b[77], b[78], b[79]]), -1.0);
        let s = read_nifti_labels(&path).unwrap();
        assert_geometry_close(&s.volume.geometry, &g, 1e-4);
        let q = dir.path().join("q.nii");
        qform_only_copy(&path, &q);
        assert_geometry_close(
            &read_nifti_labels(&q).unwrap().volume.geometry,
            &s.volume.geometry,
            1e-5,
        );
    }

    #[test]
    fn qform_only_header() {
        let dir = tmp();
        // 180 degrees about z (b, c, d) = (0, 0, 1), qfac -1: i -> R... in RAS:
        // columns (-dx, 0, 0), (0, -dy, 0), (0, 0, -dz).
        let mut h = base_header([2, 3, 4], 4, 16);
        h.qform_code = 1;
        h.quatern = [0.0, 0.0, 1.0];
        h.pixdim = [-1.0, 0.5, 0.75, 2.0, 0.0, 0.0, 0.0, 0.0];
        h.qoffset = [10.0, 20.0, 30.0];
        let data: Vec<i16> = (0..24).collect();
        let path = dir.path().join("q.nii");
        fs::write(&path, file_bytes(&h, false, &i16_le(&data))).unwrap();
        let r = read_nifti_ct(&path).unwrap();
        let g = &r.volume.geometry;
        assert_eq!(g.dims, [2, 3, 4]);
        assert_eq!(g.spacing_mm, Vector3::new(0.5, 0.75, 2.0));
        // RAS (10, 20, 30) is LPS (-10, -20, 30); RAS -x is LPS +x, etc.
        assert_eq!(g.origin_mm, Vector3::new(-10.0, -20.0, 30.0));
        assert_eq!(
            g.direction,
            Matrix3::from_diagonal(&Vector3::new(1.0, 1.0, -1.0))
        );
        assert_eq!(g.orientation_code(), "LPI");
        assert_eq!(r.volume.voxels, data);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);

        // 90 degrees about z: a = d = sqrt(1/2): i -> RAS +y (anterior), j -> RAS -x (right).
        let s = std::f32::consts::FRAC_1_SQRT_2;
        h.quatern = [0.0, 0.0, s];
        h.pixdim[0] = 1.0;
        fs::write(&path, file_bytes(&h, false, &i16_le(&data))).unwrap();
        let g = read_nifti_ct(&path).unwrap().volume.geometry;
        let expected = Matrix3::new(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0); // LPS columns
        assert!(
            (g.direction - expected).abs().max() < 1e-6,
            "{}",
            g.direction
        );
        assert_eq!(g.orientation_code(), "ALS");
    }

    #[test]
    fn big_endian_header_and_data() {
        let dir = tmp();
        let mut h = base_header([3, 2, 2], 4, 16);
        h.sform_code = 2;
        h.srow = [
            [-2.0, 0.0, 0.0, 5.0],
            [0.0, -2.0, 0.0, 6.0],
            [0.0, 0.0, 4.0, -7.0],
        ];
        h.scl_slope = 1.0;
        h.scl_inter = -1024.0;
        let data: Vec<i16> = vec![0, 1, 2, 1000, 1024, 2048, -5, 3, 4, 5, 6, 7];
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_be_bytes()).collect();
        let path = dir.path().join("be.nii");
        fs::write(&path, file_bytes(&h, true, &bytes)).unwrap();
        assert_eq!(&fs::read(&path).unwrap()[0..4], &[0, 0, 1, 0x5c]);
        let r = read_nifti_ct(&path).unwrap();
        assert_eq!(
            r.volume.voxels,
            data.iter().map(|v| v - 1024).collect::<Vec<_>>()
        );
        let g = &r.volume.geometry;
        assert_eq!(g.spacing_mm, Vector3::new(2.0, 2.0, 4.0));
        assert_eq!(g.origin_mm, Vector3::new(-5.0, -6.0, -7.0));
        assert_eq!(g.direction, Matrix3::identity());
        // The same file gzipped is detected by its magic bytes whatever its name.
        let gz = dir.path().join("be_really_gzip.nii");
        fs::write(&gz, gzip(&fs::read(&path).unwrap())).unwrap();
        assert_eq!(read_nifti_ct(&gz).unwrap().volume, r.volume);
    }

    #[test]
    fn truncated_files_name_the_file() {
        let dir = tmp();
        let g = Geometry::axis_aligned([8, 8, 8], [1.0; 3], [0.0; 3]);
        let full = dir.path().join("full.nii");
        write_nifti(&full, &ramp_ct(&g)).unwrap();
        let bytes = fs::read(&full).unwrap();
        for (name, cut, gz) in [
            ("data.nii", bytes.len() - 10, false),
            ("header.nii", 200, false),
            ("data.nii.gz", bytes.len() - 10, true),
            ("header.nii.gz", 100, true),
            ("empty.nii", 0, false),
        ] {
            let path = dir.path().join(name);
            let part = &bytes[..cut];
            fs::write(&path, if gz { gzip(part) } else { part.to_vec() }).unwrap();
            let err = read_nifti_ct(&path).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            if name != "empty.nii" {
                assert!(
                    matches!(err, NiftiError::Truncated { .. }),
                    "{name}: {err:?}"
                );
            }
        }
        // A gzip stream cut in the middle (no trailer).
        let gz_full = gzip(&bytes);
        let path = dir.path().join("cut_stream.nii.gz");
        fs::write(&path, &gz_full[..gz_full.len() / 2]).unwrap();
        let msg = read_nifti_ct(&path).unwrap_err().to_string();
        assert!(msg.contains("cut_stream.nii.gz"), "{msg}");
        // A wrong CRC in the gzip trailer.
        let mut bad_crc = gz_full.clone();
        let n = bad_crc.len();
        bad_crc[n - 6] ^= 0x55;
        let path = dir.path().join("bad_crc.nii.gz");
        fs::write(&path, &bad_crc).unwrap();
        let msg = read_nifti_ct(&path).unwrap_err().to_string();
        assert!(msg.contains("bad_crc.nii.gz"), "{msg}");
        // Missing file.
        let msg = read_nifti_ct(&dir.path().join("missing.nii"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing.nii"), "{msg}");
        // Not NIfTI at all.
        let path = dir.path().join("text.nii");
        fs::write(&path, "hello world, this is not an image".repeat(20)).unwrap();
        let err = read_nifti_ct(&path).unwrap_err();
        assert!(matches!(err, NiftiError::NotNifti { .. }), "{err:?}");
    }

    #[test]
    fn four_d_is_rejected_but_single_volume_4d_is_read() {
        let dir = tmp();
        let mut h = base_header([2, 2, 2], 2, 8);
        h.dim = [4, 2, 2, 2, 3, 1, 1, 1];
        let path = dir.path().join("4d.nii");
        fs::write(&path, file_bytes(&h, false, &[1u8; 24])).unwrap();
        let err = read_nifti_labels(&path).unwrap_err();
        assert!(
            matches!(err, NiftiError::NotThreeD { volumes: 3, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("4d.nii") && err.to_string().contains("3 volumes"));

        h.dim = [4, 2, 2, 2, 1, 1, 1, 1];
        fs::write(&path, file_bytes(&h, false, &[1u8; 8])).unwrap();
        let r = read_nifti_labels(&path).unwrap();
        assert_eq!(r.volume.dims(), [2, 2, 2]);
        assert_eq!(r.volume.voxels, vec![1u8; 8]);
        // No sform nor qform: pixdim only, with a warning.
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("neither sform nor qform")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn float32_ct_is_rounded_and_saturated() {
        let dir = tmp();
        let values = [
            0.4f32,
            0.5,
            -0.5,
            1.6,
            -1.6,
            40000.0,
            -40000.0,
            f32::NAN,
            -1000.49,
            3071.5,
        ];
        let mut h = base_header([10, 1, 1], 16, 32);
        h.sform_code = 1;
        h.srow = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
        ];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let path = dir.path().join("f.nii");
        fs::write(&path, file_bytes(&h, false, &bytes)).unwrap();
        let r = read_nifti_ct(&path).unwrap();
        assert_eq!(
            r.volume.voxels,
            vec![0, 1, -1, 2, -2, 32767, -32768, 0, -1000, 3072]
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("2 voxel(s)") && w.contains("clamped")),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("1 voxel(s)") && w.contains("NaN")),
            "{:?}",
            r.warnings
        );
        // As labels, the first non-integer value is named.
        let err = read_nifti_labels(&path).unwrap_err().to_string();
        assert!(
            err.contains("f.nii") && err.contains("label value 0.4") && err.contains("(0, 0, 0)"),
            "{err}"
        );
    }

    #[test]
    fn datatypes_scaling_and_labels() {
        let dir = tmp();
        let path = dir.path().join("t.nii");
        let write = |h: &Header, data: &[u8]| fs::write(&path, file_bytes(h, false, data)).unwrap();
        // uint16 with slope/intercept.
        let mut h = base_header([3, 1, 1], 512, 16);
        h.scl_slope = 2.0;
        h.scl_inter = -1024.0;
        write(&h, &[0, 0, 0x00, 0x02, 0xff, 0xff]);
        assert_eq!(
            read_nifti_ct(&path).unwrap().volume.voxels,
            vec![-1024, 0, 32767]
        );
        // int8, int32, uint32, float64.
        let mut h = base_header([3, 1, 1], 256, 8);
        write(&h, &[0xff, 0x7f, 0x80]);
        assert_eq!(
            read_nifti_ct(&path).unwrap().volume.voxels,
            vec![-1, 127, -128]
        );
        h.datatype = 8;
        h.bitpix = 32;
        write(&h, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0]);
        assert_eq!(
            read_nifti_ct(&path).unwrap().volume.voxels,
            vec![1, -1, 32767]
        );
        h.datatype = 768;
        write(&h, &[1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0]);
        assert_eq!(
            read_nifti_ct(&path).unwrap().volume.voxels,
            vec![1, 32767, 32767]
        );
        h.datatype = 64;
        h.bitpix = 64;
        let data: Vec<u8> = [1.0f64, 2.0, 255.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write(&h, &data);
        assert_eq!(
            read_nifti_labels(&path).unwrap().volume.voxels,
            vec![1, 2, 255]
        );
        // Labels out of range.
        let mut h = base_header([2, 2, 1], 4, 16);
        write(&h, &i16_le(&[0, 1, 2, 300]));
        let err = read_nifti_labels(&path).unwrap_err().to_string();
        assert!(
            err.contains("t.nii") && err.contains("label value 300 at voxel (1, 1, 0)"),
            "{err}"
        );
        // Unknown datatype.
        h.datatype = 32;
        h.bitpix = 64;
        write(&h, &[0; 32]);
        let err = read_nifti_ct(&path).unwrap_err();
        assert!(
            matches!(err, NiftiError::UnsupportedDatatype { code: 32, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("code 32"), "{err}");
        // Negative dims.
        h.datatype = 4;
        h.bitpix = 16;
        h.dim[2] = -1;
        write(&h, &[0; 32]);
        assert!(matches!(
            read_nifti_ct(&path).unwrap_err(),
            NiftiError::BadHeader { .. }
        ));
    }

    #[test]
    fn vox_offset_and_extensions_are_honoured() {
        let dir = tmp();
        let mut h = base_header([2, 1, 1], 2, 8);
        h.vox_offset = 400.0;
        let mut bytes = h.to_bytes(false).to_vec();
        bytes.extend_from_slice(&[1, 0, 0, 0]); // an extension follows
        bytes.resize(400, 0xee);
        bytes.extend_from_slice(&[5, 6]);
        let path = dir.path().join("ext.nii");
        fs::write(&path, &bytes).unwrap();
        assert_eq!(read_nifti_labels(&path).unwrap().volume.voxels, vec![5, 6]);
    }

    #[test]
    fn sheared_sform_loads_with_a_warning() {
        let dir = tmp();
        let mut h = base_header([2, 2, 2], 2, 8);
        h.sform_code = 1;
        h.srow = [
            [-1.0, 0.0, 0.0, 0.0],
            [0.0, -1.0, 0.0, 0.0],
            [0.0, 0.3, 2.0, 0.0],
        ];
        let path = dir.path().join("shear.nii");
        fs::write(&path, file_bytes(&h, false, &[0u8; 8])).unwrap();
        let r = read_nifti_labels(&path).unwrap();
        assert!(
            r.warnings.iter().any(|w| w.contains("not orthogonal")),
            "{:?}",
            r.warnings
        );
        assert!((r.volume.geometry.spacing_mm[1] - (1.0f64 + 0.09).sqrt()).abs() < 1e-6);
    }

    #[test]
    fn corrupted_headers_never_panic() {
        let dir = tmp();
        let mut g = oblique([0.7, 0.8, 2.5]);
        g.dims = [3, 2, 2];
        let good = dir.path().join("good.nii");
        write_nifti(&good, &ramp_ct(&g)).unwrap();
        let bytes = fs::read(&good).unwrap();
        let path = dir.path().join("bad.nii");
        let mut outcomes = [0usize; 2];
        for at in 0..SINGLE_FILE_OFFSET {
            for v in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] = v;
                fs::write(&path, &b).unwrap();
                outcomes[read_nifti_ct(&path).is_ok() as usize] += 1;
                let _ = read_nifti_labels(&path);
            }
        }
        for len in 0..bytes.len() {
            fs::write(&path, &bytes[..len]).unwrap();
            assert!(read_nifti_ct(&path).is_err(), "cut at {len}");
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }

    #[test]
    fn failed_write_removes_the_temporary_file() {
        let dir = tmp();
        let g = Geometry::axis_aligned([2, 2, 2], [1.0; 3], [0.0; 3]);
        let vol = Volume::filled(g, 1u8).unwrap();
        // The destination is a non-empty folder: the rename fails.
        let dest = dir.path().join("taken.nii.gz");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("keep"), b"x").unwrap();
        let err = write_nifti(&dest, &vol).unwrap_err();
        assert!(err.to_string().contains("taken.nii.gz"), "{err}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("taken.nii.gz")]);
        // Missing folder.
        let err = write_nifti(&dir.path().join("no/such/x.nii"), &vol).unwrap_err();
        assert!(err.to_string().contains("x.nii"), "{err}");
    }
}
