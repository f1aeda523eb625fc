//! What a compressed frame says about itself, read before its codec runs: the codecs
//! allocate what their own headers claim (a JPEG-LS header of 65535 x 65535 in a
//! 512 x 512 series asks CharLS for 8 GiB), and dicom-rs' RLE decoder indexes its
//! segment table without checking it. A frame whose header disagrees with the DICOM
//! Rows / Columns, or whose RLE table does not fit the fragment, is refused here.

/// The codec family of an encapsulated transfer syntax, for the checks that apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// JPEG baseline/extended/lossless and JPEG-LS: SOFn markers.
    Jpeg,
    /// JPEG 2000 and HTJ2K: the SIZ marker segment.
    Jpeg2000,
    /// RLE Lossless: the 64-byte segment table.
    Rle,
    Other,
}

impl Family {
    pub(crate) fn of(transfer_syntax: &str) -> Family {
        match transfer_syntax.strip_prefix("1.2.840.10008.1.2") {
            Some(".5") => Family::Rle,
            Some(".4.50" | ".4.51" | ".4.57" | ".4.70" | ".4.80" | ".4.81") => Family::Jpeg,
            Some(".4.90" | ".4.91" | ".4.201" | ".4.202" | ".4.203") => Family::Jpeg2000,
            _ => Family::Other,
        }
    }
}

/// Checks the first fragment of a frame against what the DICOM header says: image size
/// for JPEG and JPEG 2000, the segment table for RLE (`segments` = samples per pixel x
/// bytes per sample). `Err` says what is wrong, in words.
pub(crate) fn check(
    family: Family,
    fragment: &[u8],
    [rows, columns]: [u32; 2],
    segments: u32,
) -> Result<(), String> {
    let size = match family {
        Family::Jpeg => jpeg_size(fragment)?,
        Family::Jpeg2000 => j2k_size(fragment)?,
        Family::Rle => return rle_table(fragment, segments),
        Family::Other => None,
    };
    match size {
        Some((w, h)) if (w, h) != (columns, rows) && h != 0 => Err(format!(
            "the compressed frame's own header says {w} x {h} pixels but Columns x Rows are \
             {columns} x {rows}: refused"
        )),
        _ => Ok(()),
    }
}

fn be16(b: &[u8], at: usize) -> Option<u32> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]) as u32)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// (width, height) from the first SOFn (or JPEG-LS SOF55) marker; `None` when no frame
/// header is found in the fragment (the codec reports that).
fn jpeg_size(b: &[u8]) -> Result<Option<(u32, u32)>, String> {
    if b.len() < 4 || b[0] != 0xFF || b[1] != 0xD8 {
        return Err("the JPEG frame does not start with an SOI marker (FFD8)".into());
    }
    let mut at = 2;
    while at + 4 <= b.len() {
        if b[at] != 0xFF {
            return Ok(None);
        }
        let marker = b[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        let Some(len) = be16(b, at + 2) else {
            return Ok(None);
        };
        let is_sof = matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xF7);
        if is_sof {
            // precision (1), height (2), width (2)
            return match (be16(b, at + 5), be16(b, at + 7)) {
                (Some(h), Some(w)) => Ok(Some((w, h))),
                _ => Err("the JPEG frame header is cut short".into()),
            };
        }
        if marker == 0xDA {
            return Ok(None); // scan data before any frame header
        }
        at += 2 + len as usize;
    }
    Ok(None)
}

/// (width, height) from the SIZ marker segment of a JPEG 2000 codestream (bare, or
/// inside a JP2 file: the first FF4F FF51 in the first 4 KiB).
fn j2k_size(b: &[u8]) -> Result<Option<(u32, u32)>, String> {
    let window = &b[..b.len().min(4096)];
    let Some(soc) = window
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
    else {
        return Ok(None);
    };
    let siz = soc + 2;
    // Lsiz(2) Rsiz(2) Xsiz(4) Ysiz(4) XOsiz(4) YOsiz(4)
    let field = |k: usize| be32(b, siz + 6 + 4 * k);
    match (field(0), field(1), field(2), field(3)) {
        (Some(x), Some(y), Some(xo), Some(yo)) if x >= xo && y >= yo => Ok(Some((x - xo, y - yo))),
        (Some(_), Some(_), Some(_), Some(_)) => {
            Err("the JPEG 2000 SIZ header has an image offset beyond the image size".into())
        }
        _ => Err("the JPEG 2000 SIZ header is cut short".into()),
    }
}

/// The RLE header: `segments` offsets, the first at 64, increasing, inside the fragment.
fn rle_table(b: &[u8], segments: u32) -> Result<(), String> {
    if b.len() < 64 {
        return Err(format!(
            "the RLE fragment holds {} bytes, less than its 64-byte header",
            b.len()
        ));
    }
    let word = |k: usize| u32::from_le_bytes([b[4 * k], b[4 * k + 1], b[4 * k + 2], b[4 * k + 3]]);
    let n = word(0);
    if n == 0 || n > 15 {
        return Err(format!(
            "the RLE header declares {n} segments (1 to 15 are possible)"
        ));
    }
    if n != segments {
        return Err(format!(
            "the RLE header declares {n} segment(s) but the image needs {segments} \
             (samples per pixel x bytes per sample)"
        ));
    }
    let mut previous = 64u32;
    for k in 1..=n as usize {
        let offset = word(k);
        if (k == 1 && offset != 64) || offset < previous || offset as usize >= b.len() {
            return Err(format!(
                "the RLE segment table is corrupt (segment {k} at byte {offset} of a {}-byte fragment)",
                b.len()
            ));
        }
        previous = offset;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(Family::of("1.2.840.10008.1.2.5"), Family::Rle);
        assert_eq!(Family::of("1.2.840.10008.1.2.4.80"), Family::Jpeg);
        assert_eq!(Family::of("1.2.840.10008.1.2.4.90"), Family::Jpeg2000);
        assert_eq!(Family::of("1.2.840.10008.1.2.1"), Family::Other);
    }

    fn jpeg(marker: u8, w: u16, h: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0, 0];
        b.extend([0xFF, marker, 0x00, 0x0B, 16]);
        b.extend(h.to_be_bytes());
        b.extend(w.to_be_bytes());
        b.extend([1, 1, 0x11, 0]);
        b
    }

    #[test]
    fn jpeg_ls_header_claiming_a_huge_frame_is_refused() {
        assert!(check(Family::Jpeg, &jpeg(0xF7, 512, 512), [512, 512], 2).is_ok());
        let e = check(Family::Jpeg, &jpeg(0xF7, 65535, 65535), [512, 512], 2).unwrap_err();
        assert!(e.contains("65535 x 65535"), "{e}");
        assert!(check(Family::Jpeg, &jpeg(0xC1, 64, 32), [32, 64], 2).is_ok());
        assert!(check(Family::Jpeg, b"garbage", [32, 64], 2).is_err());
    }

    #[test]
    fn j2k_siz_is_read() {
        let mut b = vec![0xFF, 0x4F, 0xFF, 0x51, 0x00, 0x29, 0x00, 0x00];
        for v in [300u32, 200, 0, 0] {
            b.extend(v.to_be_bytes());
        }
        assert!(check(Family::Jpeg2000, &b, [200, 300], 1).is_ok());
        assert!(check(Family::Jpeg2000, &b, [512, 512], 1).is_err());
        assert!(check(Family::Jpeg2000, &b[..12], [512, 512], 1).is_err());
    }

    #[test]
    fn rle_tables_are_validated() {
        let mut b = vec![0u8; 100];
        b[0] = 2;
        b[4] = 64;
        b[8] = 80;
        assert!(check(Family::Rle, &b, [4, 4], 2).is_ok());
        assert!(check(Family::Rle, &b, [4, 4], 1).is_err());
        assert!(check(Family::Rle, &b[..10], [4, 4], 2).is_err());
        b[8] = 200; // beyond the fragment
        assert!(check(Family::Rle, &b, [4, 4], 2).is_err());
        b[0] = 0xFF;
        b[1] = 0xFF;
        assert!(check(Family::Rle, &b, [4, 4], 2).is_err());
    }
}
