//! Pixel data of one file to i16 HU: native data is read straight from the element,
//! encapsulated data (JPEG, JPEG 2000, RLE, ...) goes through dicom-pixeldata's codecs.

use std::borrow::Cow;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::{DicomError, FileHeader, frame_header};
use crate::io::guard;

/// An opened image file whose frames can be converted to HU.
pub(crate) struct OpenImage<'h> {
    obj: DefaultDicomObject,
    header: &'h FileHeader,
    encapsulated: bool,
    /// The transfer syntax's name, for messages.
    codec: String,
}

impl<'h> OpenImage<'h> {
    pub(crate) fn open(header: &'h FileHeader) -> Result<Self, DicomError> {
        let path = &header.path;
        let ts = TransferSyntaxRegistry
            .get(&header.transfer_syntax)
            .ok_or_else(|| DicomError::UnsupportedTransferSyntax {
                path: path.clone(),
                uid: header.transfer_syntax.clone(),
                name: "unknown to dicom-rs".into(),
            })?;
        if ts.is_unsupported_pixel_encapsulation() || !ts.can_decode_all() {
            return Err(DicomError::UnsupportedTransferSyntax {
                path: path.clone(),
                uid: header.transfer_syntax.clone(),
                name: ts.name().to_string(),
            });
        }
        if header.samples_per_pixel != 1 {
            return Err(DicomError::Decode {
                path: path.clone(),
                message: format!(
                    "{} samples per pixel (a colour image, not a CT slice)",
                    header.samples_per_pixel
                ),
            });
        }
        if !matches!(header.bits_allocated, 8 | 16 | 32) {
            return Err(DicomError::Decode {
                path: path.clone(),
                message: format!("{} bits allocated is not supported", header.bits_allocated),
            });
        }
        let obj = super::scan::open_object(path, None).map_err(|e| DicomError::Decode {
            path: path.clone(),
            message: format!("unreadable file (truncated?): {e}"),
        })?;
        if obj.element_opt(tags::PIXEL_DATA).ok().flatten().is_none() {
            return Err(DicomError::Decode {
                path: path.clone(),
                message: "no Pixel Data element".into(),
            });
        }
        Ok(Self {
            obj,
            header,
            encapsulated: ts.is_encapsulated_pixel_data(),
            codec: ts.name().trim().to_string(),
        })
    }

    fn frame_bytes(&self, frame: u32) -> Result<Cow<'_, [u8]>, DicomError> {
        let h = self.header;
        let frame_len = h.rows as usize * h.columns as usize * (h.bits_allocated as usize / 8);
        if self.encapsulated {
            let codec_error = |message: String| DicomError::Decode {
                path: h.path.clone(),
                message: format!("frame {frame} ({}): {message}", self.codec),
            };
            self.check_frame_header(frame).map_err(codec_error)?;
            let decoded =
                guard::catch_panic("the decoder", || self.obj.decode_pixel_data_frame(frame))
                    .map_err(codec_error)?
                    .map_err(|e| codec_error(guard::error_chain(&e)))?;
            let data = decoded.data();
            if data.len() < frame_len {
                return Err(DicomError::Decode {
                    path: h.path.clone(),
                    message: format!(
                        "frame {frame} decoded to {} bytes, expected {frame_len}",
                        data.len()
                    ),
                });
            }
            return Ok(Cow::Owned(data[..frame_len].to_vec()));
        }
        let element = self
            .obj
            .element(tags::PIXEL_DATA)
            .map_err(|e| DicomError::Decode {
                path: h.path.clone(),
                message: e.to_string(),
            })?;
        let bytes = element.to_bytes().map_err(|e| DicomError::Decode {
            path: h.path.clone(),
            message: format!("Pixel Data is not a byte array: {e}"),
        })?;
        let start = frame as usize * frame_len;
        let end = start + frame_len;
        if bytes.len() < end {
            return Err(DicomError::Decode {
                path: h.path.clone(),
                message: format!(
                    "Pixel Data holds {} bytes, frame {frame} needs bytes {start}..{end} (truncated file?)",
                    bytes.len()
                ),
            });
        }
        Ok(match bytes {
            Cow::Borrowed(b) => Cow::Borrowed(&b[start..end]),
            Cow::Owned(b) => Cow::Owned(b[start..end].to_vec()),
        })
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.header.path
    }

    /// Checks the frame's compressed header against Rows / Columns before its codec
    /// allocates what that header claims ([`frame_header`]).
    fn check_frame_header(&self, frame: u32) -> Result<(), String> {
        let h = self.header;
        let family = frame_header::Family::of(&h.transfer_syntax);
        if family == frame_header::Family::Other {
            return Ok(());
        }
        let Some(fragments) = self
            .obj
            .element(tags::PIXEL_DATA)
            .ok()
            .and_then(|e| e.value().fragments())
        else {
            return Err(
                "Pixel Data is not encapsulated although the transfer syntax says so".into(),
            );
        };
        // One fragment per frame (always for RLE, usual for JPEG); otherwise the first
        // fragment starts frame 0.
        let first = if fragments.len() == h.number_of_frames as usize {
            fragments.get(frame as usize)
        } else if frame == 0 {
            fragments.first()
        } else {
            None
        };
        let Some(bytes) = first else {
            if fragments.is_empty() {
                return Err("Pixel Data holds no fragments".into());
            }
            return Ok(());
        };
        let segments = h.samples_per_pixel as u32 * (h.bits_allocated as u32).div_ceil(8);
        frame_header::check(family, bytes, [h.rows, h.columns], segments)
    }

    /// For native pixel data longer than the header's frames need (beyond the even-length
    /// padding byte): how many bytes it holds and how many were expected. Such a file
    /// has the wrong Rows / Columns / BitsAllocated, and its image is read wrongly.
    pub(crate) fn excess_native_bytes(&self) -> Option<(usize, usize)> {
        if self.encapsulated {
            return None;
        }
        let h = self.header;
        let expected = h.rows as usize
            * h.columns as usize
            * (h.bits_allocated as usize / 8)
            * h.number_of_frames as usize;
        // The element's declared length: no copy of the pixels.
        let held = self
            .obj
            .element(tags::PIXEL_DATA)
            .ok()?
            .header()
            .len
            .get()? as usize;
        (held > expected.next_multiple_of(2)).then_some((held, expected))
    }

    /// Converts `frame` to HU with the given rescale into `out` (rows * columns values).
    /// Returns how many values were clamped to the i16 range.
    pub(crate) fn frame_to_hu(
        &self,
        frame: u32,
        slope: f64,
        intercept: f64,
        out: &mut [i16],
    ) -> Result<usize, DicomError> {
        let bytes = self.frame_bytes(frame)?;
        let h = self.header;
        Ok(stored_to_hu(
            &bytes,
            h.bits_allocated,
            h.bits_stored,
            h.pixel_signed,
            slope,
            intercept,
            out,
        ))
    }
}

/// Fast path for the common case (one native little-endian frame whose Pixel Data is
/// the last element of the file): reads the file once and takes the pixels from its
/// tail, after checking the element header in front of them. `None`: not applicable
/// (the caller goes through dicom-object instead).
pub(crate) fn fast_native_to_hu(
    header: &FileHeader,
    out: &mut [i16],
) -> Option<Result<usize, DicomError>> {
    let explicit = header.transfer_syntax == "1.2.840.10008.1.2.1";
    let implicit = header.transfer_syntax == "1.2.840.10008.1.2";
    if !(explicit || implicit)
        || header.number_of_frames != 1
        || header.samples_per_pixel != 1
        || !cfg!(target_endian = "little")
    {
        return None;
    }
    let bytes_per_sample = match header.bits_allocated {
        8 => 1,
        16 => 2,
        _ => return None,
    };
    let n = header.rows as usize * header.columns as usize * bytes_per_sample;
    thread_local! {
        // Reused per decoding thread: no fresh allocation (and page faults) per file.
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with_borrow_mut(|data| {
        data.clear();
        let read = std::fs::File::open(&header.path)
            .and_then(|mut f| std::io::Read::read_to_end(&mut f, data));
        if let Err(e) = read {
            return Some(Err(DicomError::Io {
                path: header.path.clone(),
                source: e,
            }));
        }
        tail_to_hu(header, data, n, explicit, out)
    })
}

fn tail_to_hu(
    header: &FileHeader,
    data: &[u8],
    n: usize,
    explicit: bool,
    out: &mut [i16],
) -> Option<Result<usize, DicomError>> {
    let len = data.len();
    let n32 = u32::try_from(n).ok()?.to_le_bytes();
    let tag = [0xE0, 0x7F, 0x10, 0x00];
    let matches = if explicit {
        len >= n + 12
            && data[len - n - 12..len - n - 8] == tag
            && (data[len - n - 8..len - n - 6] == *b"OW"
                || data[len - n - 8..len - n - 6] == *b"OB")
            && data[len - n - 6..len - n - 4] == [0, 0]
            && data[len - n - 4..len - n] == n32
    } else {
        len >= n + 8 && data[len - n - 8..len - n - 4] == tag && data[len - n - 4..len - n] == n32
    };
    if !matches {
        return None;
    }
    let frame = &header.frames[0];
    Some(Ok(stored_to_hu(
        &data[len - n..],
        header.bits_allocated,
        header.bits_stored,
        header.pixel_signed,
        frame.rescale_slope,
        frame.rescale_intercept,
        out,
    )))
}

/// Stored values (native byte order) to HU: masks to BitsStored (sign-extending signed
/// data), applies `value * slope + intercept`, rounds and saturates to i16.
pub(crate) fn stored_to_hu(
    bytes: &[u8],
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    slope: f64,
    intercept: f64,
    out: &mut [i16],
) -> usize {
    let bits = bits_stored.clamp(1, bits_allocated) as u32;
    let raw = |v: u32| -> i64 {
        let shift = 32 - bits;
        if signed {
            (((v << shift) as i32) >> shift) as i64
        } else {
            ((v << shift) >> shift) as i64
        }
    };
    let mut clamped = 0usize;
    let integral = slope == 1.0 && intercept.fract() == 0.0 && intercept.abs() < 1e9;
    let ic = intercept as i64;
    let mut put = |o: &mut i16, r: i64| {
        let v = if integral {
            r + ic
        } else {
            (r as f64 * slope + intercept).round() as i64
        };
        let c = v.clamp(i16::MIN as i64, i16::MAX as i64);
        clamped += (c != v) as usize;
        *o = c as i16;
    };
    // The common case (16-bit samples, integral rescale): tight loops the compiler
    // vectorises, one per signedness, with i32 arithmetic.
    if bits_allocated == 16 && integral && ic.abs() < 1 << 20 {
        let shift = 32 - bits;
        let ic = ic as i32;
        let mut clamped = 0usize;
        let convert = |o: &mut [i16], b: &[u8], f: &dyn Fn(u16) -> i32| -> usize {
            let mut n = 0usize;
            for (o, b) in o.iter_mut().zip(b.chunks_exact(2)) {
                let v = f(u16::from_ne_bytes([b[0], b[1]])) + ic;
                let c = v.clamp(i16::MIN as i32, i16::MAX as i32);
                n += (c != v) as usize;
                *o = c as i16;
            }
            n
        };
        // Chunks keep the inner loop free of the dyn call's cost being per element.
        for (o, b) in out.chunks_mut(4096).zip(bytes.chunks(8192)) {
            clamped += if signed {
                if bits == 16 {
                    convert_fixed(o, b, ic, |v| v as i16 as i32)
                } else {
                    convert(o, b, &|v| (((v as u32) << shift) as i32) >> shift)
                }
            } else if bits == 16 {
                convert_fixed(o, b, ic, |v| v as i32)
            } else {
                convert(o, b, &|v| (((v as u32) << shift) >> shift) as i32)
            };
        }
        return clamped;
    }
    match bits_allocated {
        8 => {
            for (o, b) in out.iter_mut().zip(bytes) {
                put(o, raw(*b as u32));
            }
        }
        16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                put(o, raw(u16::from_ne_bytes([b[0], b[1]]) as u32));
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                let v = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                if bits == 32 {
                    let r = if signed { v as i32 as i64 } else { v as i64 };
                    put(o, r);
                } else {
                    put(o, raw(v));
                }
            }
        }
    }
    clamped
}

/// 16-bit samples to HU with an integral intercept; `sample` is inlined.
#[inline(always)]
fn convert_fixed(
    out: &mut [i16],
    bytes: &[u8],
    intercept: i32,
    sample: impl Fn(u16) -> i32,
) -> usize {
    let mut n = 0usize;
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let v = sample(u16::from_ne_bytes([b[0], b[1]])) + intercept;
        let c = v.clamp(i16::MIN as i32, i16::MAX as i32);
        n += (c != v) as usize;
        *o = c as i16;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    #[test]
    fn signed_12_bit_is_sign_extended() {
        // 0x0FFF in 12 bits signed is -1; high garbage bits are ignored.
        let mut out = [0i16; 3];
        stored_to_hu(
            &words(&[0x0FFF, 0xF001, 0x07FF]),
            16,
            12,
            true,
            1.0,
            0.0,
            &mut out,
        );
        assert_eq!(out, [-1, 1, 2047]);
    }

    #[test]
    fn rescale_and_saturation() {
        let mut out = [0i16; 3];
        let clamped = stored_to_hu(
            &words(&[0, 2048, 65535]),
            16,
            16,
            false,
            0.5,
            -1024.0,
            &mut out,
        );
        assert_eq!(out, [-1024, 0, 31744]);
        assert_eq!(clamped, 0);
        let clamped = stored_to_hu(&words(&[0, 65535]), 16, 16, false, 1.0, 0.0, &mut out[..2]);
        assert_eq!(out[..2], [0, i16::MAX]);
        assert_eq!(clamped, 1);
    }

    #[test]
    fn eight_bit() {
        let mut out = [0i16; 2];
        stored_to_hu(&[255, 1], 8, 8, true, 1.0, 0.0, &mut out);
        assert_eq!(out, [-1, 1]);
    }
}
