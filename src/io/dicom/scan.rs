//! Finding DICOM files and reading their headers (everything before Pixel Data).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use nalgebra::Vector3;
use rayon::prelude::*;

use super::{DicomError, FileProblem, LoadOptions, LoadStage};
use crate::io::guard;

/// What pulmo needs from one DICOM file's header.
#[derive(Debug, Clone)]
pub struct FileHeader {
    pub path: PathBuf,
    pub transfer_syntax: String,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_uid: Option<String>,
    pub study_uid: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_date: Option<String>,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    pub series_number: Option<i64>,
    pub manufacturer: Option<String>,
    pub convolution_kernel: Option<String>,
    pub instance_number: Option<i64>,
    pub rows: u32,
    pub columns: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
    pub bits_stored: u16,
    pub pixel_signed: bool,
    pub photometric: Option<String>,
    pub number_of_frames: u32,
    pub has_pixel_data: bool,
    /// RescaleSlope or RescaleIntercept is present but not a finite number (NaN, Inf,
    /// text): 1 and 0 were used instead.
    pub unreadable_rescale: bool,
    pub slice_thickness_mm: Option<f64>,
    pub spacing_between_slices_mm: Option<f64>,
    pub gantry_tilt_deg: Option<f64>,
    /// Window centre/width pairs (HU) with their explanations.
    pub windows: Vec<(f64, f64, Option<String>)>,
    /// One entry per frame (a single entry for classic single-frame images).
    pub frames: Vec<FrameGeometry>,
}

/// Geometry and rescale of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameGeometry {
    pub position_mm: Option<Vector3<f64>>,
    /// Row (x) and column (y) direction cosines.
    pub orientation: Option<[Vector3<f64>; 2]>,
    /// (row spacing, column spacing) as DICOM orders PixelSpacing: between rows first.
    pub pixel_spacing_mm: Option<[f64; 2]>,
    pub rescale_slope: f64,
    pub rescale_intercept: f64,
}

fn trimmed(s: &str) -> Option<String> {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

pub(crate) fn get_str(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let e = obj.element_opt(tag).ok()??;
    trimmed(&e.to_str().ok()?)
}

pub(crate) fn get_f64s(obj: &InMemDicomObject, tag: Tag) -> Option<Vec<f64>> {
    let e = obj.element_opt(tag).ok()??;
    let v = e.to_multi_float64().ok()?;
    (!v.is_empty() && v.iter().all(|x| x.is_finite())).then_some(v)
}

pub(crate) fn get_f64(obj: &InMemDicomObject, tag: Tag) -> Option<f64> {
    get_f64s(obj, tag).map(|v| v[0])
}

pub(crate) fn get_int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    let e = obj.element_opt(tag).ok()??;
    e.to_int::<i64>().ok().or_else(|| {
        let s = e.to_str().ok()?;
        let t = s.trim();
        t.parse::<f64>().ok().map(|f| f as i64)
    })
}

fn first_item(obj: &InMemDicomObject, tag: Tag) -> Option<&InMemDicomObject> {
    obj.element_opt(tag).ok()??.items()?.first()
}

fn vec3(v: &[f64]) -> Vector3<f64> {
    Vector3::new(v[0], v[1], v[2])
}

/// ImageOrientationPatient: exactly six values, two unit vectors (within 1 %, stored
/// cosines carry rounding) that are orthogonal (within 1 %); anything else is treated as
/// missing, so the slice is reported, not placed by a guess.
fn orientation_from(v: Option<Vec<f64>>) -> Option<[Vector3<f64>; 2]> {
    let v = v?;
    if v.len() != 6 {
        return None;
    }
    let row = vec3(&v[0..3]);
    let col = vec3(&v[3..6]);
    let unit = |x: &Vector3<f64>| (x.norm() - 1.0).abs() <= 0.01;
    if !unit(&row) || !unit(&col) || row.dot(&col).abs() > 0.01 {
        return None;
    }
    Some([row.normalize(), col.normalize()])
}

/// PixelSpacing: two positive values of at most 1,000 mm (a 1e308 mm pixel is no image).
fn spacing_from(v: Option<Vec<f64>>) -> Option<[f64; 2]> {
    let v = v?;
    let plausible = |x: f64| x > 0.0 && x <= 1000.0;
    (v.len() >= 2 && plausible(v[0]) && plausible(v[1])).then(|| [v[0], v[1]])
}

/// Frame geometry from a data set or functional-group item, falling back to `base`.
fn frame_geometry(items: &[Option<&InMemDicomObject>], base: &FrameGeometry) -> FrameGeometry {
    let mut g = base.clone();
    for item in items.iter().flatten() {
        if let Some(pos) = first_item(item, tags::PLANE_POSITION_SEQUENCE)
            .and_then(|p| get_f64s(p, tags::IMAGE_POSITION_PATIENT))
            .filter(|v| v.len() >= 3)
        {
            g.position_mm = Some(vec3(&pos));
        }
        if let Some(o) = first_item(item, tags::PLANE_ORIENTATION_SEQUENCE)
            .and_then(|p| orientation_from(get_f64s(p, tags::IMAGE_ORIENTATION_PATIENT)))
        {
            g.orientation = Some(o);
        }
        if let Some(s) = first_item(item, tags::PIXEL_MEASURES_SEQUENCE)
            .and_then(|p| spacing_from(get_f64s(p, tags::PIXEL_SPACING)))
        {
            g.pixel_spacing_mm = Some(s);
        }
        if let Some(t) = first_item(item, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE) {
            if let Some(s) = get_f64(t, tags::RESCALE_SLOPE) {
                g.rescale_slope = s;
            }
            if let Some(i) = get_f64(t, tags::RESCALE_INTERCEPT) {
                g.rescale_intercept = i;
            }
        }
    }
    g
}

/// Checks a header's claimed pixel sizes against the file's length: native pixel data
/// must be in the file (frames x rows x columns x samples x bytes), and each frame of
/// encapsulated data needs at least an item header (8 bytes). Returns the frame count.
fn minimum_pixel_bytes(
    transfer_syntax: &str,
    [rows, columns]: [u64; 2],
    samples_per_pixel: u64,
    bits_allocated: i64,
    number_of_frames: i64,
    file_len: u64,
) -> Result<u32, String> {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    let frames = u64::try_from(number_of_frames).unwrap_or(0);
    if rows == 0 || columns == 0 {
        return Ok(1); // not an image: its frames are never read
    }
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(transfer_syntax);
    let encapsulated = ts.is_some_and(|ts| ts.is_encapsulated_pixel_data());
    // A deflated data set holds up to DEFLATE_MAX_RATIO times its bytes.
    let deflated = ts.is_some_and(|ts| {
        matches!(
            ts.codec(),
            dicom_encoding::transfer_syntax::Codec::Dataset(_)
        )
    });
    let file_len = if deflated {
        file_len.saturating_mul(crate::io::guard::DEFLATE_MAX_RATIO)
    } else {
        file_len
    };
    let bytes_per_sample = (bits_allocated.clamp(1, 64) as u64).div_ceil(8);
    let frame_bytes = if encapsulated {
        8
    } else {
        rows * columns * samples_per_pixel * bytes_per_sample
    };
    let needed = frames.saturating_mul(frame_bytes);
    if needed > file_len {
        let size = crate::io::guard::human_bytes;
        return Err(if encapsulated {
            format!(
                "NumberOfFrames {number_of_frames} cannot be right: {} compressed frames \
                 need at least {} but the file holds {}",
                frames,
                size(needed),
                size(file_len)
            )
        } else {
            format!(
                "the header claims {number_of_frames} frame(s) of {rows} x {columns} pixels \
                 ({} of pixel data) but the file holds only {}",
                size(needed),
                size(file_len)
            )
        });
    }
    u32::try_from(frames).map_err(|_| format!("NumberOfFrames {number_of_frames} is too large"))
}

impl FileHeader {
    /// The header of `obj`, read from `path` (`file_len` bytes long). Sizes are checked
    /// against the file before anything is allocated for them: a NumberOfFrames of 1e30
    /// or 65535 x 65535 pixels in a small file is an error, not an allocation.
    pub(crate) fn from_object(
        path: &Path,
        obj: &DefaultDicomObject,
        file_len: u64,
    ) -> Result<FileHeader, String> {
        let meta = obj.meta();
        let ds: &InMemDicomObject = obj;
        let rows = get_int(ds, tags::ROWS).unwrap_or(0);
        let columns = get_int(ds, tags::COLUMNS).unwrap_or(0);
        let has_pixel_data = ds.element_opt(tags::PIXEL_DATA).ok().flatten().is_some();
        let number_of_frames = get_int(ds, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
        let transfer_syntax = meta.transfer_syntax().trim_end_matches('\0').trim();
        if !(0..=u16::MAX as i64).contains(&rows) || !(0..=u16::MAX as i64).contains(&columns) {
            return Err(format!(
                "Rows {rows} / Columns {columns} are outside 0..=65535 (US values)"
            ));
        }
        let samples_per_pixel = get_int(ds, tags::SAMPLES_PER_PIXEL)
            .unwrap_or(1)
            .clamp(1, 4);
        let bits_allocated = get_int(ds, tags::BITS_ALLOCATED).unwrap_or(16);
        let number_of_frames = minimum_pixel_bytes(
            transfer_syntax,
            [rows as u64, columns as u64],
            samples_per_pixel as u64,
            bits_allocated,
            number_of_frames,
            file_len,
        )?;
        let base = FrameGeometry {
            position_mm: get_f64s(ds, tags::IMAGE_POSITION_PATIENT)
                .filter(|v| v.len() >= 3)
                .map(|v| vec3(&v)),
            orientation: orientation_from(get_f64s(ds, tags::IMAGE_ORIENTATION_PATIENT)),
            pixel_spacing_mm: spacing_from(get_f64s(ds, tags::PIXEL_SPACING)),
            rescale_slope: get_f64(ds, tags::RESCALE_SLOPE).unwrap_or(1.0),
            rescale_intercept: get_f64(ds, tags::RESCALE_INTERCEPT).unwrap_or(0.0),
        };
        let shared = first_item(ds, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
        let per_frame = ds
            .element_opt(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .ok()
            .flatten()
            .and_then(|e| e.items());
        let frames = if number_of_frames > 1 || shared.is_some() || per_frame.is_some() {
            (0..number_of_frames as usize)
                .map(|f| {
                    let pf = per_frame.and_then(|items| items.get(f));
                    frame_geometry(&[shared, pf], &base)
                })
                .collect()
        } else {
            vec![base]
        };
        let centers = get_f64s(ds, tags::WINDOW_CENTER).unwrap_or_default();
        let widths = get_f64s(ds, tags::WINDOW_WIDTH).unwrap_or_default();
        let explanations: Vec<String> = get_str(ds, tags::WINDOW_CENTER_WIDTH_EXPLANATION)
            .map(|s| s.split('\\').map(|x| x.trim().to_string()).collect())
            .unwrap_or_default();
        let windows = centers
            .iter()
            .zip(&widths)
            .enumerate()
            .filter(|(_, (_, w))| **w > 0.0)
            .map(|(i, (c, w))| {
                (
                    *c,
                    *w,
                    explanations.get(i).cloned().filter(|s| !s.is_empty()),
                )
            })
            .collect();
        Ok(FileHeader {
            path: path.to_path_buf(),
            transfer_syntax: transfer_syntax.to_string(),
            sop_class_uid: meta
                .media_storage_sop_class_uid()
                .trim_end_matches('\0')
                .to_string(),
            sop_instance_uid: meta
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string(),
            series_uid: get_str(ds, tags::SERIES_INSTANCE_UID),
            study_uid: get_str(ds, tags::STUDY_INSTANCE_UID),
            frame_of_reference_uid: get_str(ds, tags::FRAME_OF_REFERENCE_UID),
            patient_id: get_str(ds, tags::PATIENT_ID),
            patient_name: get_str(ds, tags::PATIENT_NAME),
            study_date: get_str(ds, tags::STUDY_DATE),
            modality: get_str(ds, tags::MODALITY),
            series_description: get_str(ds, tags::SERIES_DESCRIPTION),
            series_number: get_int(ds, tags::SERIES_NUMBER),
            manufacturer: get_str(ds, tags::MANUFACTURER),
            convolution_kernel: get_str(ds, tags::CONVOLUTION_KERNEL),
            instance_number: get_int(ds, tags::INSTANCE_NUMBER),
            rows: u32::try_from(rows).unwrap_or(0),
            columns: u32::try_from(columns).unwrap_or(0),
            samples_per_pixel: get_int(ds, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16,
            bits_allocated: get_int(ds, tags::BITS_ALLOCATED).unwrap_or(16) as u16,
            bits_stored: get_int(ds, tags::BITS_STORED)
                .or_else(|| get_int(ds, tags::BITS_ALLOCATED))
                .unwrap_or(16) as u16,
            pixel_signed: get_int(ds, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1,
            photometric: get_str(ds, tags::PHOTOMETRIC_INTERPRETATION),
            number_of_frames,
            has_pixel_data,
            unreadable_rescale: [tags::RESCALE_SLOPE, tags::RESCALE_INTERCEPT]
                .iter()
                .any(|&t| {
                    let written = ds.element_opt(t).ok().flatten().is_some_and(|e| {
                        e.to_str().is_ok_and(|v| {
                            !v.trim_matches(|c: char| c.is_whitespace() || c == '\0')
                                .is_empty()
                        })
                    });
                    written && get_f64(ds, t).is_none()
                }),
            slice_thickness_mm: get_f64(ds, tags::SLICE_THICKNESS).filter(|v| *v > 0.0),
            spacing_between_slices_mm: get_f64(ds, tags::SPACING_BETWEEN_SLICES)
                .filter(|v| *v > 0.0),
            gantry_tilt_deg: get_f64(ds, tags::GANTRY_DETECTOR_TILT),
            windows,
            frames,
        })
    }

    /// Whether this file holds an image pulmo can stack (has pixels, rows, columns).
    pub fn is_image(&self) -> bool {
        self.has_pixel_data && self.rows > 0 && self.columns > 0
    }
}

/// Walks the element headers of a DICOM file's data set (up to Pixel Data) without
/// reading any value, before dicom-rs parses it, and refuses two things dicom-rs would
/// otherwise do on a hostile file:
/// - an element whose length is beyond the end of the file: dicom-rs zero-fills the
///   claimed length before reading (a 40 KB file declaring 4 GiB touches 4 GiB);
/// - sequences nested more than [`guard::MAX_NESTING_DEPTH`] deep: its object builder
///   recurses per level and a 10,000-level file overflows the stack.
///
/// Anything the walker does not follow (unknown transfer syntaxes, odd encodings)
/// passes: opening the file reports the parse error.
///
/// Returns the file's length, or `None` when it has no 128-byte preamble and "DICM"
/// marker (not a DICOM file). FIFOs and devices are refused before they are read.
fn check_structure(path: &Path, whole: bool) -> Result<Option<u64>, String> {
    use dicom_encoding::transfer_syntax::{Codec, Endianness, TransferSyntaxIndex};
    let cannot_read = |e: std::io::Error| format!("cannot read: {e}");
    let file = guard::open_regular_file(path).map_err(cannot_read)?;
    let file_len = file.metadata().map_err(cannot_read)?.len();
    let mut reader = std::io::BufReader::new(file);
    let mut preamble = [0u8; 132];
    match reader.read_exact(&mut preamble) {
        Ok(()) if &preamble[128..] == b"DICM" => {}
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(cannot_read(e)),
    }
    // The meta group first (explicit VR little endian, group 0002), by the same walk.
    let meta_walker = HeaderWalker {
        big_endian: false,
        explicit: true,
        file_len,
        whole: false,
        meta_only: true,
    };
    meta_walker.walk(&mut reader, 132)?;
    if std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(128)).is_err() {
        return Ok(Some(file_len));
    }
    let Ok(meta) = dicom_object::FileMetaTable::from_reader(&mut reader) else {
        return Ok(Some(file_len));
    };
    let uid = meta
        .transfer_syntax()
        .trim_end_matches('\0')
        .trim()
        .to_string();
    let Some(ts) = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(&uid) else {
        return Ok(Some(file_len));
    };
    let Ok(start) = std::io::Seek::stream_position(&mut reader) else {
        return Ok(Some(file_len));
    };
    let mut walker = HeaderWalker {
        big_endian: ts.endianness() == Endianness::Big,
        explicit: uid != "1.2.840.10008.1.2", // the one implicit-VR standard syntax
        file_len,
        whole,
        meta_only: false,
    };
    match ts.codec() {
        // Deflated: walk the inflated stream, which can be at most DEFLATE_MAX_RATIO
        // times the compressed bytes.
        Codec::Dataset(Some(_)) => {
            walker.file_len = start.saturating_add(
                file_len
                    .saturating_sub(start)
                    .saturating_mul(guard::DEFLATE_MAX_RATIO),
            );
            let mut inflated = std::io::BufReader::new(flate2::read::DeflateDecoder::new(reader));
            walker.walk(&mut inflated, start)?;
        }
        Codec::Dataset(None) => {}
        _ => walker.walk(&mut reader, start)?,
    }
    Ok(Some(file_len))
}

/// State of [`check_structure`]'s walk.
struct HeaderWalker {
    big_endian: bool,
    explicit: bool,
    file_len: u64,
    /// Walk past the top-level Pixel Data to the end of the file (for a whole-file
    /// open), instead of stopping there (for a header read).
    whole: bool,
    /// Walk the file meta group only (stop at the first element of another group).
    meta_only: bool,
}

/// Whether an explicit VR has a 2-byte length; every other VR (an unknown one too, as
/// dicom-rs reads it) has 2 reserved bytes and a 4-byte length.
fn has_short_length(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"AE"
            | b"AS"
            | b"AT"
            | b"CS"
            | b"DA"
            | b"DS"
            | b"DT"
            | b"FL"
            | b"FD"
            | b"IS"
            | b"LO"
            | b"LT"
            | b"PN"
            | b"SH"
            | b"SL"
            | b"SS"
            | b"ST"
            | b"TM"
            | b"UI"
            | b"UL"
            | b"US"
    )
}

/// What an open container is.
#[derive(Clone, Copy, PartialEq)]
enum Container {
    /// A sequence (its items are data sets).
    Sequence,
    /// An item of a sequence.
    Item,
    /// Encapsulated pixel data (its items are raw fragments).
    Fragments,
}

impl HeaderWalker {
    fn walk(&self, r: &mut impl std::io::BufRead, start: u64) -> Result<(), String> {
        use dicom_core::VR;
        use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
        let mut pos = start;
        // Open containers: kind, end offset (None: undefined length), explicit VR inside.
        let mut stack: Vec<(Container, Option<u64>, bool)> = Vec::new();
        let mut buf = [0u8; 12];
        loop {
            while let Some(&(_, Some(end), _)) = stack.last() {
                if pos >= end {
                    stack.pop();
                } else {
                    break;
                }
            }
            let explicit = stack.last().map_or(self.explicit, |s| s.2);
            if r.read_exact(&mut buf[..8]).is_err() {
                return Ok(()); // end of file
            }
            let u16_at = |b: &[u8], i: usize| {
                let v = [b[i], b[i + 1]];
                if self.big_endian {
                    u16::from_be_bytes(v)
                } else {
                    u16::from_le_bytes(v)
                }
            };
            let u32_at = |b: &[u8], i: usize| {
                let v = [b[i], b[i + 1], b[i + 2], b[i + 3]];
                if self.big_endian {
                    u32::from_be_bytes(v)
                } else {
                    u32::from_le_bytes(v)
                }
            };
            let (group, element) = (u16_at(&buf, 0), u16_at(&buf, 2));
            if self.meta_only && group != 0x0002 {
                return Ok(());
            }
            pos += 8;
            let top = stack.last().map(|s| s.0);
            if group == 0xFFFE {
                let len = u32_at(&buf, 4);
                match element {
                    0xE000 if top == Some(Container::Fragments) => {
                        self.skip(r, &mut pos, len as u64, group, element)?;
                    }
                    0xE000 => {
                        let end = (len != u32::MAX).then_some(pos + len as u64);
                        self.within_file(end, group, element, len)?;
                        stack.push((Container::Item, end, explicit));
                    }
                    0xE00D | 0xE0DD => {
                        stack.pop();
                    }
                    _ => return Ok(()),
                }
            } else {
                let (vr, len) = if explicit {
                    let vr = [buf[4], buf[5]];
                    let long = !has_short_length(&vr);
                    if long {
                        if r.read_exact(&mut buf[8..12]).is_err() {
                            return Ok(());
                        }
                        pos += 4;
                        (Some(vr), u32_at(&buf, 8))
                    } else {
                        (Some(vr), u16_at(&buf, 6) as u32)
                    }
                } else {
                    (None, u32_at(&buf, 4))
                };
                let tag = dicom_core::Tag(group, element);
                let is_sequence = match vr {
                    Some(v) => &v == b"SQ",
                    None => dicom_dictionary_std::StandardDataDictionary
                        .by_tag(tag)
                        .is_some_and(|e| matches!(e.vr(), VirtualVr::Exact(VR::SQ))),
                };
                let at_top = stack.is_empty();
                if len == u32::MAX {
                    if tag == tags::PIXEL_DATA {
                        if at_top && !self.whole {
                            return Ok(());
                        }
                        stack.push((Container::Fragments, None, explicit));
                    } else {
                        // A sequence, or UN of undefined length (implicit VR inside).
                        let inner_explicit = explicit && vr.is_some_and(|v| &v != b"UN");
                        stack.push((Container::Sequence, None, inner_explicit));
                    }
                } else if is_sequence {
                    let end = pos + len as u64;
                    self.within_file(Some(end), group, element, len)?;
                    stack.push((Container::Sequence, Some(end), explicit));
                } else {
                    if at_top && tag == tags::PIXEL_DATA && !self.whole {
                        return self.within_file(Some(pos + len as u64), group, element, len);
                    }
                    self.skip(r, &mut pos, len as u64, group, element)?;
                }
            }
            let depth = stack.iter().filter(|s| s.0 == Container::Sequence).count();
            if depth > guard::MAX_NESTING_DEPTH {
                return Err(format!(
                    "sequences nested more than {} levels deep: refused (the deepest real \
                     DICOM objects nest about 20)",
                    guard::MAX_NESTING_DEPTH
                ));
            }
        }
    }

    fn within_file(
        &self,
        end: Option<u64>,
        group: u16,
        element: u16,
        len: u32,
    ) -> Result<(), String> {
        match end {
            Some(end) if end > self.file_len => Err(format!(
                "element ({group:04X},{element:04X}) claims {} bytes, beyond the end of the \
                 {}-byte file (truncated or corrupt)",
                len, self.file_len
            )),
            _ => Ok(()),
        }
    }

    fn skip(
        &self,
        r: &mut impl std::io::BufRead,
        pos: &mut u64,
        len: u64,
        group: u16,
        element: u16,
    ) -> Result<(), String> {
        self.within_file(Some(*pos + len), group, element, len as u32)?;
        let skipped = std::io::copy(&mut r.take(len), &mut std::io::sink()).unwrap_or(0);
        *pos += skipped;
        Ok(())
    }
}

/// Opens a DICOM file with dicom-object (the whole file, or its header up to
/// `read_until`), after refusing special files and too deep nesting, with any panic in
/// the parser caught. The error is the problem in words, without the path.
pub(crate) fn open_object(
    path: &Path,
    read_until: Option<Tag>,
) -> Result<DefaultDicomObject, String> {
    check_structure(path, read_until.is_none())?;
    parse_object(path, read_until)
}

/// dicom-object's parse, with any panic in it caught (after [`check_structure`]).
fn parse_object(path: &Path, read_until: Option<Tag>) -> Result<DefaultDicomObject, String> {
    let opened = guard::catch_panic("the DICOM parser", || {
        let mut options = OpenFileOptions::new();
        if let Some(tag) = read_until {
            options = options.read_until(tag);
        }
        options.open_file(path)
    })?;
    opened.map_err(|e| guard::error_chain(&e))
}

/// Reads one file's header. `Ok(None)`: not a DICOM file (no DICM marker).
pub fn read_header(path: &Path) -> Result<Option<FileHeader>, String> {
    let Some(file_len) = check_structure(path, false)? else {
        return Ok(None);
    };
    let obj = parse_object(path, Some(tags::PIXEL_DATA))
        .map_err(|e| format!("unreadable DICOM header: {e}"))?;
    // read_until excludes Pixel Data itself: look whether it follows.
    let mut header = FileHeader::from_object(path, &obj, file_len)?;
    header.has_pixel_data = pixel_data_follows(path, &obj);
    Ok(Some(header))
}

/// After a header-only read, tells whether the file goes on to a Pixel Data element: an
/// image has one; we cannot see it without reading it, so treat files with Rows/Columns
/// and bits as images and let decoding report a missing element.
fn pixel_data_follows(_path: &Path, obj: &DefaultDicomObject) -> bool {
    obj.element_opt(tags::ROWS).ok().flatten().is_some()
        && obj.element_opt(tags::COLUMNS).ok().flatten().is_some()
}

/// Files below `root` (recursively, sorted), or the files a DICOMDIR references.
pub fn list_files(root: &Path) -> Result<(Vec<PathBuf>, Vec<FileProblem>), DicomError> {
    let meta = std::fs::metadata(root).map_err(|e| DicomError::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    let mut problems = Vec::new();
    if !meta.is_file() && !meta.is_dir() {
        return Err(DicomError::Io {
            path: root.to_path_buf(),
            source: guard::ensure_regular_file(root)
                .err()
                .unwrap_or_else(|| std::io::Error::other("not a regular file")),
        });
    }
    if meta.is_file() {
        let is_dicomdir = root
            .file_name()
            .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"));
        if is_dicomdir {
            return dicomdir_files(root).map(|files| (files, problems));
        }
        return Ok((vec![root.to_path_buf()], problems));
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(FileProblem {
                    path: dir.clone(),
                    problem: format!("cannot list folder: {e}"),
                });
                continue;
            }
        };
        for entry in entries.flatten() {
            let p = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                // Symbolic links are followed to files, not to folders (no cycles).
                Ok(t) if t.is_file() || t.is_symlink() => {
                    if p.file_name()
                        .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
                    {
                        continue; // the files it references are in the tree anyway
                    }
                    match guard::ensure_regular_file(&p) {
                        Ok(_) => out.push(p),
                        Err(e) => problems.push(FileProblem {
                            path: p,
                            problem: e.to_string(),
                        }),
                    }
                }
                Ok(_) => problems.push(FileProblem {
                    path: p.clone(),
                    problem: format!(
                        "skipped: {}",
                        guard::ensure_regular_file(&p)
                            .err()
                            .map(|e| e.to_string())
                            .unwrap_or_else(|| "not a regular file".into())
                    ),
                }),
                Err(_) => {}
            }
        }
    }
    out.sort();
    Ok((out, problems))
}

/// The image files a DICOMDIR references (ReferencedFileID, relative to its folder).
/// A reference that leaves the folder (`..`, an absolute path, a link pointing out) is
/// refused: a DICOMDIR on a CD or share must not make pulmo read elsewhere.
fn dicomdir_files(path: &Path) -> Result<Vec<PathBuf>, DicomError> {
    let parse = |message: String| DicomError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let obj = open_object(path, None).map_err(|e| parse(format!("unreadable DICOMDIR: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let records = obj
        .element_opt(tags::DIRECTORY_RECORD_SEQUENCE)
        .ok()
        .flatten()
        .and_then(|e| e.items())
        .ok_or_else(|| parse("DICOMDIR has no Directory Record Sequence".into()))?;
    let canonical_base = base
        .canonicalize()
        .map_err(|e| parse(format!("cannot resolve its folder: {e}")))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for r in records {
        let Some(parts) = r
            .element_opt(tags::REFERENCED_FILE_ID)
            .ok()
            .flatten()
            .and_then(|e| e.to_multi_str().ok())
        else {
            continue;
        };
        let mut p = base.to_path_buf();
        for part in parts.iter() {
            let part = part.trim();
            let component = Path::new(part);
            let plain = component.components().count() == 1
                && matches!(
                    component.components().next(),
                    Some(std::path::Component::Normal(_))
                );
            if !plain {
                return Err(parse(format!(
                    "ReferencedFileID {:?} leaves the DICOMDIR's folder (component {part:?}): refused",
                    parts.join("\\")
                )));
            }
            p.push(part);
        }
        // A symbolic link inside the folder may still point out of it.
        if let Ok(resolved) = p.canonicalize()
            && !resolved.starts_with(&canonical_base)
        {
            return Err(parse(format!(
                "ReferencedFileID {:?} resolves to {}, outside the DICOMDIR's folder: refused",
                parts.join("\\"),
                resolved.display()
            )));
        }
        files.push(p);
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Reads all headers in parallel, reporting progress; files that are not DICOM or are
/// unreadable become problems, not errors.
pub fn read_headers(
    files: &[PathBuf],
    options: &LoadOptions,
) -> Result<(Vec<Arc<FileHeader>>, Vec<FileProblem>), DicomError> {
    let done = AtomicUsize::new(0);
    let total = files.len();
    let results: Vec<Result<Option<FileHeader>, FileProblem>> = files
        .par_iter()
        .map(|path| {
            if options.is_cancelled() {
                return Err(FileProblem {
                    path: path.clone(),
                    problem: "cancelled".into(),
                });
            }
            let r = read_header(path).map_err(|problem| FileProblem {
                path: path.clone(),
                problem,
            });
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            options.report(LoadStage::Scanning, n, total);
            r
        })
        .collect();
    if options.is_cancelled() {
        return Err(DicomError::Cancelled);
    }
    let mut headers = Vec::new();
    let mut problems = Vec::new();
    for (path, r) in files.iter().zip(results) {
        match r {
            Ok(Some(h)) => headers.push(Arc::new(h)),
            Ok(None) => problems.push(FileProblem {
                path: path.clone(),
                problem: "not a DICOM file (no DICM marker at byte 128); skipped".into(),
            }),
            Err(p) => problems.push(p),
        }
    }
    Ok((headers, problems))
}
