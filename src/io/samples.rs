//! Sample conversion shared by the NIfTI and NRRD readers: decoding stored samples
//! (any of the usual integer and float types, either byte order, optionally scaled by
//! `value * slope + intercept`) into the crate's voxel types, with the CT policy (round
//! and saturate into i16 HU, NaN to 0) or the label policy (integers in range, else an
//! error naming the first offending value and its voxel).
//!
//! Each format maps its own type codes or names to [`SampleType`]; everything after that
//! (byte order, scaling, rounding, clamping, the warnings and messages it gives) is here.

use std::path::Path;

use super::ReadVolume;
use crate::volume::{Geometry, Volume, VolumeError};

/// A stored sample type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SampleType {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl SampleType {
    pub(crate) fn size(self) -> usize {
        match self {
            SampleType::U8 | SampleType::I8 => 1,
            SampleType::I16 | SampleType::U16 => 2,
            SampleType::I32 | SampleType::U32 | SampleType::F32 => 4,
            SampleType::I64 | SampleType::U64 | SampleType::F64 => 8,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SampleType::U8 => "uint8",
            SampleType::I8 => "int8",
            SampleType::I16 => "int16",
            SampleType::U16 => "uint16",
            SampleType::I32 => "int32",
            SampleType::U32 => "uint32",
            SampleType::I64 => "int64",
            SampleType::U64 => "uint64",
            SampleType::F32 => "float32",
            SampleType::F64 => "float64",
        }
    }
}

/// One converted value.
pub(crate) enum Converted<T> {
    Exact(T),
    /// Out of the target's range, saturated.
    Clamped(T),
    /// NaN, replaced.
    NonFinite(T),
    /// Not acceptable for the target (label policy).
    Invalid,
}

/// A voxel type the readers produce.
pub(crate) trait Target: Copy + Send + Sync + 'static {
    /// What every value must be, for error messages (label policy).
    const EXPECTED: &'static str;
    fn from_i64(v: i64) -> Converted<Self>;
    fn from_f64(v: f64) -> Converted<Self>;
}

/// CT policy: round half away from zero, saturate, NaN -> 0.
impl Target for i16 {
    const EXPECTED: &'static str = "a number";
    #[inline]
    fn from_i64(v: i64) -> Converted<Self> {
        if v < i16::MIN as i64 {
            Converted::Clamped(i16::MIN)
        } else if v > i16::MAX as i64 {
            Converted::Clamped(i16::MAX)
        } else {
            Converted::Exact(v as i16)
        }
    }
    #[inline]
    fn from_f64(v: f64) -> Converted<Self> {
        if v.is_nan() {
            return Converted::NonFinite(0);
        }
        let r = v.round();
        if r < i16::MIN as f64 {
            Converted::Clamped(i16::MIN)
        } else if r > i16::MAX as f64 {
            Converted::Clamped(i16::MAX)
        } else {
            Converted::Exact(r as i16)
        }
    }
}

/// Tolerance for float label values that are meant to be integers.
const LABEL_TOLERANCE: f64 = 1e-6;

/// Label policy: integers in 0..=255 (floats within 1e-6 of one).
impl Target for u8 {
    const EXPECTED: &'static str = "an integer in 0..=255";
    #[inline]
    fn from_i64(v: i64) -> Converted<Self> {
        match u8::try_from(v) {
            Ok(v) => Converted::Exact(v),
            Err(_) => Converted::Invalid,
        }
    }
    #[inline]
    fn from_f64(v: f64) -> Converted<Self> {
        let r = v.round();
        if (v - r).abs() <= LABEL_TOLERANCE && (0.0..=255.0).contains(&r) {
            Converted::Exact(r as u8)
        } else {
            Converted::Invalid
        }
    }
}

/// Label policy for wide label maps: integers in the i32 range.
impl Target for i32 {
    const EXPECTED: &'static str = "an integer in the i32 range";
    #[inline]
    fn from_i64(v: i64) -> Converted<Self> {
        match i32::try_from(v) {
            Ok(v) => Converted::Exact(v),
            Err(_) => Converted::Invalid,
        }
    }
    #[inline]
    fn from_f64(v: f64) -> Converted<Self> {
        let r = v.round();
        if (v - r).abs() <= LABEL_TOLERANCE && (i32::MIN as f64..=i32::MAX as f64).contains(&r) {
            Converted::Exact(r as i32)
        } else {
            Converted::Invalid
        }
    }
}

/// Converted values and what was changed on the way.
pub(crate) struct Decoded<T> {
    pub(crate) values: Vec<T>,
    pub(crate) clamped: usize,
    pub(crate) non_finite: usize,
}

/// The first value the target refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct InvalidValue {
    /// Linear voxel index.
    pub(crate) index: usize,
    /// The value (after scaling).
    pub(crate) value: f64,
}

impl<T: Target> Decoded<T> {
    fn with_capacity(n: usize) -> Self {
        Self {
            values: Vec::with_capacity(n),
            clamped: 0,
            non_finite: 0,
        }
    }

    #[inline]
    fn accept(&mut self, index: usize, c: Converted<T>, value: f64) -> Result<(), InvalidValue> {
        match c {
            Converted::Exact(v) => self.values.push(v),
            Converted::Clamped(v) => {
                self.clamped += 1;
                self.values.push(v);
            }
            Converted::NonFinite(v) => {
                self.non_finite += 1;
                self.values.push(v);
            }
            Converted::Invalid => return Err(InvalidValue { index, value }),
        }
        Ok(())
    }
}

fn run_int<T: Target, const N: usize>(
    bytes: &[u8],
    read: impl Fn([u8; N]) -> i64,
    scaling: Option<(f64, f64)>,
    out: &mut Decoded<T>,
) -> Result<(), InvalidValue> {
    let (chunks, _) = bytes.as_chunks::<N>();
    match scaling {
        None => {
            for (index, c) in chunks.iter().enumerate() {
                let v = read(*c);
                out.accept(index, T::from_i64(v), v as f64)?;
            }
        }
        Some((slope, inter)) => {
            for (index, c) in chunks.iter().enumerate() {
                let v = read(*c) as f64 * slope + inter;
                out.accept(index, T::from_f64(v), v)?;
            }
        }
    }
    Ok(())
}

fn run_float<T: Target, const N: usize>(
    bytes: &[u8],
    read: impl Fn([u8; N]) -> f64,
    scaling: Option<(f64, f64)>,
    out: &mut Decoded<T>,
) -> Result<(), InvalidValue> {
    let (chunks, _) = bytes.as_chunks::<N>();
    let (slope, inter) = scaling.unwrap_or((1.0, 0.0));
    for (index, c) in chunks.iter().enumerate() {
        let v = read(*c) * slope + inter;
        out.accept(index, T::from_f64(v), v)?;
    }
    Ok(())
}

/// Decodes `bytes` (a whole number of samples; a trailing partial sample is ignored)
/// as `ty` in the given byte order, applies `value * slope + inter` when `scaling` is
/// set, and converts to `T`. Stops at the first value `T` refuses.
pub(crate) fn decode<T: Target>(
    bytes: &[u8],
    ty: SampleType,
    big_endian: bool,
    scaling: Option<(f64, f64)>,
) -> Result<Decoded<T>, InvalidValue> {
    let mut out = Decoded::with_capacity(bytes.len() / ty.size());
    decode_into(bytes, ty, big_endian, scaling, &mut out)?;
    Ok(out)
}

/// Why [`decode_stream`] stopped.
pub(crate) enum StreamError {
    Io(std::io::Error),
    /// The stream ended after this many bytes.
    Short(usize),
    Invalid(InvalidValue),
}

/// Decodes `count` samples read from `reader` in chunks, so that the stored bytes are
/// never all in memory beside the converted values (peak: the output plus 1 MiB). The
/// caller has checked `count` against the memory budget; the output is reserved
/// fallibly.
pub(crate) fn decode_stream<T: Target>(
    reader: &mut dyn std::io::Read,
    count: usize,
    ty: SampleType,
    big_endian: bool,
    scaling: Option<(f64, f64)>,
) -> Result<Decoded<T>, StreamError> {
    let mut out = Decoded {
        values: Vec::new(),
        clamped: 0,
        non_finite: 0,
    };
    out.values.try_reserve_exact(count).map_err(|_| {
        StreamError::Io(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            "the system refused to allocate the voxels",
        ))
    })?;
    let chunk_samples = (1 << 20) / ty.size();
    let mut buffer = vec![0u8; chunk_samples * ty.size()];
    let mut done = 0usize;
    while done < count {
        let n = (count - done).min(chunk_samples) * ty.size();
        let mut got = 0;
        while got < n {
            match reader.read(&mut buffer[got..n]) {
                Ok(0) => return Err(StreamError::Short(done * ty.size() + got)),
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(StreamError::Io(e)),
            }
        }
        decode_into(&buffer[..n], ty, big_endian, scaling, &mut out).map_err(|mut e| {
            e.index += done;
            StreamError::Invalid(e)
        })?;
        done += n / ty.size();
    }
    Ok(out)
}

/// [`decode`] appending to `out`; indices in the error are relative to `bytes`.
fn decode_into<T: Target>(
    bytes: &[u8],
    ty: SampleType,
    big_endian: bool,
    scaling: Option<(f64, f64)>,
    out: &mut Decoded<T>,
) -> Result<(), InvalidValue> {
    let be = big_endian;
    // `$run` (run_int or run_float) reads each sample as `$t` in the byte order and
    // widens it to `$wide` (i64 or f64).
    macro_rules! run {
        ($run:ident, $wide:ty, $t:ty, $n:literal) => {
            $run::<T, $n>(
                bytes,
                |a| {
                    (if be {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as $wide
                },
                scaling,
                out,
            )
        };
    }
    macro_rules! int {
        ($t:ty, $n:literal) => {
            run!(run_int, i64, $t, $n)
        };
    }
    macro_rules! float {
        ($t:ty, $n:literal) => {
            run!(run_float, f64, $t, $n)
        };
    }
    match ty {
        SampleType::U8 => int!(u8, 1),
        SampleType::I8 => int!(i8, 1),
        SampleType::I16 => int!(i16, 2),
        SampleType::U16 => int!(u16, 2),
        SampleType::I32 => int!(i32, 4),
        SampleType::U32 => int!(u32, 4),
        SampleType::I64 => int!(i64, 8),
        // u64 beyond i64::MAX goes through f64 so that it saturates / is refused
        // rather than wrapping.
        SampleType::U64 => float!(u64, 8),
        SampleType::F32 => float!(f32, 4),
        SampleType::F64 => float!(f64, 8),
    }
}

/// Converts values already parsed as numbers (ASCII encodings).
pub(crate) fn decode_f64<T: Target>(
    values: impl IntoIterator<Item = f64>,
    count_hint: usize,
    scaling: Option<(f64, f64)>,
) -> Result<Decoded<T>, InvalidValue> {
    let mut out = Decoded::with_capacity(count_hint);
    let (slope, inter) = scaling.unwrap_or((1.0, 0.0));
    for (index, v) in values.into_iter().enumerate() {
        let v = v * slope + inter;
        out.accept(index, T::from_f64(v), v)?;
    }
    Ok(out)
}

impl<T: Target> Decoded<T> {
    /// The volume of the converted values on `geometry`, read from `path`, with the
    /// conversion's warnings (clamped and NaN values) after the reader's `warnings`.
    pub(crate) fn into_read_volume(
        self,
        geometry: Geometry,
        path: &Path,
        mut warnings: Vec<String>,
    ) -> Result<ReadVolume<T>, VolumeError> {
        push_conversion_warnings(&self, &mut warnings);
        let volume = Volume::new(geometry, self.values)?;
        Ok(ReadVolume {
            volume,
            path: path.to_path_buf(),
            warnings,
        })
    }
}

/// Plain-words warnings for clamped and NaN values.
fn push_conversion_warnings<T>(d: &Decoded<T>, warnings: &mut Vec<String>) {
    if d.clamped > 0 {
        warnings.push(format!(
            "{} voxel(s) outside the int16 range were clamped to -32768..=32767",
            d.clamped
        ));
    }
    if d.non_finite > 0 {
        warnings.push(format!(
            "{} voxel(s) were NaN and were set to 0",
            d.non_finite
        ));
    }
}

/// "label value 1.5 at voxel (3, 0, 7) is not an integer in 0..=255".
pub(crate) fn invalid_value_message<T: Target>(
    e: InvalidValue,
    dims: [usize; 3],
    scaled: bool,
) -> String {
    let i = e.index % dims[0].max(1);
    let j = (e.index / dims[0].max(1)) % dims[1].max(1);
    let k = e.index / (dims[0].max(1) * dims[1].max(1));
    format!(
        "label value {}{} at voxel ({i}, {j}, {k}) is not {}",
        e.value,
        if scaled {
            " (after scl_slope/scl_inter)"
        } else {
            ""
        },
        T::EXPECTED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_policy_rounds_saturates_and_counts() {
        let bytes: Vec<u8> = [1.5f32, -1.5, 40000.0, -40000.0, f32::NAN]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect();
        let d = decode::<i16>(&bytes, SampleType::F32, true, None).unwrap();
        assert_eq!(d.values, vec![2, -2, 32767, -32768, 0]);
        assert_eq!((d.clamped, d.non_finite), (2, 1));
        let mut warnings = Vec::new();
        push_conversion_warnings(&d, &mut warnings);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn scaling_applies_to_integers() {
        let bytes: Vec<u8> = [0u16, 512, 0xffff]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let d = decode::<i16>(&bytes, SampleType::U16, false, Some((2.0, -1024.0))).unwrap();
        assert_eq!(d.values, vec![-1024, 0, 32767]);
        assert_eq!(d.clamped, 1);
    }

    #[test]
    fn u64_beyond_i64_saturates_instead_of_wrapping() {
        let d = decode::<i16>(&u64::MAX.to_le_bytes(), SampleType::U64, false, None).unwrap();
        assert_eq!(d.values, vec![32767]);
    }

    #[test]
    fn label_policy_names_the_first_refused_value() {
        let e = decode_f64::<u8>([0.0, 1.0, 2.5, 300.0], 4, None)
            .err()
            .unwrap();
        assert_eq!(
            e,
            InvalidValue {
                index: 2,
                value: 2.5
            }
        );
        assert_eq!(
            invalid_value_message::<u8>(e, [2, 2, 1], false),
            "label value 2.5 at voxel (0, 1, 0) is not an integer in 0..=255"
        );
        let wide = decode::<i32>(&70000i32.to_le_bytes(), SampleType::I32, false, None).unwrap();
        assert_eq!(wide.values, vec![70000]);
    }
}
