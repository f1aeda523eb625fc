//! NRRD reader (`.nrrd` with attached data, `.nhdr` with a detached data file), written
//! from the NRRD format specification (teem).
//!
//! Supported: `dimension: 3` (or more axes, of which exactly three are spatial and the
//! others have size 1), the usual scalar types and their aliases, encodings raw, gzip and
//! ascii, `endian`, `line skip`, `byte skip`, `data file` (a single file, relative to the
//! header's folder), `space` (LPS, RAS, LAS; `scanner-xyz` and the `3D-*-handed` spaces
//! are taken as LPS with a warning), `space directions`, `space origin`, and `spacings`
//! (identity orientation, with a warning) when there are no space directions. World
//! coordinates are converted to LPS: RAS flips x and y, LAS flips y.
//!
//! Every error names the file; nothing here panics on malformed input.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nalgebra::{Matrix3, Vector3};

use super::ReadVolume;
use super::guard;
use super::samples::{self, SampleType, Target};
use crate::volume::{Geometry, VolumeError};

/// Errors of the NRRD reader. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum NrrdError {
    #[error("{}: {context}: {source}", path.display())]
    Io {
        path: PathBuf,
        context: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a NRRD file: {reason}", path.display())]
    NotNrrd { path: PathBuf, reason: String },
    #[error("{}: bad NRRD header: {reason}", path.display())]
    BadHeader { path: PathBuf, reason: String },
    #[error("{}: not supported: {what}", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{}: data is truncated: {what}", path.display())]
    Truncated { path: PathBuf, what: String },
    #[error("{}: corrupt data: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
    #[error("{}: cannot read its data file {}: {source}", path.display(), data_file.display())]
    DataFile {
        path: PathBuf,
        data_file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {message}", path.display())]
    BadValue { path: PathBuf, message: String },
    #[error("{}: invalid geometry: {source}", path.display())]
    Geometry {
        path: PathBuf,
        #[source]
        source: VolumeError,
    },
}

/// Reads a NRRD volume as CT: values are rounded and saturated to i16, with a warning
/// counting clamped voxels.
pub fn read_nrrd_ct(path: &Path) -> Result<ReadVolume<i16>, NrrdError> {
    read_nrrd::<i16>(path)
}

/// Reads a NRRD volume as a label map: every value must be an integer in 0..=255,
/// otherwise the error names the first offending value and its voxel.
pub fn read_nrrd_labels(path: &Path) -> Result<ReadVolume<u8>, NrrdError> {
    read_nrrd::<u8>(path)
}

/// Reads a NRRD volume of integer labels that may not fit in u8 (e.g. the Chest Imaging
/// Platform's `type * 256 + region` maps): every value must be an integer in the i32
/// range.
pub fn read_nrrd_i32(path: &Path) -> Result<ReadVolume<i32>, NrrdError> {
    read_nrrd::<i32>(path)
}

// ---------------------------------------------------------------------------------------
// Header

/// The header's fields (names lower-cased with spaces removed, so that `data file` and
/// `datafile` are the same) and where attached data starts.
struct RawHeader {
    fields: BTreeMap<String, String>,
    /// Byte offset just past the blank line that ends the header; `None` when the header
    /// runs to the end of the file (a detached header).
    data_start: Option<usize>,
}

fn parse_raw_header(bytes: &[u8]) -> Result<RawHeader, HeaderProblem> {
    let mut pos = 0usize;
    let next_line = |pos: &mut usize| -> Option<(String, bool)> {
        if *pos >= bytes.len() {
            return None;
        }
        let rest = &bytes[*pos..];
        let (line, ended) = match rest.iter().position(|&b| b == b'\n') {
            Some(n) => {
                *pos += n + 1;
                (&rest[..n], true)
            }
            None => {
                *pos = bytes.len();
                (rest, false)
            }
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some((String::from_utf8_lossy(line).into_owned(), ended))
    };
    let magic = next_line(&mut pos).map(|(l, _)| l).unwrap_or_default();
    let is_magic =
        magic.len() == 8 && magic.starts_with("NRRD000") && magic.as_bytes()[7].is_ascii_digit();
    if !is_magic {
        let shown: String = magic.chars().take(16).collect();
        return Err(HeaderProblem::NotNrrd(format!(
            "the first line is {shown:?}, not a NRRD magic like \"NRRD0004\""
        )));
    }
    let mut fields = BTreeMap::new();
    let mut line_no = 1;
    let mut data_start = None;
    while let Some((line, ended)) = next_line(&mut pos) {
        line_no += 1;
        if line.is_empty() {
            if ended {
                data_start = Some(pos);
            }
            break;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some(colon) = line.find(':') else {
            let shown: String = line.chars().take(60).collect();
            return Err(HeaderProblem::Bad(format!(
                "line {line_no} ({shown:?}) is not \"field: value\" (is a blank line missing before the data?)"
            )));
        };
        if line[colon + 1..].starts_with('=') {
            continue; // key:=value pair
        }
        let name: String = line[..colon]
            .chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect();
        let value = line[colon + 1..].trim().to_string();
        if fields.insert(name, value).is_some() {
            return Err(HeaderProblem::Bad(format!(
                "field \"{}\" appears twice",
                line[..colon].trim()
            )));
        }
    }
    Ok(RawHeader { fields, data_start })
}

enum HeaderProblem {
    NotNrrd(String),
    Bad(String),
    Unsupported(String),
}

fn sample_type(name: &str) -> Option<SampleType> {
    let t = name
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    Some(match t.as_str() {
        "signed char" | "int8" | "int8_t" => SampleType::I8,
        "uchar" | "unsigned char" | "uint8" | "uint8_t" => SampleType::U8,
        "short" | "short int" | "signed short" | "signed short int" | "int16" | "int16_t" => {
            SampleType::I16
        }
        "ushort" | "unsigned short" | "unsigned short int" | "uint16" | "uint16_t" => {
            SampleType::U16
        }
        "int" | "signed int" | "int32" | "int32_t" => SampleType::I32,
        "uint" | "unsigned int" | "uint32" | "uint32_t" => SampleType::U32,
        "longlong"
        | "long long"
        | "long long int"
        | "signed long long"
        | "signed long long int"
        | "int64"
        | "int64_t" => SampleType::I64,
        "ulonglong" | "unsigned long long" | "unsigned long long int" | "uint64" | "uint64_t" => {
            SampleType::U64
        }
        "float" => SampleType::F32,
        "double" => SampleType::F64,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Raw,
    Gzip,
    Ascii,
}

/// The world frame of the header's space, and how to reach LPS from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Lps,
    Ras,
    Las,
}

impl Space {
    /// Multiplies (component-wise) a vector of this space into LPS.
    fn to_lps(self) -> Vector3<f64> {
        match self {
            Space::Lps => Vector3::new(1.0, 1.0, 1.0),
            Space::Ras => Vector3::new(-1.0, -1.0, 1.0),
            Space::Las => Vector3::new(1.0, -1.0, 1.0),
        }
    }
}

/// One entry of `space directions`: a vector, or `none` for a non-spatial axis.
fn parse_vector_list(text: &str) -> Result<Vec<Option<Vec<f64>>>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if let Some(inner) = rest.strip_prefix('(') {
            let Some(close) = inner.find(')') else {
                return Err(format!("unclosed \"(\" in {text:?}"));
            };
            out.push(Some(parse_vector(&inner[..close])?));
            rest = inner[close + 1..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            if word.eq_ignore_ascii_case("none") {
                out.push(None);
            } else {
                return Err(format!(
                    "{word:?} is neither a vector like (1,0,0) nor \"none\""
                ));
            }
            rest = rest[end..].trim_start();
        }
    }
    Ok(out)
}

/// The inside of "(x,y,z)".
fn parse_vector(inner: &str) -> Result<Vec<f64>, String> {
    inner
        .split(',')
        .map(|c| {
            let c = c.trim();
            c.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{c:?} in ({inner}) is not a finite number"))
        })
        .collect()
}

fn parse_space(name: &str, warnings: &mut Vec<String>) -> Result<Space, HeaderProblem> {
    let lower = name.trim().to_ascii_lowercase();
    Ok(match lower.as_str() {
        "left-posterior-superior" | "lps" => Space::Lps,
        "right-anterior-superior" | "ras" => Space::Ras,
        "left-anterior-superior" | "las" => Space::Las,
        "scanner-xyz" | "3d-right-handed" | "3d-left-handed" => {
            warnings.push(format!(
                "space \"{name}\" has no patient orientation; it was taken as LPS (left-posterior-superior)"
            ));
            Space::Lps
        }
        "left-posterior-superior-time"
        | "lpst"
        | "right-anterior-superior-time"
        | "rast"
        | "left-anterior-superior-time"
        | "last"
        | "scanner-xyz-time"
        | "3d-right-handed-time"
        | "3d-left-handed-time" => {
            return Err(HeaderProblem::Unsupported(format!(
                "space \"{name}\" has a time axis; only 3D volumes can be opened"
            )));
        }
        _ => return Err(HeaderProblem::Bad(format!("unknown space \"{name}\""))),
    })
}

// ---------------------------------------------------------------------------------------
// Reader

/// Reads a NRRD volume, step by step: header fields, sample type, sizes, encoding, byte
/// order, grid, where the data is, the skips, the stored values, conversion to `T`.
fn read_nrrd<T: Target>(path: &Path) -> Result<ReadVolume<T>, NrrdError> {
    let bytes = guard::read_regular_file(path).map_err(|source| NrrdError::Io {
        path: path.to_path_buf(),
        context: "cannot read",
        source,
    })?;
    let header = parse_raw_header(&bytes).map_err(|e| header_problem(path, e))?;
    let f = Fields {
        path,
        fields: &header.fields,
    };
    let mut warnings = Vec::new();
    let ty = f.sample_type()?;
    let sizes = f.sizes()?;
    let encoding = f.encoding()?;
    let big_endian = f.big_endian(ty, encoding, &mut warnings)?;
    let (dims, geometry) =
        header_geometry(f.fields, &sizes, &mut warnings).map_err(|e| header_problem(path, e))?;
    let want = f.expected(ty, &sizes, dims)?;
    guard::check_grid(dims, std::mem::size_of::<T>()).map_err(|e| f.bad(e.to_string()))?;
    let (region, source_name) = f.data_region(&bytes, header.data_start)?;
    let (line_skip, byte_skip) = f.skips()?;
    let region = Region {
        bytes: f.skip_lines(&region, line_skip, &source_name)?,
        name: &source_name,
        byte_skip,
    };
    let stored = match encoding {
        Encoding::Raw => Stored::Bytes(Cow::Borrowed(f.raw_bytes(&region, &want)?)),
        Encoding::Gzip => Stored::Bytes(Cow::Owned(f.gunzip(&region, &want)?)),
        Encoding::Ascii => Stored::Numbers(f.ascii_values(&region, &want)?),
    };
    let decoded = match stored {
        Stored::Bytes(data) => samples::decode::<T>(&data, ty, big_endian, None),
        Stored::Numbers(values) => samples::decode_f64::<T>(values, want.count, None),
    }
    .map_err(|e| NrrdError::BadValue {
        path: path.to_path_buf(),
        message: samples::invalid_value_message::<T>(e, dims, false),
    })?;
    decoded
        .into_read_volume(geometry, path, warnings)
        .map_err(|source| NrrdError::Geometry {
            path: path.to_path_buf(),
            source,
        })
}

fn header_problem(path: &Path, e: HeaderProblem) -> NrrdError {
    let path = path.to_path_buf();
    match e {
        HeaderProblem::NotNrrd(reason) => NrrdError::NotNrrd { path, reason },
        HeaderProblem::Bad(reason) => NrrdError::BadHeader { path, reason },
        HeaderProblem::Unsupported(what) => NrrdError::Unsupported { path, what },
    }
}

/// The stored values, before conversion.
enum Stored<'a> {
    /// Raw or gunzipped bytes.
    Bytes(Cow<'a, [u8]>),
    /// Parsed ascii numbers.
    Numbers(Vec<f64>),
}

/// The bytes the data is read from (after the line skip), how to name them in messages,
/// and the header's byte skip.
#[derive(Clone, Copy)]
struct Region<'r> {
    bytes: &'r [u8],
    name: &'r str,
    byte_skip: i64,
}

/// What the data must hold: `count` samples of `ty`, `nbytes` bytes, for the header's
/// `sizes`.
struct Expected<'s> {
    ty: SampleType,
    sizes: &'s [usize],
    count: usize,
    nbytes: usize,
}

/// The header fields of one file, with the file for error messages.
struct Fields<'a> {
    path: &'a Path,
    fields: &'a BTreeMap<String, String>,
}

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&'a str> {
        self.fields.get(name).map(String::as_str)
    }

    fn require(&self, name: &'static str) -> Result<&'a str, NrrdError> {
        self.get(name)
            .ok_or_else(|| self.bad(format!("the required field \"{name}\" is missing")))
    }

    fn bad(&self, reason: String) -> NrrdError {
        NrrdError::BadHeader {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn unsupported(&self, what: String) -> NrrdError {
        NrrdError::Unsupported {
            path: self.path.to_path_buf(),
            what,
        }
    }

    fn truncated(&self, what: String) -> NrrdError {
        NrrdError::Truncated {
            path: self.path.to_path_buf(),
            what,
        }
    }

    /// `type`.
    fn sample_type(&self) -> Result<SampleType, NrrdError> {
        let type_name = self.require("type")?;
        sample_type(type_name).ok_or_else(|| {
            self.unsupported(format!(
                "type \"{type_name}\" (supported: signed/unsigned char, short, int, long long, float, double and their aliases)"
            ))
        })
    }

    /// `sizes`, one per axis of `dimension`.
    fn sizes(&self) -> Result<Vec<usize>, NrrdError> {
        let dimension_text = self.require("dimension")?;
        let dimension: usize = dimension_text
            .parse()
            .ok()
            .filter(|d| (1..=16).contains(d))
            .ok_or_else(|| {
                self.bad(format!(
                    "dimension \"{dimension_text}\" is not a number in 1..=16"
                ))
            })?;
        let sizes_text = self.require("sizes")?;
        let sizes: Vec<usize> = sizes_text
            .split_whitespace()
            .map(|s| s.parse::<usize>().ok().filter(|&n| n >= 1))
            .collect::<Option<_>>()
            .ok_or_else(|| self.bad(format!("sizes \"{sizes_text}\" are not positive integers")))?;
        if sizes.len() != dimension {
            return Err(self.bad(format!(
                "sizes \"{sizes_text}\" give {} axes but dimension is {dimension}",
                sizes.len()
            )));
        }
        Ok(sizes)
    }

    /// `encoding`.
    fn encoding(&self) -> Result<Encoding, NrrdError> {
        let encoding_name = self.require("encoding")?;
        Ok(match encoding_name.to_ascii_lowercase().as_str() {
            "raw" => Encoding::Raw,
            "gzip" | "gz" => Encoding::Gzip,
            "ascii" | "text" | "txt" => Encoding::Ascii,
            other => {
                return Err(self.unsupported(format!(
                    "encoding \"{other}\" (supported: raw, gzip, ascii)"
                )));
            }
        })
    }

    /// `endian`; little-endian when absent (with a warning where the byte order matters).
    fn big_endian(
        &self,
        ty: SampleType,
        encoding: Encoding,
        warnings: &mut Vec<String>,
    ) -> Result<bool, NrrdError> {
        Ok(
            match self.get("endian").map(str::to_ascii_lowercase).as_deref() {
                Some("little") => false,
                Some("big") => true,
                Some(other) => {
                    return Err(self.bad(format!("endian \"{other}\" is neither little nor big")));
                }
                None => {
                    if ty.size() > 1 && encoding != Encoding::Ascii {
                        warnings.push("no \"endian\" field; little-endian was assumed".into());
                    }
                    false
                }
            },
        )
    }

    /// The sample count and byte size of the volume (its non-spatial axes have size 1).
    fn expected<'s>(
        &self,
        ty: SampleType,
        sizes: &'s [usize],
        dims: [usize; 3],
    ) -> Result<Expected<'s>, NrrdError> {
        let too_large = || self.bad(format!("sizes {sizes:?} are too large"));
        let count = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(too_large)?;
        let nbytes = count.checked_mul(ty.size()).ok_or_else(too_large)?;
        Ok(Expected {
            ty,
            sizes,
            count,
            nbytes,
        })
    }

    /// The bytes holding the data (the detached `data file`, else what follows the
    /// header in `bytes`) and how to name them in messages.
    fn data_region<'b>(
        &self,
        bytes: &'b [u8],
        data_start: Option<usize>,
    ) -> Result<(Cow<'b, [u8]>, String), NrrdError> {
        let Some(name) = self.get("datafile") else {
            return match data_start {
                Some(start) => Ok((Cow::Borrowed(&bytes[start..]), "the attached data".into())),
                None => Err(self.bad(
                    "the header has no \"data file\" field and no blank line before attached data"
                        .into(),
                )),
            };
        };
        let name = name.trim();
        let rel = Path::new(name);
        let data_path = if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new("")).join(rel)
        };
        let multi = name.eq_ignore_ascii_case("LIST")
            || (name.contains('%') && name.split_whitespace().count() > 1);
        if multi {
            return Err(self.unsupported(format!(
                "data file \"{name}\": data split over several files"
            )));
        }
        let detached =
            guard::read_regular_file(&data_path).map_err(|source| NrrdError::DataFile {
                path: self.path.to_path_buf(),
                data_file: data_path.clone(),
                source,
            })?;
        Ok((
            Cow::Owned(detached),
            format!("data file {}", data_path.display()),
        ))
    }

    /// `line skip` (>= 0) and `byte skip` (>= -1).
    fn skips(&self) -> Result<(i64, i64), NrrdError> {
        let parse_skip = |name: &str| -> Result<i64, NrrdError> {
            match self.get(name) {
                None => Ok(0),
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|&n| n >= -1)
                    .ok_or_else(|| self.bad(format!("{name} \"{v}\" is not an integer >= -1"))),
            }
        };
        let line_skip = parse_skip("lineskip")?;
        let byte_skip = parse_skip("byteskip")?;
        if line_skip < 0 {
            return Err(self.bad("line skip cannot be -1".into()));
        }
        Ok((line_skip, byte_skip))
    }

    /// `region` after its first `line_skip` lines.
    fn skip_lines<'r>(
        &self,
        mut region: &'r [u8],
        line_skip: i64,
        source_name: &str,
    ) -> Result<&'r [u8], NrrdError> {
        for _ in 0..line_skip {
            match region.iter().position(|&b| b == b'\n') {
                Some(n) => region = &region[n + 1..],
                None => {
                    return Err(self.truncated(format!(
                        "{source_name} has fewer than the {line_skip} lines \"line skip\" asks to skip"
                    )));
                }
            }
        }
        Ok(region)
    }

    /// Raw encoding: the voxel bytes, after `byte_skip` bytes (-1: the last bytes).
    fn raw_bytes<'r>(&self, region: &Region<'r>, want: &Expected) -> Result<&'r [u8], NrrdError> {
        let Region {
            bytes: region,
            name: source_name,
            byte_skip,
        } = *region;
        let nbytes = want.nbytes;
        let start = if byte_skip == -1 {
            region.len().checked_sub(nbytes)
        } else {
            Some(byte_skip as usize).filter(|&s| s <= region.len())
        };
        start
            .and_then(|s| region.get(s..s.checked_add(nbytes)?))
            .ok_or_else(|| {
                self.truncated(format!(
                    "{source_name} holds {} bytes but {nbytes} bytes of voxel data ({:?} of {}) are needed{}",
                    region.len(),
                    want.sizes,
                    want.ty.name(),
                    if byte_skip > 0 { format!(" after a byte skip of {byte_skip}") } else { String::new() }
                ))
            })
    }

    /// Refuses `byte skip: -1`, which only raw encoding allows.
    fn forward_byte_skip(&self, byte_skip: i64) -> Result<u64, NrrdError> {
        if byte_skip == -1 {
            return Err(self.bad("byte skip -1 is only allowed with raw encoding".into()));
        }
        Ok(byte_skip as u64)
    }

    /// Gzip encoding: the voxel bytes, `byte_skip` bytes into the decompressed stream,
    /// which is decompressed to its end so that its trailer (CRC, length) is checked.
    fn gunzip(&self, region: &Region, want: &Expected) -> Result<Vec<u8>, NrrdError> {
        let skip = self.forward_byte_skip(region.byte_skip)?;
        let source_name = region.name;
        let nbytes = want.nbytes;
        let total = skip.saturating_add(nbytes as u64);
        let most = (region.bytes.len() as u64).saturating_mul(guard::DEFLATE_MAX_RATIO);
        if total > most {
            return Err(self.truncated(format!(
                "sizes {:?} need {} of voxel data, more than the {} gzip stream of {source_name} can hold",
                want.sizes,
                guard::human_bytes(nbytes as u64),
                guard::human_bytes(region.bytes.len() as u64)
            )));
        }
        let mut data = Vec::new();
        data.try_reserve_exact(nbytes).map_err(|_| {
            self.bad(format!(
                "sizes {:?} need {nbytes} bytes, which cannot be allocated",
                want.sizes
            ))
        })?;
        let mut dec = MultiGzDecoder::new(region.bytes);
        io::copy(&mut (&mut dec).take(skip), &mut io::sink())
            .and_then(|_| (&mut dec).take(total - skip).read_to_end(&mut data))
            .and_then(|_| io::copy(&mut dec, &mut io::sink()))
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    self.truncated(format!("the gzip stream of {source_name} ends early: {e}"))
                } else {
                    NrrdError::Corrupt {
                        path: self.path.to_path_buf(),
                        what: format!("cannot decompress {source_name}: {e}"),
                    }
                }
            })?;
        if data.len() < nbytes {
            return Err(self.truncated(format!(
                "{source_name} decompresses to {} bytes (after a byte skip of {skip}) but {nbytes} bytes of voxel data ({:?} of {}) are needed",
                data.len(),
                want.sizes,
                want.ty.name()
            )));
        }
        Ok(data)
    }

    /// Ascii encoding: the first `count` numbers (separated by white space or commas)
    /// after `byte_skip` bytes.
    fn ascii_values(&self, region: &Region, want: &Expected) -> Result<Vec<f64>, NrrdError> {
        let skip = self.forward_byte_skip(region.byte_skip)?;
        let source_name = region.name;
        let count = want.count;
        let text = region.bytes.get(skip as usize..).unwrap_or(&[]);
        let text = String::from_utf8_lossy(text);
        let mut values = Vec::with_capacity(count.min(1 << 24));
        for token in text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .take(count)
        {
            let v = token
                .parse::<f64>()
                .map_err(|_| self.bad(format!("ascii data: {token:?} is not a number")))?;
            values.push(v);
        }
        if values.len() < count {
            return Err(self.truncated(format!(
                "{source_name} holds {} of the {count} ascii values",
                values.len()
            )));
        }
        Ok(values)
    }
}

/// The spatial dims and the grid (in LPS) of a header.
fn header_geometry(
    f: &BTreeMap<String, String>,
    sizes: &[usize],
    warnings: &mut Vec<String>,
) -> Result<([usize; 3], Geometry), HeaderProblem> {
    let bad = HeaderProblem::Bad;
    let get = |name: &str| f.get(name).map(String::as_str);

    // The space.
    let space = match (get("space"), get("spacedimension")) {
        (Some(name), _) => Some(parse_space(name, warnings)?),
        (None, Some(d)) => {
            if d.trim() != "3" {
                return Err(HeaderProblem::Unsupported(format!(
                    "space dimension {d}; only 3 is supported"
                )));
            }
            warnings.push(
                "\"space dimension: 3\" without a named space; the coordinates were taken as LPS (left-posterior-superior)".into(),
            );
            Some(Space::Lps)
        }
        (None, None) => None,
    };
    if let Some(units) = get("spaceunits") {
        let odd: Vec<&str> = units
            .split_whitespace()
            .map(|u| u.trim_matches('"'))
            .filter(|u| !u.eq_ignore_ascii_case("mm") && !u.eq_ignore_ascii_case("none"))
            .collect();
        if !odd.is_empty() {
            warnings.push(format!(
                "space units {units} are not millimetres; the values were used as millimetres"
            ));
        }
    }

    let mut dims = [1usize; 3];
    let mut spacing = Vector3::new(1.0, 1.0, 1.0);
    let mut direction = Matrix3::identity();
    let mut origin = Vector3::zeros();
    let frame = space.unwrap_or(Space::Lps);

    if let Some(text) = get("spacedirections") {
        let entries = parse_vector_list(text).map_err(|e| bad(format!("space directions: {e}")))?;
        if entries.len() != sizes.len() {
            return Err(bad(format!(
                "space directions has {} entries but dimension is {}",
                entries.len(),
                sizes.len()
            )));
        }
        if space.is_none() {
            warnings.push(
                "space directions without a \"space\" field; the coordinates were taken as LPS (left-posterior-superior)".into(),
            );
        }
        let mut spatial = 0usize;
        for (axis, (entry, &size)) in entries.iter().zip(sizes).enumerate() {
            match entry {
                None if sizes.len() == 3 => {
                    return Err(bad(format!(
                        "space directions: axis {axis} is \"none\", but a 3D volume needs a direction for every axis"
                    )));
                }
                None => {
                    if size > 1 {
                        return Err(HeaderProblem::Unsupported(format!(
                            "axis {axis} (size {size}) is not spatial: multi-component, vector or time-series images cannot be opened, only scalar 3D volumes"
                        )));
                    }
                }
                Some(v) => {
                    if v.len() != 3 {
                        return Err(bad(format!(
                            "space directions: axis {axis} has {} components, not 3",
                            v.len()
                        )));
                    }
                    if spatial == 3 {
                        return Err(HeaderProblem::Unsupported(
                            "more than 3 spatial axes".into(),
                        ));
                    }
                    let v = Vector3::new(v[0], v[1], v[2]).component_mul(&frame.to_lps());
                    let n = v.norm();
                    if !(n > 0.0 && n.is_finite()) {
                        return Err(bad(format!(
                            "space directions: axis {axis} has a zero-length vector"
                        )));
                    }
                    dims[spatial] = size;
                    spacing[spatial] = n;
                    direction.set_column(spatial, &(v / n));
                    spatial += 1;
                }
            }
        }
        if spatial != 3 {
            return Err(HeaderProblem::Unsupported(format!(
                "{spatial} spatial axes; only 3D volumes can be opened"
            )));
        }
    } else {
        if sizes.len() != 3 {
            return Err(HeaderProblem::Unsupported(format!(
                "dimension {} without space directions; only 3D volumes can be opened",
                sizes.len()
            )));
        }
        dims.copy_from_slice(sizes);
        match get("spacings") {
            Some(text) => {
                let values: Vec<f64> = text
                    .split_whitespace()
                    .map(|s| s.parse::<f64>().ok().filter(|v| v.is_finite() && *v != 0.0))
                    .collect::<Option<_>>()
                    .filter(|v: &Vec<f64>| v.len() == 3)
                    .ok_or_else(|| {
                        bad(format!("spacings \"{text}\" are not 3 non-zero finite numbers"))
                    })?;
                for a in 0..3 {
                    // A negative spacing means the axis runs backwards.
                    spacing[a] = values[a].abs();
                    direction[(a, a)] = values[a].signum();
                }
                warnings.push(format!(
                    "no space directions: the volume was placed with the spacings {text} and an identity orientation (treat left/right with caution)"
                ));
            }
            None => warnings.push(
                "neither space directions nor spacings: 1 mm voxels with an identity orientation were assumed (treat left/right and sizes with caution)".into(),
            ),
        }
        if space.is_some() {
            // The identity is in the header's space.
            for a in 0..3 {
                let col = direction.column(a).component_mul(&frame.to_lps());
                direction.set_column(a, &col);
            }
        }
    }

    match get("spaceorigin") {
        Some(text) => {
            let t = text.trim();
            let inner = t
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| {
                    bad(format!(
                        "space origin \"{text}\" is not a vector like (x,y,z)"
                    ))
                })?;
            let v = parse_vector(inner).map_err(|e| bad(format!("space origin: {e}")))?;
            if v.len() != 3 {
                return Err(bad(format!(
                    "space origin \"{text}\" does not have 3 components"
                )));
            }
            origin = Vector3::new(v[0], v[1], v[2]).component_mul(&frame.to_lps());
        }
        None => {
            if get("spacedirections").is_some() {
                warnings.push("no space origin; the first voxel was placed at (0, 0, 0)".into());
            }
        }
    }

    let g = Geometry {
        dims,
        spacing_mm: spacing,
        origin_mm: origin,
        direction,
    };
    Ok((dims, g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::fs;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn attached(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(b"\n");
        out.extend_from_slice(data);
        out
    }

    const LPS_HEADER: &str = "NRRD0004
# Complete NRRD file format specification at:
# http://teem.sourceforge.net/nrrd/format.html
type: short
dimension: 3
space: left-posterior-superior
sizes: 3 2 2
space directions: (0.5,0,0) (0,0.75,0) (0,0,2.5)
kinds: domain domain domain
endian: little
encoding: raw
space origin: (-10.5,20,-300.25)
key:=value with: colons
";

    fn ramp() -> Vec<i16> {
        vec![-1024, -1000, -500, 0, 1, 2, 100, 200, 300, 1000, 2000, 3071]
    }

    fn le(values: &[i16]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn raw_lps_attached() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ct.nrrd");
        fs::write(&path, attached(LPS_HEADER, &le(&ramp()))).unwrap();
        let r = read_nrrd_ct(&path).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.volume.voxels, ramp());
        let g = &r.volume.geometry;
        assert_eq!(g.dims, [3, 2, 2]);
        assert_eq!(g.spacing_mm, Vector3::new(0.5, 0.75, 2.5));
        assert_eq!(g.origin_mm, Vector3::new(-10.5, 20.0, -300.25));
        assert_eq!(g.direction, Matrix3::identity());
        // CRLF line ends work too.
        let crlf = LPS_HEADER.replace('\n', "\r\n");
        let mut bytes = crlf.into_bytes();
        bytes.extend_from_slice(b"\r\n");
        bytes.extend_from_slice(&le(&ramp()));
        fs::write(&path, bytes).unwrap();
        assert_eq!(read_nrrd_ct(&path).unwrap().volume, r.volume);
    }

    #[test]
    fn gzip_ras_big_endian() {
        let dir = tempfile::tempdir().unwrap();
        let header = "NRRD0005
type: int16
dimension: 3
space: RAS
sizes: 3 2 2
space directions: (-0.5,0,0) (0,0,0.75) (0,-2.5,0)
endian: big
encoding: gz
space origin: (10.5,-20,-300.25)
space units: \"mm\" \"mm\" \"mm\"
";
        let data: Vec<u8> = ramp().iter().flat_map(|v| v.to_be_bytes()).collect();
        let path = dir.path().join("ras.nrrd");
        fs::write(&path, attached(header, &gzip(&data))).unwrap();
        let r = read_nrrd_ct(&path).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.volume.voxels, ramp());
        let g = &r.volume.geometry;
        assert_eq!(g.spacing_mm, Vector3::new(0.5, 0.75, 2.5));
        // RAS -> LPS flips x and y.
        assert_eq!(g.origin_mm, Vector3::new(-10.5, 20.0, -300.25));
        assert_eq!(
            g.direction,
            Matrix3::new(1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0)
        );
        assert_eq!(g.orientation_code(), "LSP");
        // Truncated gzip stream.
        let gz = gzip(&data);
        fs::write(&path, attached(header, &gz[..gz.len() - 12])).unwrap();
        let err = read_nrrd_ct(&path).unwrap_err();
        assert!(err.to_string().contains("ras.nrrd"), "{err}");
        // Too little data in a complete stream.
        fs::write(&path, attached(header, &gzip(&data[..20]))).unwrap();
        let err = read_nrrd_ct(&path).unwrap_err();
        assert!(matches!(err, NrrdError::Truncated { .. }), "{err:?}");
        assert!(err.to_string().contains("ras.nrrd"), "{err}");
    }

    #[test]
    fn detached_header_las_with_gzip_data_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let header = "NRRD0004
type: unsigned char
dimension: 3
space: left-anterior-superior
sizes: 2 2 1
space directions: (1,0,0) (0,1,0) (0,0,1)
encoding: gzip
space origin: (1,2,3)
data file: sub/labels.raw.gz
";
        fs::write(dir.path().join("sub/labels.raw.gz"), gzip(&[0, 1, 2, 255])).unwrap();
        let path = dir.path().join("labels.nhdr");
        fs::write(&path, header).unwrap();
        let r = read_nrrd_labels(&path).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        assert_eq!(r.volume.voxels, vec![0, 1, 2, 255]);
        let g = &r.volume.geometry;
        // LAS -> LPS flips y.
        assert_eq!(g.origin_mm, Vector3::new(1.0, -2.0, 3.0));
        assert_eq!(
            g.direction,
            Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, 1.0))
        );
        // Missing data file: both files are named.
        fs::write(&path, header.replace("sub/labels", "sub/missing")).unwrap();
        let err = read_nrrd_labels(&path).unwrap_err().to_string();
        assert!(
            err.contains("labels.nhdr") && err.contains("missing.raw.gz"),
            "{err}"
        );
    }

    #[test]
    fn detached_raw_with_skips_and_ascii() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.nhdr");
        let mut data = b"junk line\nanother\n".to_vec();
        data.extend_from_slice(&[9, 9, 9]);
        data.extend_from_slice(&le(&ramp()));
        fs::write(dir.path().join("x.raw"), &data).unwrap();
        let header = "NRRD0004\ntype: short\ndimension: 3\nsizes: 3 2 2\nspace: LPS\nspace directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\nendian: little\nencoding: raw\nline skip: 2\nbyte skip: 3\ndata file: x.raw\n";
        fs::write(&path, header).unwrap();
        assert_eq!(read_nrrd_ct(&path).unwrap().volume.voxels, ramp());
        // byte skip -1: the data is at the end of the file.
        fs::write(
            &path,
            header.replace("line skip: 2\nbyte skip: 3", "byte skip: -1"),
        )
        .unwrap();
        assert_eq!(read_nrrd_ct(&path).unwrap().volume.voxels, ramp());
        // ascii.
        let text = "1 2 3\n4 5 6\n7,8,9 10 11 12\n";
        fs::write(dir.path().join("x.txt"), text).unwrap();
        fs::write(
            &path,
            header.replace(
                "encoding: raw\nline skip: 2\nbyte skip: 3\ndata file: x.raw",
                "encoding: ascii\ndata file: x.txt",
            ),
        )
        .unwrap();
        assert_eq!(
            read_nrrd_labels(&path).unwrap().volume.voxels,
            (1..=12).collect::<Vec<u8>>()
        );
    }

    #[test]
    fn spacings_fallback_and_scanner_xyz_warn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.nrrd");
        let header = "NRRD0001\ntype: uchar\ndimension: 3\nsizes: 2 1 1\nspacings: 0.5 0.6 -2\nencoding: raw\n";
        fs::write(&path, attached(header, &[3, 4])).unwrap();
        let r = read_nrrd_labels(&path).unwrap();
        assert_eq!(r.volume.voxels, vec![3, 4]);
        assert_eq!(r.volume.geometry.spacing_mm, Vector3::new(0.5, 0.6, 2.0));
        assert_eq!(r.volume.geometry.orientation_code(), "LPI");
        assert!(
            r.warnings.iter().any(|w| w.contains("no space directions")),
            "{:?}",
            r.warnings
        );

        let header = "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 1 1\nspace: scanner-xyz\nspace directions: (2,0,0) (0,2,0) (0,0,2)\nencoding: raw\n";
        fs::write(&path, attached(header, &[3, 4])).unwrap();
        let r = read_nrrd_labels(&path).unwrap();
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("scanner-xyz") && w.contains("LPS")),
            "{:?}",
            r.warnings
        );
        assert!(
            r.warnings.iter().any(|w| w.contains("no space origin")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn none_axes_and_4d() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.nrrd");
        let base = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 2 1 1\nspace: LPS\nspace directions: none (0,1,0) (0,0,1)\nencoding: raw\n";
        fs::write(&path, attached(base, &[1, 2])).unwrap();
        let err = read_nrrd_labels(&path).unwrap_err();
        assert!(matches!(err, NrrdError::BadHeader { .. }), "{err:?}");
        assert!(
            err.to_string().contains("n.nrrd") && err.to_string().contains("none"),
            "{err}"
        );
        // A leading component axis of size 1 is dropped.
        let one = "NRRD0004\ntype: uint8\ndimension: 4\nsizes: 1 2 1 1\nspace: LPS\nspace directions: none (1,0,0) (0,1,0) (0,0,1)\nkinds: scalar domain domain domain\nencoding: raw\n";
        fs::write(&path, attached(one, &[1, 2])).unwrap();
        let r = read_nrrd_labels(&path).unwrap();
        assert_eq!(r.volume.dims(), [2, 1, 1]);
        // A real 4th axis is refused.
        let four = one.replace("sizes: 1 2 1 1", "sizes: 3 2 1 1");
        fs::write(&path, attached(&four, &[1; 6])).unwrap();
        let err = read_nrrd_labels(&path).unwrap_err();
        assert!(matches!(err, NrrdError::Unsupported { .. }), "{err:?}");
    }

    #[test]
    fn labels_range_and_i32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lm.nrrd");
        let header = LPS_HEADER.replace("type: short", "type: unsigned short");
        let values: Vec<i16> = vec![0, 9, 521, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        fs::write(&path, attached(&header, &le(&values))).unwrap();
        let err = read_nrrd_labels(&path).unwrap_err().to_string();
        assert!(
            err.contains("lm.nrrd") && err.contains("label value 521 at voxel (2, 0, 0)"),
            "{err}"
        );
        let r = read_nrrd_i32(&path).unwrap();
        assert_eq!(r.volume.voxels[..3], [0, 9, 521]);
        // float data as CT is rounded.
        let header = LPS_HEADER.replace("type: short", "type: float");
        let f: Vec<u8> = (0..12)
            .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
            .collect();
        fs::write(&path, attached(&header, &f)).unwrap();
        let r = read_nrrd_ct(&path).unwrap();
        assert_eq!(r.volume.voxels, vec![0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.nrrd");
        let data = le(&ramp());
        let cases: Vec<(String, &str)> = vec![
            ("P5 not nrrd".into(), "not a NRRD"),
            (LPS_HEADER.replace("type: short", "type: block"), "type"),
            (
                LPS_HEADER.replace("encoding: raw", "encoding: bzip2"),
                "bzip2",
            ),
            (LPS_HEADER.replace("sizes: 3 2 2", "sizes: 3 2"), "sizes"),
            (LPS_HEADER.replace("sizes: 3 2 2", "sizes: 3 -2 2"), "sizes"),
            (
                LPS_HEADER.replace("sizes: 3 2 2", "sizes: 3 2 200"),
                "truncated",
            ),
            (LPS_HEADER.replace("(0,0.75,0)", "(0,0.75)"), "components"),
            (LPS_HEADER.replace("(0,0.75,0)", "(0,0,0)"), "zero-length"),
            (
                LPS_HEADER.replace("(0,0.75,0)", "(0,x,0)"),
                "not a finite number",
            ),
            (
                LPS_HEADER.replace("left-posterior-superior", "up-down-sideways"),
                "unknown space",
            ),
            (LPS_HEADER.replace("dimension: 3\n", ""), "dimension"),
            (
                LPS_HEADER.replace("endian: little", "endian: middle"),
                "endian",
            ),
            (
                LPS_HEADER.replace("space origin: (-10.5,20,-300.25)", "space origin: -10.5,20"),
                "space origin",
            ),
            (LPS_HEADER.replace("kinds:", "kinds domain"), "field: value"),
            (format!("{LPS_HEADER}type: short\n"), "twice"),
        ];
        for (header, expect) in cases {
            fs::write(&path, attached(&header, &data)).unwrap();
            let err = read_nrrd_ct(&path).unwrap_err().to_string();
            assert!(
                err.contains("bad.nrrd") && err.contains(expect),
                "{expect}: {err}"
            );
        }
        // No blank line and no data file.
        fs::write(&path, LPS_HEADER).unwrap();
        let err = read_nrrd_ct(&path).unwrap_err().to_string();
        assert!(err.contains("blank line"), "{err}");
        // Empty file.
        fs::write(&path, b"").unwrap();
        assert!(matches!(
            read_nrrd_ct(&path).unwrap_err(),
            NrrdError::NotNrrd { .. }
        ));
        // Raw data cut short.
        fs::write(&path, attached(LPS_HEADER, &data[..23])).unwrap();
        let err = read_nrrd_ct(&path).unwrap_err();
        assert!(matches!(err, NrrdError::Truncated { .. }), "{err:?}");
    }

    #[test]
    fn corrupted_headers_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.nrrd");
        let data = gzip(&le(&ramp()));
        let header = LPS_HEADER.replace("encoding: raw", "encoding: gzip");
        let mut outcomes = [0usize; 2];
        for (at, _) in header.char_indices() {
            for c in ["x", "9", "-", " ", "\n", "(", ")", ",", ":", "none"] {
                let mut h = header.clone();
                h.replace_range(at..at + 1, c);
                fs::write(&path, attached(&h, &data)).unwrap();
                outcomes[read_nrrd_ct(&path).is_ok() as usize] += 1;
                let _ = read_nrrd_labels(&path);
            }
        }
        let full = attached(&header, &data);
        for len in 0..full.len() {
            fs::write(&path, &full[..len]).unwrap();
            assert!(read_nrrd_ct(&path).is_err(), "cut at {len}");
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }

    #[test]
    fn type_aliases() {
        for (name, ty) in [
            ("short int", SampleType::I16),
            ("signed  short", SampleType::I16),
            ("int16_t", SampleType::I16),
            ("uint8", SampleType::U8),
            ("unsigned char", SampleType::U8),
            ("signed char", SampleType::I8),
            ("ushort", SampleType::U16),
            ("unsigned int", SampleType::U32),
            ("int", SampleType::I32),
            ("long long int", SampleType::I64),
            ("uint64", SampleType::U64),
            ("float", SampleType::F32),
            ("double", SampleType::F64),
        ] {
            assert_eq!(sample_type(name), Some(ty), "{name}");
        }
        assert_eq!(sample_type("char"), None);
        assert_eq!(sample_type("block"), None);
    }
}
