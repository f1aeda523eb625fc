//! Transfer syntaxes on real encoded files from PyPI's pydicom-data (installed into the
//! test venv by scripts/setup.sh): every encoding of the same image decodes to the same
//! values as its uncompressed version.

mod common;

use pulmo::io::dicom::{self, DicomError, LoadOptions, decode_file_hu};

fn decode(dir: &std::path::Path, name: &str) -> (dicom::FileHeader, Vec<i16>) {
    decode_file_hu(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn ct_jpeg2000_lossless_equals_uncompressed() {
    let Some(dir) = common::pydicom_data() else {
        return;
    };
    let (h_raw, raw) = decode(&dir, "693_UNCR.dcm");
    let (h_j2k, j2k) = decode(&dir, "693_J2KR.dcm");
    assert_eq!(h_j2k.transfer_syntax, "1.2.840.10008.1.2.4.90");
    assert_eq!((h_raw.rows, h_raw.columns), (h_j2k.rows, h_j2k.columns));
    assert!(
        raw == j2k,
        "JPEG 2000 lossless differs from the uncompressed file"
    );
    // A CT: air and soft tissue present.
    assert!(raw.iter().any(|&v| v < -900) && raw.iter().any(|&v| (0..100).contains(&v)));
}

#[test]
fn rle_jpeg2000_jpegls_and_big_endian_equal_uncompressed() {
    let Some(dir) = common::pydicom_data() else {
        return;
    };
    let (h, raw) = decode(&dir, "emri_small.dcm");
    assert!(h.number_of_frames > 1);
    for (name, ts) in [
        ("emri_small_RLE.dcm", "1.2.840.10008.1.2.5"),
        ("emri_small_jpeg_2k_lossless.dcm", "1.2.840.10008.1.2.4.90"),
        ("emri_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
        ("emri_small_big_endian.dcm", "1.2.840.10008.1.2.2"),
    ] {
        let (h2, v) = decode(&dir, name);
        assert_eq!(h2.transfer_syntax, ts, "{name}");
        assert!(v == raw, "{name} differs from the uncompressed file");
    }
}

#[test]
fn jpeg_lossless_decodes() {
    let Some(dir) = common::pydicom_data() else {
        return;
    };
    let (h, v) = decode(&dir, "JPEG-LL.dcm");
    assert_eq!(h.transfer_syntax, "1.2.840.10008.1.2.4.70");
    assert_eq!(v.len(), h.rows as usize * h.columns as usize);
    let (lo, hi) = (v.iter().min().unwrap(), v.iter().max().unwrap());
    assert!(hi > lo, "a flat image means nothing was decoded");
}

#[test]
fn legacy_multiframe_without_positions_is_refused_clearly() {
    let Some(dir) = common::pydicom_data() else {
        return;
    };
    let err = dicom::load(&dir.join("emri_small.dcm"), None, &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DicomError::Geometry { .. }), "{msg}");
    assert!(
        msg.contains("emri_small.dcm") && msg.contains("no per-frame positions"),
        "{msg}"
    );
}

#[test]
fn truncated_encapsulated_data_is_an_error_naming_the_file() {
    let Some(dir) = common::pydicom_data() else {
        return;
    };
    let path = dir.join("emri_small_jpeg_2k_lossless_too_short.dcm");
    if let Err(e) = decode_file_hu(&path) {
        assert!(
            e.to_string()
                .contains("emri_small_jpeg_2k_lossless_too_short.dcm"),
            "{e}"
        );
    }
}
