#!/usr/bin/env python3
"""Reads a DICOM SEG written by pulmo with highdicom and pydicom and checks it.

Usage: check_seg_interop.py SEG.dcm CT_DIR EXPECTED_JSON
       check_seg_interop.py --write-highdicom CT_DIR OUT.dcm binary|fractional

EXPECTED_JSON: {"frames": N, "segments": [{"label": "left lung", "voxels": 123}, ...]}
in segment number order. Checks the segment count and labels, the number of frames,
the FrameOfReferenceUID against the CT series in CT_DIR, and per segment the number of
set voxels summed over its frames (from pydicom's unpacked pixels and from highdicom's
volume). Prints "OK" and exits 0, or prints every failed check and exits 1.

With --write-highdicom it writes a SEG with highdicom on the CT series in CT_DIR (files
taken in name order, which for pulmo's write_series is slice order k = 0, 1, ...), for
pulmo's import test; the masks are those the Rust test expects (see write_highdicom).
"""

import json
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom


def write_highdicom(ct_dir: Path, out: str, kind: str) -> int:
    """binary: segment 1 "Right Lung" = box i 2..10, j 3..9 on slices 1..3, segment 2
    "Nodule" = box i 20..25, j 10..15 on slice 5. fractional: segment 1 "Lesion" = 0.75
    on the first box (slices 1..3), 0.25 on the second box (slice 5)."""
    files = sorted(p for p in ct_dir.iterdir() if p.is_file())
    sources = [pydicom.dcmread(p) for p in files]
    for ds in sources:
        # pulmo's synthetic series leave out some type 2 attributes highdicom copies.
        for keyword in ("PatientBirthDate", "PatientSex", "StudyTime", "StudyID",
                        "ReferringPhysicianName", "AccessionNumber"):
            if keyword not in ds:
                setattr(ds, keyword, "")
    rows, cols = sources[0].Rows, sources[0].Columns
    lung = hd.sr.CodedConcept("39607008", "SCT", "Lung")
    anatomy = hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure")
    lesion = hd.sr.CodedConcept("52988006", "SCT", "Lesion")
    altered = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")

    def describe(n, label, category, kind_):
        return hd.seg.SegmentDescription(
            segment_number=n, segment_label=label, segmented_property_category=category,
            segmented_property_type=kind_,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)

    if kind == "binary":
        array = np.zeros((len(sources), rows, cols), dtype=np.uint8)
        array[1:4, 3:9, 2:10] = 1
        array[5, 10:15, 20:25] = 2
        descriptions = [describe(1, "Right Lung", anatomy, lung),
                        describe(2, "Nodule", altered, lesion)]
        seg_type = hd.seg.SegmentationTypeValues.BINARY
    else:
        array = np.zeros((len(sources), rows, cols), dtype=np.float32)
        array[1:4, 3:9, 2:10] = 0.75
        array[5, 10:15, 20:25] = 0.25
        descriptions = [describe(1, "Lesion", altered, lesion)]
        seg_type = hd.seg.SegmentationTypeValues.FRACTIONAL
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=array, segmentation_type=seg_type,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=9,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="highdicom test",
        manufacturer_model_name="check_seg_interop", software_versions=hd.__version__,
        device_serial_number="1")
    seg.save_as(out)
    print("OK")
    return 0


def main() -> int:
    if sys.argv[1] == "--write-highdicom":
        return write_highdicom(Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    seg_path, ct_dir, expected = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    failures = []

    def check(ok, message):
        if not ok:
            failures.append(message)

    seg = hd.seg.segread(seg_path)
    check(seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4", f"SOPClassUID {seg.SOPClassUID}")
    check(seg.segmentation_type.value == "BINARY", f"type {seg.segmentation_type}")
    want = expected["segments"]
    check(seg.number_of_segments == len(want),
          f"{seg.number_of_segments} segments, expected {len(want)}")
    check(int(seg.NumberOfFrames) == expected["frames"],
          f"{seg.NumberOfFrames} frames, expected {expected['frames']}")

    ct_files = sorted(p for p in ct_dir.rglob("*") if p.is_file())
    ct = pydicom.dcmread(ct_files[0], stop_before_pixels=True)
    check(seg.FrameOfReferenceUID == ct.FrameOfReferenceUID,
          f"FrameOfReferenceUID {seg.FrameOfReferenceUID} != CT {ct.FrameOfReferenceUID}")

    # Voxel counts from pydicom's unpacked frames.
    raw = pydicom.dcmread(seg_path)
    pixels = raw.pixel_array.reshape(int(raw.NumberOfFrames), raw.Rows, raw.Columns)
    frame_segments = [
        int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for f in raw.PerFrameFunctionalGroupsSequence
    ]
    for n, w in enumerate(want, start=1):
        desc = seg.get_segment_description(n)
        check(desc.segment_label == w["label"],
              f"segment {n}: label {desc.segment_label!r}, expected {w['label']!r}")
        count = int(sum(pixels[f].sum() for f, s in enumerate(frame_segments) if s == n))
        check(count == w["voxels"], f"segment {n}: {count} voxels (pydicom), expected {w['voxels']}")

    # The same through highdicom's own frame handling.
    try:
        volume = seg.get_volume(combine_segments=False)
        array = volume.array
        for n, w in enumerate(want, start=1):
            count = int(np.count_nonzero(array[..., n - 1]))
            check(count == w["voxels"],
                  f"segment {n}: {count} voxels (highdicom volume), expected {w['voxels']}")
    except Exception as e:  # noqa: BLE001 - report any highdicom failure as a check
        failures.append(f"highdicom get_volume failed: {type(e).__name__}: {e}")

    if failures:
        for f in failures:
            print("FAIL:", f)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
