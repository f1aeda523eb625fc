#!/usr/bin/env python3
"""Generates a corpus of malformed and hostile inputs for pulmo (issue #16).

Usage: fuzz_corpus.py --data ../shared/data --out DIR [--seed 1] [--count 2000]

Run it with the tools environment (`.venv-tools/bin/python`: numpy, pydicom 3 with its
test files, nibabel, highdicom). DIR must lie outside the repository: nothing from
../shared/data may be copied into it. DIR is emptied first.

Every case is a folder DIR/<id>/ holding its input(s) and a case.json:
  id, family (the class of attack), description, inputs (paths relative to the case),
  commands (argument lists for pulmo; "{case}" is the case folder, "{corpus}" the corpus
  root, "{tmp}" a scratch folder for outputs), expect_error_or_warning (the case is a
  "silent wrong answer" trap: exit 0 without a warning is a failure), expect_ok (an
  unmodified file of a format README lists: anything but exit 0 is a gap), input_bytes,
  and optionally claimed_voxel_bytes (the voxel bytes the header honestly describes, for
  the runner's peak-memory ratio).

Targeted (hand-crafted) cases cover every class named in the issue; random mutations of
real files (byte flips, truncations, insertions, deletions, interesting values in length
fields, splices, hostile values in chosen header fields) fill the rest up to --count.
Unchanged files shared by many cases are hard links into DIR/_base. Named pipes are
created with os.mkfifo; symbolic links point at /dev/zero and /dev/urandom. Output is
deterministic for a given seed (same files, same bytes), apart from the few absolute paths
(DICOMDIR and NRRD cases) that name DIR itself.
"""

import argparse
import copy
import gzip
import io
import json
import math
import os
import random
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless, RLELossless

pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE

# ---------------------------------------------------------------------------------------
# Byte-level mutation


INTERESTING_32 = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF, 0x10000,
                  0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF, 0x40000000, 0x00FFFFFF]
INTERESTING_16 = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]


def mutate_bytes(rng, data: bytes, length_fields=(), other: bytes = None, hot: int = 4096):
    """One random mutation of data; returns (new bytes, description). length_fields is a
    list of (offset, width) of element length fields the 'length' operator targets; hot is
    the size of the header region that half the position-based operators prefer."""
    n = len(data)
    ops = ["flip", "flip", "truncate", "insert", "delete", "interesting", "duplicate"]
    if length_fields:
        ops += ["length", "length"]
    if other is not None:
        ops.append("splice")
    op = rng.choice(ops)

    def pos(limit=None):
        limit = n if limit is None else min(limit, n)
        if limit <= 0:
            return 0
        return rng.randrange(limit) if rng.random() < 0.5 else rng.randrange(max(1, n))

    b = bytearray(data)
    if op == "flip":
        k = rng.choice([1, 1, 2, 4, 8, 16, 32])
        where = []
        for _ in range(k):
            p = pos(hot)
            if p < n:
                b[p] ^= 1 << rng.randrange(8)
                where.append(p)
        return bytes(b), f"flip {k} bit(s) at {sorted(where)[:8]}"
    if op == "truncate":
        p = pos(hot)
        return bytes(b[:p]), f"truncate to {p} of {n} bytes"
    if op == "insert":
        p = pos(hot)
        k = rng.choice([1, 2, 4, 8, 64, 256])
        junk = bytes(rng.randrange(256) for _ in range(k))
        return bytes(b[:p]) + junk + bytes(b[p:]), f"insert {k} random bytes at {p}"
    if op == "delete":
        p = pos(hot)
        k = rng.choice([1, 2, 4, 8, 64, 256])
        return bytes(b[:p]) + bytes(b[p + k:]), f"delete {k} bytes at {p}"
    if op == "interesting":
        p = pos(hot)
        width = rng.choice([1, 2, 4])
        if width == 1:
            v = rng.choice([0, 0x7F, 0x80, 0xFF])
            raw = bytes([v])
        elif width == 2:
            v = rng.choice(INTERESTING_16)
            raw = struct.pack("<H", v)
        else:
            v = rng.choice(INTERESTING_32)
            raw = struct.pack("<I", v)
        b[p:p + width] = raw
        return bytes(b[:n]), f"write {width}-byte value {v:#x} at {p}"
    if op == "duplicate":
        p = pos(hot)
        k = rng.choice([4, 16, 128, 1024])
        q = pos()
        chunk = bytes(b[p:p + k])
        return bytes(b[:q]) + chunk + bytes(b[q:]), f"copy {len(chunk)} bytes from {p} to {q}"
    if op == "length":
        off, width = rng.choice(length_fields)
        if width == 2:
            v = rng.choice(INTERESTING_16)
            b[off:off + 2] = struct.pack("<H", v)
        else:
            v = rng.choice(INTERESTING_32)
            b[off:off + 4] = struct.pack("<I", v)
        return bytes(b), f"set element length field at {off} to {v:#x}"
    # splice
    p = pos()
    q = rng.randrange(max(1, len(other)))
    return bytes(b[:p]) + other[q:], f"splice: first {p} bytes + another file from {q}"


# ---------------------------------------------------------------------------------------
# DICOM helpers


def dcm_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def read_dcm(data: bytes):
    return pydicom.dcmread(io.BytesIO(data), force=True)


def encoding_of(ds):
    enc = getattr(ds, "original_encoding", None)
    if enc and enc[0] is not None:
        return enc
    return (False, True)


def pad_even(b: bytes, pad=b" ") -> bytes:
    return b if len(b) % 2 == 0 else b + pad


def set_raw(ds, tag, vr, value, enc=None):
    """Puts a raw element (any bytes, even invalid for its VR) into ds."""
    implicit, little = enc or encoding_of(ds)
    tag = Tag(tag)
    if isinstance(value, str):
        value = pad_even(value.encode("latin-1"), b"\0" if vr == "UI" else b" ")
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, implicit, little)


def set_us(ds, tag, v, enc=None):
    implicit, little = enc or encoding_of(ds)
    set_raw(ds, tag, "US", struct.pack("<H" if little else ">H", v & 0xFFFF), enc)


def element_layout(data: bytes):
    """(length-field offsets, element start offsets by tag) of the top-level elements and
    the file meta, from pydicom's value_tell."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, defer_size=None)
    except Exception:
        return [], {}
    fields, starts = [], {}
    long_vrs = {"OB", "OW", "OF", "SQ", "UT", "UN", "OD", "OL", "OV", "UC", "UR", "SV", "UV"}
    groups = [(ds.file_meta, False)] if hasattr(ds, "file_meta") else []
    groups.append((ds, encoding_of(ds)[0]))
    for d, implicit in groups:
        for tag in list(d.keys()):
            try:
                e = d.get_item(tag)
            except Exception:
                continue
            vt = getattr(e, "value_tell", None)
            if vt is None:
                continue
            if implicit:
                fields.append((vt - 4, 4))
                starts[int(tag)] = vt - 8
            elif e.VR in long_vrs:
                fields.append((vt - 4, 4))
                starts[int(tag)] = vt - 12
            else:
                fields.append((vt - 2, 2))
                starts[int(tag)] = vt - 8
    return [f for f in fields if 0 <= f[0] < len(data)], starts


def without_pixels(ds):
    d = copy.deepcopy(ds)
    for tag in [t for t in d.keys() if int(t) >= 0x7FE00010]:
        del d[tag]
    return d


def with_pixel_bytes(ds, value: bytes, undefined: bool, vr=b"OB", length=None) -> bytes:
    """ds with its Pixel Data replaced by raw value bytes (encapsulated when undefined)."""
    implicit, little = encoding_of(ds)
    head = dcm_bytes(without_pixels(ds))
    ln = 0xFFFFFFFF if undefined else (len(value) if length is None else length)
    e = "<" if little else ">"
    if implicit:
        el = struct.pack(e + "HHI", 0x7FE0, 0x0010, ln)
    else:
        el = struct.pack(e + "HH", 0x7FE0, 0x0010) + vr + b"\0\0" + struct.pack(e + "I", ln)
    return head + el + value


def encaps(frames, bot=True, bot_values=None, delimiter=True):
    """Encapsulated Pixel Data value: offset table item, one fragment per frame, delimiter."""
    offs, p = [], 0
    frames = [pad_even(f, b"\0") for f in frames]
    for f in frames:
        offs.append(p)
        p += 8 + len(f)
    vals = offs if bot_values is None else bot_values
    botdata = b"".join(struct.pack("<I", v & 0xFFFFFFFF) for v in vals) if bot else b""
    out = struct.pack("<HHI", 0xFFFE, 0xE000, len(botdata)) + botdata
    for f in frames:
        out += struct.pack("<HHI", 0xFFFE, 0xE000, len(f)) + f
    if delimiter:
        out += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return out


def frames_of(ds):
    n = int(ds.get("NumberOfFrames", 1) or 1)
    return list(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=n))


def nested_sq(depth, implicit=False, close=True, defined=False, tag=(0x0008, 0x1115)):
    """A sequence element nested depth levels deep (each level one item holding the next
    sequence), little endian."""
    th = struct.pack("<HH", *tag)

    def sq_head(length):
        if implicit:
            return th + struct.pack("<I", length)
        return th + b"SQ\0\0" + struct.pack("<I", length)

    item_u = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    if defined:
        inner = b""
        for _ in range(depth):
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = sq_head(len(item)) + item
        return inner
    opening = (sq_head(0xFFFFFFFF) + item_u) * depth
    if not close:
        return opening
    closing = (struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)) * depth
    return opening + closing


def insert_before_tag(data: bytes, tag: int, blob: bytes) -> bytes:
    _, starts = element_layout(data)
    after = sorted(t for t in starts if t > tag and (t >> 16) != 2)
    at = starts[after[0]] if after else len(data)
    return data[:at] + blob + data[at:]


def fmt_ds(x) -> str:
    if isinstance(x, str):
        return x
    if math.isnan(x) or math.isinf(x):
        return {True: "NaN"}.get(math.isnan(x), "Inf" if x > 0 else "-Inf")
    s = repr(float(x))
    if len(s) > 16:
        s = f"{x:.10g}"
    return s


def ds_multi(vals) -> str:
    return "\\".join(fmt_ds(v) for v in vals)


# ---------------------------------------------------------------------------------------
# NIfTI / NRRD helpers


def nifti_bytes(img) -> bytes:
    return img.to_bytes()


def nifti_from_header(hdr, data_bytes: bytes, ext=b"\0\0\0\0") -> bytes:
    return bytes(hdr.binaryblock) + ext + data_bytes


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def gz_zeros(total: int, chunk=1 << 20) -> bytes:
    """A gzip member expanding to total zero bytes, built from one repeated deflate block."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co.compress(b"\0" * chunk) + co.flush(zlib.Z_FULL_FLUSH)
    reps, rest = divmod(total, chunk)
    crc = 0
    zero = b"\0" * chunk
    for _ in range(reps):
        crc = zlib.crc32(zero, crc)
    tail_co = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = tail_co.compress(b"\0" * rest) + tail_co.flush(zlib.Z_FINISH)
    crc = zlib.crc32(b"\0" * rest, crc)
    header = b"\x1f\x8b\x08\x00\0\0\0\0\x02\xff"
    return header + block * reps + tail + struct.pack("<II", crc, total & 0xFFFFFFFF)


def lps_affine(ras_affine):
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(ras_affine, dtype=float)


def nrrd_fields(shape, lps, ntype="short", encoding="raw"):
    d = lps[:3, :3]
    o = lps[:3, 3]
    fmt = lambda v: "(" + ",".join(repr(float(x)) for x in v) + ")"
    return [
        ("type", ntype), ("dimension", "3"), ("space", "left-posterior-superior"),
        ("sizes", " ".join(str(s) for s in shape)),
        ("space directions", " ".join(fmt(d[:, i]) for i in range(3))),
        ("kinds", "domain domain domain"), ("endian", "little"), ("encoding", encoding),
        ("space origin", fmt(o)),
    ]


def nrrd_header(fields, magic="NRRD0004") -> bytes:
    lines = [magic] + [f"# {v}" if k == "#" else v if k == "!" else f"{k}: {v}" for k, v in fields]
    return ("\n".join(lines) + "\n\n").encode("latin-1")


def replace_field(fields, key, value):
    out, done = [], False
    for k, v in fields:
        if k == key:
            if value is not None and not done:
                out.append((k, value))
            done = True
        else:
            out.append((k, v))
    if not done and value is not None:
        out.append((key, value))
    return out


def read_nrrd(path: Path):
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields = {}
    for line in head.decode().splitlines()[1:]:
        if line.startswith("#") or ":" not in line:
            continue
        k, v = line.split(":", 1)
        fields[k.strip()] = v.strip()
    data = gzip.decompress(body) if fields.get("encoding") == "gzip" else body
    ty = {"short": "<i2", "unsigned short": "<u2", "unsigned char": "<u1"}[fields["type"]]
    shape = [int(s) for s in fields["sizes"].split()]
    arr = np.frombuffer(data, dtype=ty).reshape(shape[::-1]).transpose(2, 1, 0)
    dirs = [[float(x) for x in v.strip("()").split(",")]
            for v in fields["space directions"].replace(") (", ")|(").split("|")]
    origin = [float(x) for x in fields["space origin"].strip("()").split(",")]
    lps = np.eye(4)
    lps[:3, :3] = np.array(dirs).T
    lps[:3, 3] = origin
    return arr, lps


def nrrd_volume_bytes(arr, lps, encoding="raw", extra=(), detached=None):
    ntype = {np.dtype("int16"): "short", np.dtype("uint16"): "unsigned short",
             np.dtype("uint8"): "unsigned char", np.dtype("float32"): "float",
             np.dtype("int32"): "int", np.dtype("uint32"): "unsigned int",
             np.dtype("float64"): "double"}[arr.dtype]
    fields = nrrd_fields(arr.shape, lps, ntype, encoding)
    for k, v in extra:
        fields = replace_field(fields, k, v)
    data = np.ascontiguousarray(arr.transpose(2, 1, 0)).astype(arr.dtype.newbyteorder("<")).tobytes()
    if encoding == "gzip":
        data = gz(data)
    if detached:
        fields = replace_field(fields, "data file", detached)
        return nrrd_header(fields), data
    return nrrd_header(fields) + data, None


def nifti_with_affine(arr, ras_affine) -> bytes:
    """NIfTI-1 bytes with sform and qform from ras_affine; a non-finite affine is written
    into the sform rows as is (qform unset)."""
    if np.all(np.isfinite(ras_affine)):
        return nifti_image(arr, ras_affine).to_bytes()
    raw = nifti_image(arr, np.eye(4)).to_bytes()
    h = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    h["qform_code"] = 0
    h["sform_code"] = 1
    h["srow_x"], h["srow_y"], h["srow_z"] = ras_affine[0], ras_affine[1], ras_affine[2]
    return bytes(h.binaryblock) + raw[348:]


def nifti_image(arr, ras_affine, dtype=None):
    a = arr if dtype is None else arr.astype(dtype)
    img = nib.Nifti1Image(a, ras_affine)
    img.header.set_qform(ras_affine, code=1)
    img.header.set_sform(ras_affine, code=1)
    img.header["descrip"] = b"pulmo fuzz corpus"
    return img


# ---------------------------------------------------------------------------------------
# The corpus


class Corpus:
    def __init__(self, out: Path, data: Path, seed: int):
        self.out = out
        self.data = data
        self.seed = seed
        self.rng = random.Random(seed)
        self.base = out / "_base"
        self.counters = {}
        self.cases = []

    # --- case plumbing ---------------------------------------------------------------
    def new_case(self, family):
        n = self.counters.get(family, 0)
        self.counters[family] = n + 1
        cid = f"{family}-{n:04d}"
        d = self.out / cid
        d.mkdir(parents=True)
        return cid, d

    def finish(self, cid, d, family, description, inputs, commands,
               expect_error_or_warning=False, expect_ok=False, claimed_voxel_bytes=None):
        size = 0
        for root, dirs, files in os.walk(d):
            for f in files:
                st = os.lstat(os.path.join(root, f))
                if os.path.isfile(os.path.join(root, f)) and not os.path.islink(os.path.join(root, f)):
                    size += st.st_size
        meta = {
            "id": cid, "family": family, "description": description, "inputs": inputs,
            "commands": commands, "expect_error_or_warning": bool(expect_error_or_warning),
            "expect_ok": bool(expect_ok), "input_bytes": size,
        }
        if claimed_voxel_bytes:
            meta["claimed_voxel_bytes"] = int(claimed_voxel_bytes)
        (d / "case.json").write_text(json.dumps(meta, indent=1) + "\n")
        self.cases.append(meta)
        return meta

    def volume_case(self, family, description, files: dict, target=None, **kw):
        """A case whose input is written from files {relname: bytes | ("link", src) |
        ("fifo",) | ("symlink", target)}; target is the path given to pulmo."""
        cid, d = self.new_case(family)
        for rel, content in files.items():
            p = d / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            put(p, content)
        target = target or sorted(files)[0]
        commands = volume_commands(f"{{case}}/{target}")
        return self.finish(cid, d, family, description, [target], commands, **kw)

    # --- sources -----------------------------------------------------------------------
    def prepare_base(self):
        b = self.base
        dd = self.data / "dicom"
        series = {
            "cip": dd / "cip-copdgene-64" / "series",
            "lidc": dd / "lidc-0001-16slices",
            "dcmqi": dd / "dcmqi-ct-3slice",
            "tilt": dd / "ge-head-tilt28",
            "minimal": dd / "lidc-2slice-minimal-header",
        }
        self.series = {}
        for key, src in series.items():
            dst = b / key
            dst.mkdir(parents=True)
            names = sorted(p.name for p in src.iterdir() if p.is_file())
            for name in names:
                shutil.copyfile(src / name, dst / name)
            self.series[key] = names
        (b / "single").mkdir()
        shutil.copyfile(dd / "ct-small-single.dcm", b / "single" / "ct-small-single.dcm")
        (b / "nrrd").mkdir()
        for name in ("ct-64.nrrd", "wholeLung-64.nrrd", "lm-64.nrrd"):
            shutil.copyfile(dd / "cip-copdgene-64" / name, b / "nrrd" / name)

        # pydicom's test files (codecs)
        (b / "pyd").mkdir()
        self.pyd = {}
        from pydicom.data import get_testdata_file
        for name in PYDICOM_FILES:
            try:
                p = get_testdata_file(name)
            except Exception:
                p = None
            if p and os.path.isfile(p):
                shutil.copyfile(p, b / "pyd" / name)
                self.pyd[name] = b / "pyd" / name
        # Our own encodings of a real CT slice.
        ct = pydicom.dcmread(b / "single" / "ct-small-single.dcm")
        ct.compress(RLELossless, generate_instance_uid=False)
        ct.save_as(b / "pyd" / "ct-small-RLE.dcm")
        self.pyd["ct-small-RLE.dcm"] = b / "pyd" / "ct-small-RLE.dcm"
        try:
            ct = pydicom.dcmread(b / "single" / "ct-small-single.dcm")
            ct.compress(JPEGLSLossless, generate_instance_uid=False)
            ct.save_as(b / "pyd" / "ct-small-JLS.dcm")
            self.pyd["ct-small-JLS.dcm"] = b / "pyd" / "ct-small-JLS.dcm"
        except Exception as e:  # pyjpegls missing
            print(f"note: no JPEG-LS encoder ({e})", file=sys.stderr)
        # A 4-frame enhanced-style CT (per-frame positions) from the same slice, native,
        # RLE and JPEG-LS: multi-frame files pulmo can place in space.
        mf = multiframe_ct(b / "single" / "ct-small-single.dcm", 4)
        for suffix, ts in (("", None), ("-RLE", RLELossless), ("-JLS", JPEGLSLossless)):
            d = copy.deepcopy(mf)
            try:
                if ts:
                    d.compress(ts, generate_instance_uid=False)
            except Exception as e:
                print(f"note: cannot encode the multi-frame CT as {ts} ({e})", file=sys.stderr)
                continue
            d.save_as(b / "pyd" / f"ct-mf{suffix}.dcm")
            self.pyd[f"ct-mf{suffix}.dcm"] = b / "pyd" / f"ct-mf{suffix}.dcm"

        # NIfTI: a small crop of LCTSC Case_000 (every 4th voxel in-plane, 5th slice).
        ct_img = nib.load(str(self.data / "lctsc256" / "Case_000_ct.nii.gz"))
        lab_img = nib.load(str(self.data / "lctsc256" / "Case_000_lungs.nii.gz"))
        small_ct = ct_img.slicer[::4, ::4, ::5]
        small_lab = lab_img.slicer[::4, ::4, ::5]
        self.nii_ct = np.asarray(small_ct.dataobj).astype(np.int16)
        self.nii_lab = np.asarray(small_lab.dataobj).astype(np.uint8)
        self.nii_affine = small_ct.affine.copy()
        (b / "nii").mkdir()
        self.nii_ct_bytes = nifti_bytes(nifti_image(self.nii_ct, self.nii_affine))
        self.nii_lab_bytes = nifti_bytes(nifti_image(self.nii_lab, self.nii_affine))
        put(b / "nii" / "ct.nii", self.nii_ct_bytes)
        put(b / "nii" / "ct.nii.gz", gz(self.nii_ct_bytes))
        put(b / "nii" / "lungs.nii.gz", gz(self.nii_lab_bytes))
        self.lungs_real = (self.data / "lctsc256" / "Case_000_lungs.nii.gz").read_bytes()
        # NRRD: the CIP volume and lung mask as arrays.
        self.cip_ct, self.cip_lps = read_nrrd(b / "nrrd" / "ct-64.nrrd")
        self.cip_lung, _ = read_nrrd(b / "nrrd" / "wholeLung-64.nrrd")
        # SEG on the CIP series, written with highdicom.
        self.seg_bytes = make_seg(b / "cip", self.series["cip"], self.seed)
        put(b / "seg" / "seg.dcm", self.seg_bytes)

    def link(self, key, name):
        return ("link", self.base / key / name)

    def series_files(self, key, replace=None, drop=(), extra=None):
        """Files for a folder case: the base series as links, some replaced by bytes."""
        files = {}
        for name in self.series[key]:
            if name in drop:
                continue
            files[f"series/{name}"] = (replace or {}).get(name, self.link(key, name))
        for k, v in (extra or {}).items():
            files[f"series/{k}"] = v
        return files

    def series_ds(self, key, name):
        return pydicom.dcmread(self.base / key / name)


def volume_commands(target):
    return [["info", target], ["convert", target, "{tmp}/out.nii.gz"], ["load", target]]


def put(p: Path, content):
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, (bytes, bytearray)):
        p.write_bytes(content)
    elif content[0] == "link":
        try:
            os.link(content[1], p)
        except OSError:
            shutil.copyfile(content[1], p)
    elif content[0] == "fifo":
        os.mkfifo(p)
    elif content[0] == "symlink":
        os.symlink(content[1], p)
    elif content[0] == "dir":
        p.mkdir(parents=True, exist_ok=True)
    else:
        raise ValueError(content)


PYDICOM_FILES = [
    # native
    "CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
    "emri_small.dcm", "image_dfl.dcm",
    # RLE
    "MR_small_RLE.dcm", "emri_small_RLE.dcm",
    # JPEG baseline / extended 12-bit / lossless
    "JPEG-lossy.dcm", "JPGExtended.dcm", "JPEG-LL.dcm",
    # JPEG-LS
    "MR_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_16.dcm",
    # JPEG 2000
    "JPEG2000.dcm", "MR_small_jp2klossless.dcm", "emri_small_jpeg_2k_lossless.dcm",
    "693_J2KR.dcm",
    # SEG
    "liver.dcm",
]
# Unmodified files that README's transfer syntax list says pulmo decodes. (The emri_small
# files are multi-frame without per-frame positions, which pulmo refuses by design; they
# are baseline cases without expect_ok.)
BASELINE_OK = [
    "CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm",
    "image_dfl.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm", "JPGExtended.dcm", "JPEG-LL.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm", "JPEG2000.dcm",
    "MR_small_jp2klossless.dcm", "693_J2KR.dcm", "ct-small-RLE.dcm", "ct-small-JLS.dcm",
    "ct-mf.dcm", "ct-mf-RLE.dcm", "ct-mf-JLS.dcm",
]
BASELINE_OTHER = ["emri_small.dcm", "emri_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm",
                  "emri_small_jpeg_2k_lossless.dcm"]


def multiframe_ct(path, n):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = np.stack([np.roll(arr, 7 * k, axis=1) for k in range(n)])
    ds.NumberOfFrames = n
    ds.PixelData = frames.astype(arr.dtype).tobytes()
    ipp = [float(x) for x in ds.ImagePositionPatient]
    per = []
    for k in range(n):
        item, pp = Dataset(), Dataset()
        pp.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 2.5 * k]
        item.PlanePositionSequence = Sequence([pp])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    shared, pm, po = Dataset(), Dataset(), Dataset()
    pm.PixelSpacing = ds.PixelSpacing
    pm.SliceThickness = 2.5
    po.ImageOrientationPatient = ds.ImageOrientationPatient
    shared.PixelMeasuresSequence = Sequence([pm])
    shared.PlaneOrientationSequence = Sequence([po])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    return ds


def make_seg(ct_dir: Path, names, seed) -> bytes:
    import highdicom as hd

    sources = [pydicom.dcmread(ct_dir / n) for n in names]
    for ds in sources:
        for keyword in ("PatientBirthDate", "PatientSex", "StudyTime", "StudyID",
                        "ReferringPhysicianName", "AccessionNumber", "PatientID",
                        "PatientName", "StudyDate"):
            if keyword not in ds:
                setattr(ds, keyword, "")
    # highdicom wants the sources in slice order.
    sources.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    rows, cols = sources[0].Rows, sources[0].Columns
    array = np.zeros((len(sources), rows, cols), dtype=np.uint8)
    array[10:30, 20:44, 8:28] = 1
    array[40:46, 30:40, 36:50] = 2
    lung = hd.sr.CodedConcept("39607008", "SCT", "Lung")
    anatomy = hd.sr.CodedConcept("123037004", "SCT", "Anatomical Structure")
    lesion = hd.sr.CodedConcept("52988006", "SCT", "Lesion")
    altered = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
    desc = [
        hd.seg.SegmentDescription(segment_number=1, segment_label="Lung", segmented_property_category=anatomy,
                                  segmented_property_type=lung,
                                  algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL),
        hd.seg.SegmentDescription(segment_number=2, segment_label="Nodule", segmented_property_category=altered,
                                  segmented_property_type=lesion,
                                  algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL),
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=desc,
        series_instance_uid=f"1.2.826.0.1.3680043.8.498.{seed}.1", series_number=9,
        sop_instance_uid=f"1.2.826.0.1.3680043.8.498.{seed}.2", instance_number=1,
        manufacturer="pulmo fuzz", manufacturer_model_name="fuzz_corpus", software_versions="1",
        device_serial_number="1")
    # Determinism: fixed dates and times, UIDs that highdicom made up replaced in order.
    known = set()
    for ds in sources:
        for e in ds.iterall():
            if e.VR == "UI":
                known.add(str(e.value))
    mapping = {}

    def fix(d):
        for e in d:
            if e.VR == "SQ":
                for item in e.value:
                    fix(item)
            elif e.VR in ("DA",):
                e.value = "20240101"
            elif e.VR in ("TM",):
                e.value = "120000"
            elif e.VR in ("DT",):
                e.value = "20240101120000"
            elif e.VR == "UI" and isinstance(e.value, str) and e.value not in known \
                    and not e.value.startswith("1.2.840.10008.") \
                    and not e.value.startswith(f"1.2.826.0.1.3680043.8.498.{seed}."):
                if e.value not in mapping:
                    mapping[e.value] = f"1.2.826.0.1.3680043.8.498.{seed}.{100 + len(mapping)}"
                e.value = mapping[e.value]

    fix(seg)
    fix(seg.file_meta)
    buf = io.BytesIO()
    seg.save_as(buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# Targeted DICOM cases


def dicom_targeted(c: Corpus):
    rng = c.rng
    ct_single = (c.base / "single" / "ct-small-single.dcm").read_bytes()

    def single(family, desc, data, name="input.dcm", **kw):
        return c.volume_case(family, desc, {name: data}, **kw)

    def modified(src_bytes, fn):
        ds = read_dcm(src_bytes)
        fn(ds)
        return dcm_bytes(ds)

    # --- NumberOfFrames ---------------------------------------------------------------
    frame_bases = {"ct-small-single": ct_single}
    for name in ("ct-mf.dcm", "ct-mf-RLE.dcm", "ct-mf-JLS.dcm", "emri_small_RLE.dcm",
                 "emri_small_jpeg_2k_lossless.dcm", "MR_small_RLE.dcm"):
        if name in c.pyd:
            frame_bases[name] = c.pyd[name].read_bytes()
    for bname, bdata in frame_bases.items():
        for v in ("1e30", "1000000000", "10000000000", "100000000000", "1000000000000",
                  "4294967297", "0", "-1", "2147483648", "abc", "NaN"):
            single("dicom-frames", f"{bname} with NumberOfFrames '{v}'",
                   modified(bdata, lambda ds, v=v: set_raw(ds, 0x00280008, "IS", v)))

    # --- Rows / Columns / bits --------------------------------------------------------
    def rc(r, col):
        def f(ds):
            set_us(ds, 0x00280010, r)
            set_us(ds, 0x00280011, col)
        return f

    dim_bases = {"ct-small-single": ct_single}
    for name in ("MR_small_RLE.dcm", "ct-small-RLE.dcm", "JPEG2000.dcm", "MR_small_jpeg_ls_lossless.dcm",
                 "JPEG-LL.dcm", "ct-mf.dcm"):
        if name in c.pyd:
            dim_bases[name] = c.pyd[name].read_bytes()
    for bname, bdata in dim_bases.items():
        for r, col in ((65535, 65535), (0, 0), (1, 65535), (32768, 32768), (65535, 1)):
            single("dicom-dims", f"{bname} with Rows={r} Columns={col} (pixel data unchanged)",
                   modified(bdata, rc(r, col)), expect_error_or_warning=True)
    # Rows smaller / larger than the pixel data (native).
    for r, col, what in ((64, 128, "Rows half the pixel data"), (128, 64, "Columns half the pixel data"),
                         (127, 128, "one row fewer than the pixel data"),
                         (129, 128, "one row more than the pixel data"),
                         (256, 128, "Rows twice the pixel data")):
        single("dicom-dims", f"ct-small-single with {what} (Rows={r} Columns={col})",
               modified(ct_single, rc(r, col)), expect_error_or_warning=True)
    for tag, v, what in ((0x00280100, 0, "BitsAllocated 0"), (0x00280100, 7, "BitsAllocated 7"),
                         (0x00280100, 32, "BitsAllocated 32 on 16-bit data"),
                         (0x00280100, 64, "BitsAllocated 64"), (0x00280100, 65535, "BitsAllocated 65535"),
                         (0x00280101, 0, "BitsStored 0"), (0x00280101, 40, "BitsStored 40 > BitsAllocated"),
                         (0x00280102, 200, "HighBit 200"), (0x00280002, 3, "SamplesPerPixel 3 on grey data"),
                         (0x00280002, 0, "SamplesPerPixel 0"), (0x00280002, 65535, "SamplesPerPixel 65535"),
                         (0x00280103, 7, "PixelRepresentation 7")):
        single("dicom-dims", f"ct-small-single with {what}",
               modified(ct_single, lambda ds, tag=tag, v=v: set_us(ds, tag, v)))
    single("dicom-dims", "ct-small-single with PhotometricInterpretation PALETTE COLOR",
           modified(ct_single, lambda ds: set_raw(ds, 0x00280004, "CS", "PALETTE COLOR")))
    single("dicom-dims", "ct-small-single with PhotometricInterpretation RGB",
           modified(ct_single, lambda ds: set_raw(ds, 0x00280004, "CS", "RGB")))
    ds = read_dcm(ct_single)
    single("dicom-dims", "ct-small-single with Pixel Data length 0",
           with_pixel_bytes(ds, b"", False, b"OW"))
    single("dicom-dims", "ct-small-single with Pixel Data length 0xFFFFFFF0 (file ends after 32 KB)",
           with_pixel_bytes(ds, bytes(ds.PixelData), False, b"OW", length=0xFFFFFFF0))
    single("dicom-dims", "ct-small-single whose Pixel Data is cut in half",
           with_pixel_bytes(ds, bytes(ds.PixelData)[: len(ds.PixelData) // 2], False, b"OW"),
           expect_error_or_warning=True)
    single("dicom-dims", "ct-small-single with native Pixel Data of undefined length",
           with_pixel_bytes(ds, bytes(ds.PixelData), True, b"OW"))
    single("dicom-dims", "ct-small-single with no Pixel Data element", dcm_bytes(without_pixels(ds)))

    # --- Rescale ------------------------------------------------------------------------
    for slope, inter, ew in (("0", "0", True), ("0", "-1024", True), ("NaN", "0", True), ("Inf", "0", True),
                             ("-Inf", "0", True), ("1e308", "0", True), ("1", "NaN", True),
                             ("1", "1e308", True), ("-1", "0", False), ("1e-30", "0", True),
                             ("", "", False), ("abc", "xyz", True)):
        single("dicom-rescale", f"ct-small-single with RescaleSlope '{slope}' RescaleIntercept '{inter}'",
               modified(ct_single, lambda ds, s=slope, i=inter: (set_raw(ds, 0x00281053, "DS", s),
                                                                  set_raw(ds, 0x00281052, "DS", i))),
               expect_error_or_warning=ew)
    # slope 0 on a whole series
    rep = {}
    for name in c.series["cip"]:
        ds = c.series_ds("cip", name)
        set_raw(ds, 0x00281053, "DS", "0")
        rep[name] = dcm_bytes(ds)
    c.volume_case("dicom-rescale", "cip series with RescaleSlope 0 in every file",
                  c.series_files("cip", rep), target="series", expect_error_or_warning=True)

    # --- Header / preamble garbage -----------------------------------------------------
    pre = b"\0" * 128 + b"DICM"
    cases = [
        ("empty file", b""),
        ("preamble and DICM only", pre),
        ("preamble, DICM and half an element", pre + b"\x02\x00\x00\x00UL"),
        ("file meta group length 0xFFFFFFFF", pre + b"\x02\x00\x00\x00UL\x04\x00\xff\xff\xff\xff"),
        ("element of length 0xFFFFFFF0 in a tiny file",
         pre + b"\x02\x00\x00\x00UL\x04\x00\x0c\x00\x00\x00" + b"\x02\x00\x10\x00UI\xf0\xff" + b"1.2"),
        ("4 KB of random bytes after the preamble", pre + bytes(rng.randrange(256) for _ in range(4096))),
        ("4 KB of random bytes, no preamble", bytes(rng.randrange(256) for _ in range(4096))),
        ("4 KB of 0xFF", b"\xff" * 4096),
        ("a text file named .dcm", b"this is not a DICOM file\n" * 10),
        ("a gzip file named .dcm", gz(ct_single)),
    ]
    for desc, data in cases:
        single("dicom-header", desc, data)
    # Undefined length on a non-SQ element; huge OB in the middle.
    d = insert_before_tag(ct_single, 0x00081115,
                          b"\x08\x00\x15\x11UN\0\0\xff\xff\xff\xff" + b"\x01\x02" * 8)
    single("dicom-header", "UN element (0008,1115) of undefined length with junk", d)
    d = insert_before_tag(ct_single, 0x00081115, b"\x08\x00\x15\x11OB\0\0\xf0\xff\xff\x7f" + b"\0" * 16)
    single("dicom-header", "OB element claiming 2 GB in the middle of a 40 KB file", d)
    d = insert_before_tag(ct_single, 0x00081115, b"\x08\x00\x15\x11SQ\0\0\x10\x00\x00\x00" +
                          b"\xfe\xff\x00\xe0\xf0\xff\xff\x7f" + b"\0" * 8)
    single("dicom-header", "sequence whose item claims 2 GB", d)
    d = insert_before_tag(ct_single, 0x00081115, b"\x08\x00\x15\x11SQ\0\0\xff\xff\xff\xff" +
                          b"\xfe\xff\x00\xe0\xff\xff\xff\xff" * 1 + b"\x08\x00\x16\x11UI\x04\x001.2\0")
    single("dicom-header", "undefined-length sequence and item never closed", d)
    ds = read_dcm(ct_single)
    ds.SpecificCharacterSet = "ISO 2022 IR 87"
    ds.PatientName = "\x1b$B;3ED\x1b(B"
    single("dicom-header", "ISO 2022 escape sequences in PatientName", dcm_bytes(ds))

    # --- Transfer syntax mismatch ------------------------------------------------------
    for uid, what in (("1.2.840.10008.1.2.5", "RLE"), ("1.2.840.10008.1.2.4.80", "JPEG-LS"),
                      ("1.2.840.10008.1.2.4.90", "JPEG 2000"), ("1.2.840.10008.1.2.4.51", "JPEG extended"),
                      ("1.2.840.10008.1.2.2", "explicit big endian"), ("1.2.840.10008.1.2", "implicit LE"),
                      ("1.2.840.10008.1.2.1.99", "deflate"), ("1.2.3.4.5.6", "an unknown UID"),
                      ("", "an empty UID")):
        single("dicom-ts-mismatch", f"native explicit LE file whose meta claims {what}",
               patch_ts(ct_single, uid))
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm"):
        if name in c.pyd:
            single("dicom-ts-mismatch", f"{name} whose meta claims explicit VR little endian",
                   patch_ts(c.pyd[name].read_bytes(), "1.2.840.10008.1.2.1"))
    if "MR_small_RLE.dcm" in c.pyd:
        single("dicom-ts-mismatch", "RLE file whose meta claims JPEG-LS",
               patch_ts(c.pyd["MR_small_RLE.dcm"].read_bytes(), "1.2.840.10008.1.2.4.80"))
        single("dicom-ts-mismatch", "RLE file whose meta claims JPEG 2000",
               patch_ts(c.pyd["MR_small_RLE.dcm"].read_bytes(), "1.2.840.10008.1.2.4.90"))

    # --- Nesting -----------------------------------------------------------------------
    cip0 = (c.base / "cip" / c.series["cip"][0]).read_bytes()  # implicit VR
    for depth, close, defined, what in ((10_000, True, False, "closed"), (10_000, False, False, "never closed"),
                                        (50_000, True, False, "closed"), (200_000, True, False, "closed"),
                                        (10_000, True, True, "defined lengths"),
                                        (1_000, True, False, "closed"), (100, True, False, "closed")):
        blob = nested_sq(depth, implicit=False, close=close, defined=defined)
        single("dicom-nesting", f"ct-small-single with a sequence nested {depth} deep ({what}, explicit VR LE)",
               insert_before_tag(ct_single, 0x00081115, blob))
    blob = nested_sq(10_000, implicit=True)
    single("dicom-nesting", "cip slice (implicit VR) with a sequence nested 10000 deep",
           insert_before_tag(cip0, 0x00081115, blob))
    blob = nested_sq(10_000, implicit=False, tag=(0x0009, 0x1010))
    d = insert_before_tag(ct_single, 0x00091010, b"\x09\x00\x10\x00LO\x0a\x00PULMOFUZZ ")
    single("dicom-nesting", "private sequence nested 10000 deep", insert_before_tag(d, 0x00091010, blob))
    rep = {c.series["cip"][40]: insert_before_tag((c.base / "cip" / c.series["cip"][40]).read_bytes(),
                                                  0x00081115, nested_sq(20_000, implicit=True))}
    c.volume_case("dicom-nesting", "cip series with one file nested 20000 deep",
                  c.series_files("cip", rep), target="series")

    # --- Codecs: RLE -------------------------------------------------------------------
    rle_targeted(c)
    # --- Codecs: JPEG family -----------------------------------------------------------
    jpeg_targeted(c)
    # --- Geometry ----------------------------------------------------------------------
    geometry_targeted(c)
    # --- Special files -----------------------------------------------------------------
    special_targeted(c)
    # --- DICOMDIR ----------------------------------------------------------------------
    dicomdir_targeted(c)
    # --- baseline codecs (gaps) --------------------------------------------------------
    for name in BASELINE_OK + BASELINE_OTHER:
        if name in c.pyd:
            c.volume_case("codec-baseline", f"unmodified {name} ({transfer_syntax(c.pyd[name])})",
                          {name: ("link", c.pyd[name])}, expect_ok=name in BASELINE_OK)
    for key in ("cip", "lidc", "dcmqi", "tilt"):
        c.volume_case("codec-baseline", f"unmodified real series {key}",
                      c.series_files(key), target="series", expect_ok=True)


def transfer_syntax(path):
    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    except Exception:
        return "?"


def patch_ts(data: bytes, uid: str) -> bytes:
    """Replaces the file meta Transfer Syntax UID in place (fixing the group length)."""
    i = data.find(b"\x02\x00\x10\x00UI")
    if i < 0:
        return data
    old_len = struct.unpack("<H", data[i + 6:i + 8])[0]
    new = pad_even(uid.encode(), b"\0")
    out = data[:i + 6] + struct.pack("<H", len(new)) + new + data[i + 8 + old_len:]
    g = out.find(b"\x02\x00\x00\x00UL\x04\x00")
    if g >= 0:
        gl = struct.unpack("<I", out[g + 8:g + 12])[0] + len(new) - old_len
        out = out[:g + 8] + struct.pack("<I", gl) + out[g + 12:]
    return out


def rle_targeted(c: Corpus):
    rng = c.rng
    for name in ("ct-small-RLE.dcm", "MR_small_RLE.dcm", "ct-mf-RLE.dcm"):
        if name not in c.pyd:
            continue
        ds = pydicom.dcmread(c.pyd[name])
        frames = frames_of(ds)
        f0 = frames[0]
        nseg = struct.unpack("<I", f0[:4])[0]
        offs = list(struct.unpack("<15I", f0[4:64]))

        def hdr(n, o):
            return struct.pack("<I", n & 0xFFFFFFFF) + struct.pack("<15I", *[x & 0xFFFFFFFF for x in o])

        variants = []
        for n in (0, 3, 15, 16, 255, 0xFFFFFFFF):
            variants.append((f"segment count {n}", hdr(n, offs) + f0[64:]))
        o = offs[:]; o[1] = 0xFFFFFFFF
        variants.append(("second segment offset 0xFFFFFFFF", hdr(nseg, o) + f0[64:]))
        o = offs[:]; o[1] = len(f0) + 100
        variants.append(("second segment offset past the fragment", hdr(nseg, o) + f0[64:]))
        o = offs[:]; o[0] = 0
        variants.append(("first segment offset 0 (inside the header)", hdr(nseg, o) + f0[64:]))
        o = offs[:]; o[0] = 63
        variants.append(("first segment offset 63", hdr(nseg, o) + f0[64:]))
        o = offs[:]; o[0], o[1] = offs[1], offs[0]
        variants.append(("segment offsets decreasing", hdr(nseg, o) + f0[64:]))
        o = offs[:]; o[1] = o[0]
        variants.append(("two segments at the same offset", hdr(nseg, o) + f0[64:]))
        o = offs[:]; o[0] = len(f0)
        variants.append(("first segment offset at the end of the fragment", hdr(nseg, o) + f0[64:]))
        variants.append(("garbage after the header",
                         f0[:64] + bytes(rng.randrange(256) for _ in range(len(f0) - 64))))
        variants.append(("whole fragment garbage", bytes(rng.randrange(256) for _ in range(len(f0)))))
        for cut in (0, 2, 10, 64, 65, len(f0) // 2, len(f0) - 3):
            variants.append((f"fragment truncated to {cut} bytes", f0[:cut]))
        lit = b"\x7f" + b"\x01" * 10
        variants.append(("literal run of 128 with 10 bytes left",
                         hdr(nseg, offs) + f0[64:offs[0]] + lit))
        rep = b"\x81\x00" * 50_000
        variants.append(("replicate runs producing 100x the frame size",
                         hdr(1, [64] + [0] * 14) + rep))
        variants.append(("no-op bytes (-128) only", hdr(1, [64] + [0] * 14) + b"\x80" * 4096))
        variants.append(("header only", f0[:64]))
        for desc, frag in variants:
            fr = [frag] + frames[1:]
            c.volume_case("dicom-rle", f"{name}: {desc}", {"input.dcm": with_pixel_bytes(ds, encaps(fr), True)})
        # offset tables and fragment structure
        n = len(frames)
        structural = [
            ("basic offset table entries 0xFFFFFFF0", encaps(frames, bot_values=[0xFFFFFFF0] * n)),
            ("basic offset table pointing past the data", encaps(frames, bot_values=[10 ** 6 + i for i in range(n)])),
            ("basic offset table reversed", encaps(frames, bot_values=list(reversed(
                list(np.cumsum([0] + [8 + len(pad_even(f, b'\0')) for f in frames[:-1]]).tolist()))))),
            ("basic offset table with 1000 entries", encaps(frames, bot_values=list(range(1000)))),
            ("no sequence delimiter (file ends)", encaps(frames, delimiter=False)),
            ("first fragment item length 0xFFFFFFF0",
             encaps(frames)[:encaps(frames).find(b"\xfe\xff\x00\xe0", 8) + 4] + b"\xf0\xff\xff\xff" +
             encaps(frames)[encaps(frames).find(b"\xfe\xff\x00\xe0", 8) + 8:]),
            ("fragments with a wrong item tag", encaps(frames).replace(b"\xfe\xff\x00\xe0", b"\xfe\xff\x0d\xe0", 2)),
        ]
        if n > 1:
            structural.append(("half the frames missing", encaps(frames[: n // 2])))
            structural.append(("one frame split into two fragments",
                               encaps([frames[0][:100], frames[0][100:]] + frames[1:])))
        structural.append(("one empty fragment per frame", encaps([b""] * n)))
        for desc, value in structural:
            c.volume_case("dicom-rle", f"{name}: {desc}", {"input.dcm": with_pixel_bytes(ds, value, True)})


def find_marker(frame: bytes, markers):
    best = -1
    for m in markers:
        i = frame.find(m)
        if i >= 0 and (best < 0 or i < best):
            best = i
    return best


def jpeg_targeted(c: Corpus):
    rng = c.rng
    groups = [
        ("jpegls", [b"\xff\xf7"], ["ct-small-JLS.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                    "ct-mf-JLS.dcm", "JPEGLSNearLossless_16.dcm"]),
        ("jpeg", [b"\xff\xc0", b"\xff\xc1", b"\xff\xc3"], ["JPEG-lossy.dcm", "JPGExtended.dcm", "JPEG-LL.dcm"]),
    ]
    for fam, markers, names in groups:
        for name in names:
            if name not in c.pyd:
                continue
            ds = pydicom.dcmread(c.pyd[name])
            frames = frames_of(ds)
            f0 = frames[0]
            i = find_marker(f0, markers)
            if i < 0:
                continue

            def sof(y=None, x=None, p=None, nf=None, ln=None):
                b = bytearray(f0)
                if ln is not None:
                    b[i + 2:i + 4] = struct.pack(">H", ln)
                if p is not None:
                    b[i + 4] = p
                if y is not None:
                    b[i + 5:i + 7] = struct.pack(">H", y)
                if x is not None:
                    b[i + 7:i + 9] = struct.pack(">H", x)
                if nf is not None:
                    b[i + 9] = nf
                return bytes(b)

            variants = [
                ("frame header claiming 65535 x 65535", sof(y=65535, x=65535), None),
                ("frame header claiming 65535 x 65535, Rows/Columns 65535 too", sof(y=65535, x=65535), (65535, 65535)),
                ("frame header claiming 65535 rows", sof(y=65535), None),
                ("frame header claiming 0 x 0", sof(y=0, x=0), None),
                ("frame header height 0 (defined by DNL)", sof(y=0), None),
                ("frame header precision 0", sof(p=0), None),
                ("frame header precision 1", sof(p=1), None),
                ("frame header precision 17", sof(p=17), None),
                ("frame header precision 255", sof(p=255), None),
                ("frame header with 0 components", sof(nf=0), None),
                ("frame header with 255 components", sof(nf=255), None),
                ("frame header with 4 components", sof(nf=4), None),
                ("frame header length 0", sof(ln=0), None),
                ("frame header length 65535", sof(ln=65535), None),
                ("codestream cut after the frame header", f0[:i + 12], None),
                ("codestream cut in half", f0[: len(f0) // 2], None),
                ("no end-of-image marker", f0[:-2], None),
                ("entropy-coded data replaced by garbage",
                 f0[: i + 40] + bytes(rng.randrange(256) for _ in range(max(0, len(f0) - i - 42))) + b"\xff\xd9", None),
                ("frame header duplicated", f0[: i] + f0[i:i + 11] + f0[i:], None),
                ("empty frame", b"", None),
                ("start-of-image only", b"\xff\xd8", None),
            ]
            if fam == "jpegls":
                lse = b"\xff\xf8\x00\x0d\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                variants.append(("LSE preset parameters all 0xFFFF", f0[:i] + lse + f0[i:], None))
                variants.append(("LSE with a mapping table id 255 of 65535 entries",
                                 f0[:i] + b"\xff\xf8\x00\x08\x02\xff\x02\xff\xff" + f0[i:], None))
            for desc, frame, rows in variants:
                d2 = copy.deepcopy(ds)
                if rows:
                    set_us(d2, 0x00280010, rows[0])
                    set_us(d2, 0x00280011, rows[1])
                fr = [frame] + frames[1:]
                c.volume_case(f"dicom-{fam}", f"{name}: {desc}",
                              {"input.dcm": with_pixel_bytes(d2, encaps(fr), True)})
    # JPEG 2000
    for name in ("JPEG2000.dcm", "MR_small_jp2klossless.dcm", "693_J2KR.dcm"):
        if name not in c.pyd:
            continue
        ds = pydicom.dcmread(c.pyd[name])
        frames = frames_of(ds)
        f0 = frames[0]
        i = f0.find(b"\xff\x4f\xff\x51")
        if i < 0:
            continue
        s = i + 2

        def siz(**kw):
            b = bytearray(f0)
            fields = {"xsiz": (6, ">I"), "ysiz": (10, ">I"), "xo": (14, ">I"), "yo": (18, ">I"),
                      "xt": (22, ">I"), "yt": (26, ">I"), "csiz": (38, ">H"), "ssiz": (40, ">B"),
                      "xr": (41, ">B"), "yr": (42, ">B"), "lsiz": (2, ">H")}
            for k, v in kw.items():
                off, f = fields[k]
                b[s + off:s + off + struct.calcsize(f)] = struct.pack(f, v)
            return bytes(b)

        variants = [
            ("SIZ 65535 x 65535", siz(xsiz=65535, ysiz=65535)),
            ("SIZ 0xFFFFFFFF x 0xFFFFFFFF", siz(xsiz=0xFFFFFFFF, ysiz=0xFFFFFFFF)),
            ("SIZ 0 x 0", siz(xsiz=0, ysiz=0)),
            ("SIZ image offset beyond size", siz(xo=0xFFFFFFF0, yo=0xFFFFFFF0)),
            ("SIZ tiles of 1 x 1 on 65535 x 65535", siz(xsiz=65535, ysiz=65535, xt=1, yt=1)),
            ("SIZ tiles of 0 x 0", siz(xt=0, yt=0)),
            ("SIZ 16384 components", siz(csiz=16384)),
            ("SIZ 0 components", siz(csiz=0)),
            ("SIZ component depth 128 bits", siz(ssiz=0x7F)),
            ("SIZ component subsampling 0", siz(xr=0, yr=0)),
            ("SIZ component subsampling 255", siz(xr=255, yr=255)),
            ("SIZ length 0", siz(lsiz=0)),
            ("SIZ length 65535", siz(lsiz=65535)),
            ("codestream cut after SIZ", f0[: s + 50]),
            ("codestream cut in half", f0[: len(f0) // 2]),
            ("no EOC marker", f0[:-2]),
            ("tile data garbage", f0[: s + 120] + bytes(rng.randrange(256) for _ in range(max(0, len(f0) - s - 120)))),
            ("empty frame", b""),
        ]
        for desc, frame in variants:
            c.volume_case("dicom-j2k", f"{name}: {desc}",
                          {"input.dcm": with_pixel_bytes(ds, encaps([frame] + frames[1:]), True)})


def geometry_targeted(c: Corpus):
    cip = c.series["cip"]
    dss = {n: c.series_ds("cip", n) for n in cip}
    order = sorted(cip, key=lambda n: float(dss[n].ImagePositionPatient[2]))
    zs = [float(dss[n].ImagePositionPatient[2]) for n in order]
    dz = zs[-1] - zs[-2]

    def series_case(family, desc, changes, key="cip", drop=(), extra=None, ew=False):
        rep = {}
        for name, fn in changes.items():
            ds = c.series_ds(key, name)
            fn(ds)
            rep[name] = dcm_bytes(ds)
        return c.volume_case(family, desc, c.series_files(key, rep, drop, extra), target="series",
                             expect_error_or_warning=ew)

    def set_ipp(v):
        return lambda ds: set_raw(ds, 0x00200032, "DS", v)

    mid = order[len(order) // 2]
    ipp = [float(x) for x in dss[mid].ImagePositionPatient]
    for dist in (1e6, -1e6, 1e9, 1e12, 1e300):
        series_case("dicom-geometry", f"cip series with one slice moved {dist:g} mm along z",
                    {mid: set_ipp(ds_multi([ipp[0], ipp[1], ipp[2] + dist]))})
    series_case("dicom-geometry", "cip series with one slice moved 1e6 mm along x",
                {mid: set_ipp(ds_multi([ipp[0] + 1e6, ipp[1], ipp[2]]))}, ew=True)
    last = order[-1]
    ipl = [float(x) for x in dss[last].ImagePositionPatient]
    for k in (10, 1000, 10 ** 6, 10 ** 8):
        series_case("dicom-geometry",
                    f"cip series whose last slice is {k} slice spacings further (a gap an exact multiple of the spacing)",
                    {last: set_ipp(ds_multi([ipl[0], ipl[1], ipl[2] + k * dz]))})
    lidc = c.series["lidc"]
    ldss = {n: c.series_ds("lidc", n) for n in lidc}
    lorder = sorted(lidc, key=lambda n: float(ldss[n].ImagePositionPatient[2]))
    lz = [float(ldss[n].ImagePositionPatient[2]) for n in lorder]
    ldz = lz[-1] - lz[-2]
    lip = [float(x) for x in ldss[lorder[-1]].ImagePositionPatient]
    for k in (10 ** 4, 10 ** 5):
        series_case("dicom-geometry",
                    f"lidc series (512x512) whose last slice is {k} spacings further",
                    {lorder[-1]: set_ipp(ds_multi([lip[0], lip[1], lip[2] + k * ldz]))}, key="lidc")
    series_case("dicom-geometry", "lidc series with one slice moved 1e6 mm",
                {lorder[5]: set_ipp(ds_multi([lip[0], lip[1], lz[5] + 1e6]))}, key="lidc")
    # tilt with tiny pixel spacing
    tilt = c.series["tilt"]
    for ps in ("0.001\\0.001", "1e-6\\1e-6", "0.001\\1", "1e-300\\1e-300"):
        series_case("dicom-geometry", f"ge-head-tilt28 (gantry tilt) with PixelSpacing {ps}",
                    {n: (lambda ds, ps=ps: set_raw(ds, 0x00280030, "DS", ps)) for n in tilt}, key="tilt")
    series_case("dicom-geometry", "ge-head-tilt28 with GantryDetectorTilt 89.999",
                {n: (lambda ds: set_raw(ds, 0x00181120, "DS", "89.999")) for n in tilt}, key="tilt")
    # NaN / Inf / zero / negative geometry
    bad = [
        (0x00200032, "NaN\\NaN\\NaN", "ImagePositionPatient NaN"),
        (0x00200032, "Inf\\0\\-Inf", "ImagePositionPatient Inf"),
        (0x00200032, "1\\2", "ImagePositionPatient with 2 values"),
        (0x00200032, "", "ImagePositionPatient empty"),
        (0x00280030, "NaN\\NaN", "PixelSpacing NaN"),
        (0x00280030, "Inf\\Inf", "PixelSpacing Inf"),
        (0x00280030, "0\\0", "PixelSpacing 0"),
        (0x00280030, "-0.7\\-0.7", "PixelSpacing negative"),
        (0x00280030, "1e308\\1e308", "PixelSpacing 1e308"),
        (0x00200037, "NaN\\0\\0\\0\\NaN\\0", "ImageOrientationPatient NaN"),
        (0x00200037, "0\\0\\0\\0\\0\\0", "ImageOrientationPatient all zero"),
        (0x00200037, "1\\0\\0\\1\\0\\0", "ImageOrientationPatient rows parallel to columns"),
        (0x00200037, "1\\0\\0\\0\\1\\0\\0", "ImageOrientationPatient with 7 values"),
        (0x00200037, "Inf\\0\\0\\0\\1\\0", "ImageOrientationPatient Inf"),
        (0x00200037, "2\\0\\0\\0\\3\\0", "ImageOrientationPatient not unit length"),
        (0x00180050, "0", "SliceThickness 0"),
        (0x00180050, "-3", "SliceThickness negative"),
        (0x00180088, "-4", "SpacingBetweenSlices negative"),
        (0x00180088, "0", "SpacingBetweenSlices 0"),
        (0x00180088, "NaN", "SpacingBetweenSlices NaN"),
    ]
    ct_single = (c.base / "single" / "ct-small-single.dcm").read_bytes()
    for tag, v, what in bad:
        ew = "Thickness" not in what and "SpacingBetween" not in what
        series_case("dicom-geometry", f"cip series with {what} in every file",
                    {n: (lambda ds, tag=tag, v=v: set_raw(ds, tag, "DS", v)) for n in cip}, ew=ew)
        series_case("dicom-geometry", f"cip series with {what} in one file",
                    {mid: (lambda ds, tag=tag, v=v: set_raw(ds, tag, "DS", v))}, ew=ew)
        ds = read_dcm(ct_single)
        set_raw(ds, tag, "DS", v)
        c.volume_case("dicom-geometry", f"ct-small-single with {what}", {"input.dcm": dcm_bytes(ds)},
                      expect_error_or_warning=ew)
    # All slices at one position; two slices at one position with different pixels.
    series_case("dicom-geometry", "cip series with every slice at the same position",
                {n: set_ipp(ds_multi(ipp)) for n in cip}, ew=True)
    series_case("dicom-duplicates", "cip series with two different slices at the same position (distinct SOP UIDs)",
                {order[11]: set_ipp(ds_multi([float(x) for x in dss[order[10]].ImagePositionPatient]))}, ew=True)
    # Duplicates
    extra = {"IMG0001-copy.dcm": c.link("cip", cip[0]), "IMG0002-copy.dcm": c.link("cip", cip[1])}
    c.volume_case("dicom-duplicates", "cip series with two files present twice (same SOP Instance UID)",
                  c.series_files("cip", extra=extra), target="series")
    ds = c.series_ds("cip", cip[0])
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.PixelData = bytes(len(ds.PixelData))
    c.volume_case("dicom-duplicates", "cip series plus a black copy of a slice with another SOP Instance UID",
                  c.series_files("cip", extra={"IMG9999.dcm": dcm_bytes(ds)}), target="series",
                  expect_error_or_warning=True)
    ds = c.series_ds("cip", cip[0])
    ds.PixelData = bytes(len(ds.PixelData))
    c.volume_case("dicom-duplicates", "cip series plus a black copy of a slice with the same SOP Instance UID",
                  c.series_files("cip", extra={"IMG9999.dcm": dcm_bytes(ds)}), target="series",
                  expect_error_or_warning=True)
    c.volume_case("dicom-duplicates", "cip series with every file present twice",
                  {**c.series_files("cip"), **{f"series/copy/{n}": c.link("cip", n) for n in cip}},
                  target="series")
    # Missing slices
    c.volume_case("dicom-geometry", "cip series with 5 middle slices missing",
                  c.series_files("cip", drop=set(order[30:35])), target="series", expect_error_or_warning=True)
    c.volume_case("dicom-geometry", "cip series with every other slice missing",
                  c.series_files("cip", drop=set(order[1::2][:-1])), target="series")
    # Mixed series
    files = c.series_files("cip")
    files.update({f"series/lidc/{n}": c.link("lidc", n) for n in c.series["lidc"]})
    c.volume_case("dicom-mixed", "folder holding the cip and lidc series", files, target="series")
    rep = {}
    uid = dss[cip[0]].SeriesInstanceUID
    for n in c.series["lidc"][:4]:
        ds = c.series_ds("lidc", n)
        ds.SeriesInstanceUID = uid
        ds.FrameOfReferenceUID = dss[cip[0]].FrameOfReferenceUID
        rep[f"lidc-{n}"] = dcm_bytes(ds)
    c.volume_case("dicom-mixed", "cip series plus 4 lidc slices (512x512) with the cip SeriesInstanceUID",
                  c.series_files("cip", extra=rep), target="series", expect_error_or_warning=True)
    ds = read_dcm(ct_single)
    ds.SeriesInstanceUID = uid
    ds.ImagePositionPatient = [ipp[0], ipp[1], zs[-1] + dz]
    c.volume_case("dicom-mixed", "cip series plus a 128x128 slice with the cip SeriesInstanceUID",
                  c.series_files("cip", extra={"zz.dcm": dcm_bytes(ds)}), target="series",
                  expect_error_or_warning=True)
    ds = c.series_ds("cip", mid)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    c.volume_case("dicom-mixed", "cip series with one slice in sagittal orientation",
                  c.series_files("cip", replace={mid: dcm_bytes(ds)}), target="series",
                  expect_error_or_warning=True)
    ds = c.series_ds("cip", mid)
    set_us(ds, 0x00280100, 8)
    set_us(ds, 0x00280101, 8)
    set_us(ds, 0x00280102, 7)
    c.volume_case("dicom-mixed", "cip series with one slice claiming 8-bit pixels",
                  c.series_files("cip", replace={mid: dcm_bytes(ds)}), target="series")
    ds = c.series_ds("cip", mid)
    set_raw(ds, 0x00281052, "DS", "1000")
    c.volume_case("dicom-mixed", "cip series with one slice's RescaleIntercept 1000 (the rest -1024)",
                  c.series_files("cip", replace={mid: dcm_bytes(ds)}), target="series")
    files = c.series_files("cip")
    files["series/notes.txt"] = b"just some notes\n"
    files["series/empty.dcm"] = b""
    files["series/sr.dcm"] = c.link("pyd", "liver.dcm") if "liver.dcm" in c.pyd else b""
    c.volume_case("dicom-mixed", "cip series with a text file, an empty file and a SEG in the folder",
                  files, target="series")


def special_targeted(c: Corpus):
    cip = c.series["cip"]
    c.volume_case("dicom-special-files", "cip series plus a named pipe IMG0080.dcm",
                  c.series_files("cip", extra={"IMG0080.dcm": ("fifo",)}), target="series")
    c.volume_case("dicom-special-files", "cip series plus a named pipe without extension",
                  c.series_files("cip", extra={"pipe": ("fifo",)}), target="series")
    c.volume_case("dicom-special-files", "a named pipe given as the input file", {"input.dcm": ("fifo",)})
    c.volume_case("dicom-special-files", "cip series plus a symlink to /dev/zero",
                  c.series_files("cip", extra={"zero.dcm": ("symlink", "/dev/zero")}), target="series")
    c.volume_case("dicom-special-files", "cip series plus a symlink to /dev/urandom",
                  c.series_files("cip", extra={"random.dcm": ("symlink", "/dev/urandom")}), target="series")
    c.volume_case("dicom-special-files", "a symlink to /dev/zero given as the input file",
                  {"input.dcm": ("symlink", "/dev/zero")})
    c.volume_case("dicom-special-files", "cip series plus a symlink loop (loop -> .)",
                  c.series_files("cip", extra={"loop": ("symlink", ".")}), target="series")
    c.volume_case("dicom-special-files", "cip series plus a self-referencing symlink",
                  c.series_files("cip", extra={"self.dcm": ("symlink", "self.dcm")}), target="series")
    c.volume_case("dicom-special-files", "cip series plus a dangling symlink",
                  c.series_files("cip", extra={"gone.dcm": ("symlink", "does-not-exist.dcm")}), target="series")
    c.volume_case("dicom-special-files", "cip series plus a folder named x.dcm",
                  c.series_files("cip", extra={"x.dcm": ("dir",)}), target="series")
    c.volume_case("dicom-special-files", "an empty folder", {"series/.keep": ("dir",)}, target="series")
    files = {f"series/{'/'.join(['d'] * 200)}/{n}": c.link("cip", n) for n in cip[:3]}
    c.volume_case("dicom-special-files", "three slices 200 folders deep", files, target="series")


def dicomdir_bytes(refs) -> bytes:
    """A DICOMDIR with one PATIENT/STUDY/SERIES and one IMAGE record per referenced file id
    (a list of path components)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "PULMOFUZZ"
    ds.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
    ds.FileSetConsistencyFlag = 0
    recs = []
    for kind in ("PATIENT", "STUDY", "SERIES"):
        r = Dataset()
        r.OffsetOfTheNextDirectoryRecord = 0
        r.RecordInUseFlag = 0xFFFF
        r.OffsetOfReferencedLowerLevelDirectoryEntity = 0
        r.DirectoryRecordType = kind
        recs.append(r)
    for i, ref in enumerate(refs):
        r = Dataset()
        r.OffsetOfTheNextDirectoryRecord = 0
        r.RecordInUseFlag = 0xFFFF
        r.OffsetOfReferencedLowerLevelDirectoryEntity = 0
        r.DirectoryRecordType = "IMAGE"
        set_raw(r, 0x00041500, "CS", "\\".join(ref), enc=(False, True))
        r.ReferencedSOPClassUIDInFile = "1.2.840.10008.5.1.4.1.1.2"
        r.ReferencedSOPInstanceUIDInFile = f"1.2.3.{i}"
        r.ReferencedTransferSyntaxUIDInFile = "1.2.840.10008.1.2"
        r.InstanceNumber = i + 1
        recs.append(r)
    ds.DirectoryRecordSequence = Sequence(recs)
    ds.preamble = b"\0" * 128
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def dicomdir_targeted(c: Corpus):
    cip = c.series["cip"]
    # inside: a valid DICOMDIR (control)
    files = {f"disc/IMAGES/{n[:-4]}": c.link("cip", n) for n in cip}
    files["disc/DICOMDIR"] = dicomdir_bytes([["IMAGES", n[:-4]] for n in cip])
    c.volume_case("dicomdir", "valid DICOMDIR referencing the cip series inside its folder", files,
                  target="disc/DICOMDIR", expect_ok=True)

    def dd_case(desc, refs, extra=None, ew=True):
        files = {"disc/DICOMDIR": dicomdir_bytes(refs)}
        files.update(extra or {})
        c.volume_case("dicomdir", desc, files, target="disc/DICOMDIR", expect_error_or_warning=ew)

    outside = {f"outside/{n}": c.link("cip", n) for n in cip}
    dd_case("DICOMDIR whose file ids are ../outside/... (a valid series outside its folder)",
            [["..", "outside", n] for n in cip], outside)
    dd_case("DICOMDIR whose file ids climb ../../../..", [[".."] * 12 + ["etc", "passwd"]])
    dd_case("DICOMDIR pointing to ../../_base/cip (the corpus base) by relative path",
            [["..", "..", "_base", "cip", n] for n in cip])
    dd_case("DICOMDIR with absolute file ids into the corpus base",
            [[str(c.base / "cip" / n)] for n in cip])
    dd_case("DICOMDIR with an absolute file id /dev/zero", [["/dev/zero"]])
    dd_case("DICOMDIR with an absolute file id /etc/passwd", [["/etc/passwd"]])
    dd_case("DICOMDIR referencing a named pipe outside its folder", [["..", "pipe"]], {"pipe": ("fifo",)})
    dd_case("DICOMDIR referencing a named pipe inside its folder", [["pipe"]], {"disc/pipe": ("fifo",)})
    dd_case("DICOMDIR referencing itself", [["DICOMDIR"]], ew=False)
    dd_case("DICOMDIR referencing 20000 missing files", [["IMAGES", f"F{i:07d}"] for i in range(20_000)], ew=False)
    dd_case("DICOMDIR with an empty file id and '.' components", [[""], ["."], [".", "."]], ew=False)
    dd_case("DICOMDIR with a NUL byte inside a file id", [["IMAGES", "A\0B"]], ew=False)
    files = {f"disc/IMAGES/{n[:-4]}": c.link("cip", n) for n in cip}
    d = dicomdir_bytes([["IMAGES", n[:-4]] for n in cip])
    d = insert_before_tag(d, 0x00041130, nested_sq(20_000))
    files["disc/DICOMDIR"] = d
    c.volume_case("dicomdir", "DICOMDIR with a sequence nested 20000 deep", files, target="disc/DICOMDIR")


# ---------------------------------------------------------------------------------------
# SEG


def seg_commands(seg_rel, ct="{corpus}/_base/cip"):
    return [["import-seg", f"{{case}}/{seg_rel}", "--ct", ct, "--output", "{tmp}/seg.nii.gz"]]


def seg_case(c: Corpus, family, desc, data, ct="{corpus}/_base/cip", ew=False, ok=False, extra=None):
    cid, d = c.new_case(family)
    put(d / "seg.dcm", data)
    for k, v in (extra or {}).items():
        put(d / k, v)
    return c.finish(cid, d, family, desc, ["seg.dcm"], seg_commands("seg.dcm", ct),
                    expect_error_or_warning=ew, expect_ok=ok)


def seg_targeted(c: Corpus):
    base = c.seg_bytes
    seg_case(c, "seg", "highdicom SEG on the cip series, unmodified", base, ok=True)
    seg0 = read_dcm(base)
    enc = encoding_of(seg0)

    def mod(fn):
        ds = read_dcm(base)
        fn(ds)
        return dcm_bytes(ds)

    def all_pos(v):
        def f(ds):
            for item in ds.PerFrameFunctionalGroupsSequence:
                set_raw(item.PlanePositionSequence[0], 0x00200032, "DS", v, enc)
        return f

    def one_pos(v, k=0):
        def f(ds):
            set_raw(ds.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0], 0x00200032, "DS", v, enc)
        return f

    seg_case(c, "seg", "every frame position NaN", mod(all_pos("NaN\\NaN\\NaN")), ew=True)
    seg_case(c, "seg", "one frame position NaN", mod(one_pos("NaN\\NaN\\NaN", 3)), ew=True)
    seg_case(c, "seg", "every frame position Inf", mod(all_pos("Inf\\Inf\\Inf")), ew=True)
    seg_case(c, "seg", "every frame position empty", mod(all_pos("")), ew=True)
    seg_case(c, "seg", "one frame 1e6 mm away from every CT slice",
             mod(one_pos("0\\0\\1000000", 2)), ew=True)
    seg_case(c, "seg", "one frame half-way between two CT slices",
             mod(lambda ds: shift_frame(ds, 1, 0.5 * 3.9873417721518987, enc)), ew=True)

    def remove_positions(ds):
        for item in ds.PerFrameFunctionalGroupsSequence:
            del item.PlanePositionSequence
    seg_case(c, "seg", "no PlanePositionSequence in any frame", mod(remove_positions), ew=True)
    seg_case(c, "seg", "another FrameOfReferenceUID",
             mod(lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.826.0.1.3680043.8.498.999")), ew=True)
    seg_case(c, "seg", "empty FrameOfReferenceUID", mod(lambda ds: set_raw(ds, 0x00200052, "UI", "", enc)), ew=True)
    seg_case(c, "seg", "no FrameOfReferenceUID", mod(lambda ds: delattr(ds, "FrameOfReferenceUID")), ew=True)

    def dup_segments(ds):
        ds.SegmentSequence[1].SegmentNumber = 1
    seg_case(c, "seg", "duplicate segment numbers (two segments numbered 1)", mod(dup_segments), ew=True)

    def ref_seg(v):
        def f(ds):
            it = ds.PerFrameFunctionalGroupsSequence[0].SegmentIdentificationSequence[0]
            set_us(it, 0x0062000B, v, enc)
        return f
    seg_case(c, "seg", "a frame referencing segment 0", mod(ref_seg(0)), ew=True)
    seg_case(c, "seg", "a frame referencing segment 99 (absent)", mod(ref_seg(99)), ew=True)
    seg_case(c, "seg", "a frame referencing segment 65535", mod(ref_seg(65535)), ew=True)

    def seg_number(v):
        def f(ds):
            set_us(ds.SegmentSequence[0], 0x00620004, v, enc)
        return f
    seg_case(c, "seg", "segment number 0", mod(seg_number(0)), ew=True)
    seg_case(c, "seg", "segment number 65535", mod(seg_number(65535)), ew=True)
    nf = int(seg0.NumberOfFrames)
    for v, what in ((str(nf + 1), "one more than the frames present"), (str(nf - 1), "one fewer than the frames present"),
                    ("0", "0"), ("1000000000", "1e9"), ("1e30", "1e30"), ("-1", "-1")):
        seg_case(c, "seg", f"NumberOfFrames {what}", mod(lambda ds, v=v: set_raw(ds, 0x00280008, "IS", v, enc)), ew=True)

    def drop_group(ds):
        del ds.PerFrameFunctionalGroupsSequence[-1]
    seg_case(c, "seg", "one per-frame functional group fewer than frames", mod(drop_group), ew=True)

    def extra_group(ds):
        ds.PerFrameFunctionalGroupsSequence.append(copy.deepcopy(ds.PerFrameFunctionalGroupsSequence[0]))
    seg_case(c, "seg", "one per-frame functional group more than frames", mod(extra_group), ew=True)
    seg_case(c, "seg", "Rows/Columns 32 (CT is 64)",
             mod(lambda ds: (set_us(ds, 0x00280010, 32, enc), set_us(ds, 0x00280011, 32, enc))), ew=True)
    seg_case(c, "seg", "Rows/Columns 65535",
             mod(lambda ds: (set_us(ds, 0x00280010, 65535, enc), set_us(ds, 0x00280011, 65535, enc))), ew=True)
    seg_case(c, "seg", "Rows 128 with the pixel data of 64x64 frames",
             mod(lambda ds: set_us(ds, 0x00280010, 128, enc)), ew=True)

    def spacing(v):
        def f(ds):
            pm = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
            set_raw(pm, 0x00280030, "DS", v, enc)
        return f
    seg_case(c, "seg", "PixelSpacing doubled", mod(spacing("8.343744\\8.343744")), ew=True)
    seg_case(c, "seg", "PixelSpacing NaN", mod(spacing("NaN\\NaN")), ew=True)
    seg_case(c, "seg", "PixelSpacing 0", mod(spacing("0\\0")), ew=True)

    def orient(v):
        def f(ds):
            po = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
            set_raw(po, 0x00200037, "DS", v, enc)
        return f
    seg_case(c, "seg", "ImageOrientationPatient transposed", mod(orient("0\\1\\0\\1\\0\\0")), ew=True)
    seg_case(c, "seg", "ImageOrientationPatient NaN", mod(orient("NaN\\0\\0\\0\\1\\0")), ew=True)
    seg_case(c, "seg", "ImageOrientationPatient zero", mod(orient("0\\0\\0\\0\\0\\0")), ew=True)
    seg_case(c, "seg", "BitsAllocated 8 on binary (bit-packed) frames",
             mod(lambda ds: set_us(ds, 0x00280100, 8, enc)), ew=True)
    seg_case(c, "seg", "BitsAllocated 0", mod(lambda ds: set_us(ds, 0x00280100, 0, enc)))
    seg_case(c, "seg", "SegmentationType FRACTIONAL on bit-packed frames",
             mod(lambda ds: set_raw(ds, 0x00620001, "CS", "FRACTIONAL", enc)), ew=True)
    seg_case(c, "seg", "SegmentationType garbage", mod(lambda ds: set_raw(ds, 0x00620001, "CS", "XYZ", enc)))
    seg_case(c, "seg", "no SegmentSequence", mod(lambda ds: delattr(ds, "SegmentSequence")))
    seg_case(c, "seg", "no PerFrameFunctionalGroupsSequence",
             mod(lambda ds: delattr(ds, "PerFrameFunctionalGroupsSequence")))
    seg_case(c, "seg", "no SharedFunctionalGroupsSequence",
             mod(lambda ds: delattr(ds, "SharedFunctionalGroupsSequence")))
    ds = read_dcm(base)
    pix = bytes(ds.PixelData)
    seg_case(c, "seg", "pixel data cut in half", with_pixel_bytes(ds, pix[: len(pix) // 2], False, b"OB"), ew=True)
    seg_case(c, "seg", "pixel data empty", with_pixel_bytes(ds, b"", False, b"OB"), ew=True)
    seg_case(c, "seg", "pixel data twice as long", with_pixel_bytes(ds, pix * 2, False, b"OB"), ew=True)
    seg_case(c, "seg", "pixel data of undefined length (encapsulated) in a native SEG",
             with_pixel_bytes(ds, encaps([pix]), True))
    seg_case(c, "seg", "SEG with a sequence nested 20000 deep",
             insert_before_tag(base, 0x00081115, nested_sq(20_000)))
    seg_case(c, "seg", "Modality CT instead of SEG", mod(lambda ds: setattr(ds, "Modality", "CT")))
    seg_case(c, "seg", "the SEG imported onto another CT (dcmqi-ct-3slice)", base, ct="{corpus}/_base/dcmqi", ew=True)
    seg_case(c, "seg", "the SEG imported onto the lidc series", base, ct="{corpus}/_base/lidc", ew=True)
    if "liver.dcm" in c.pyd:
        seg_case(c, "seg", "pydicom's liver.dcm SEG imported onto the cip CT",
                 c.pyd["liver.dcm"].read_bytes(), ew=True)
    seg_case(c, "seg", "a CT slice given as the SEG", (c.base / "cip" / c.series["cip"][0]).read_bytes())
    seg_case(c, "seg", "the SEG given as the CT too", base, ct="{case}/seg.dcm")
    seg_case(c, "seg", "CT folder is a named pipe", base, ct="{case}/pipe", extra={"pipe": ("fifo",)})

    def dup_segments_repointed(ds):
        ds.SegmentSequence[1].SegmentNumber = 1
        for item in ds.PerFrameFunctionalGroupsSequence:
            it = item.SegmentIdentificationSequence[0]
            if int(it.ReferencedSegmentNumber) == 2:
                it.ReferencedSegmentNumber = 1
    seg_case(c, "seg", "duplicate segment numbers: both segments numbered 1, their frames all reference 1",
             mod(dup_segments_repointed), ew=True)


def shift_frame(ds, k, dz, enc):
    pp = ds.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0]
    v = [float(x) for x in pp.ImagePositionPatient]
    set_raw(pp, 0x00200032, "DS", ds_multi([v[0], v[1], v[2] + dz]), enc)


# ---------------------------------------------------------------------------------------
# NIfTI


def nifti_targeted(c: Corpus):
    rng = c.rng
    hdr0 = nib.Nifti1Header.from_fileobj(io.BytesIO(c.nii_ct_bytes))
    data0 = np.asarray(c.nii_ct, dtype="<i2").tobytes(order="F")
    vox = len(data0)

    def case(desc, content, gzipped=False, ew=False, name=None, claimed=None, ok=False):
        name = name or ("input.nii.gz" if gzipped else "input.nii")
        c.volume_case("nifti-header", desc,
                      {name: gz(content) if gzipped else content},
                      expect_error_or_warning=ew, claimed_voxel_bytes=claimed, expect_ok=ok)

    def hmod(**fields):
        h = hdr0.copy()
        for k, v in fields.items():
            if isinstance(v, tuple):
                idx, val = v
                arr = h[k]
                arr[idx] = val
                h[k] = arr
            else:
                h[k] = v
        return h

    nan = float("nan")
    inf = float("inf")
    variants = [
        ("dim[0] 0", hmod(dim=(0, 0)), False),
        ("dim[0] -1", hmod(dim=(0, -1)), False),
        ("dim[0] 8", hmod(dim=(0, 8)), False),
        ("dim[0] 100", hmod(dim=(0, 100)), False),
        ("dim[1] 0", hmod(dim=(1, 0)), False),
        ("dim[1] -1", hmod(dim=(1, -1)), False),
        ("dim[1] -32768", hmod(dim=(1, -32768)), False),
        ("dim[1..3] 32767 (70 TB claimed)", hmod(dim=(slice(1, 4), 32767)), False),
        ("dim[3] 32767", hmod(dim=(3, 32767)), False),
        ("dim[4] 32767 with dim[0] 4", hmod(dim=(slice(0, 5), [4, 64, 64, 30, 32767])), False),
        ("dims 1..7 all 32767 with dim[0] 7", hmod(dim=(slice(0, 8), [7] + [32767] * 7)), False),
        ("pixdim[1] NaN", hmod(pixdim=(1, nan)), True),
        ("pixdim[1] Inf", hmod(pixdim=(1, inf)), True),
        ("pixdim[1..3] 0", hmod(pixdim=(slice(1, 4), 0.0)), False),
        ("pixdim[1..3] negative", hmod(pixdim=(slice(1, 4), -2.0)), False),
        ("pixdim[1] 1e-30", hmod(pixdim=(1, 1e-30)), False),
        ("pixdim[1] 1e30", hmod(pixdim=(1, 1e30)), False),
        ("pixdim[0] (qfac) 0", hmod(pixdim=(0, 0.0)), False),
        ("pixdim[0] (qfac) NaN", hmod(pixdim=(0, nan)), False),
        ("datatype 0", hmod(datatype=0), False),
        ("datatype 1 (binary)", hmod(datatype=1, bitpix=1), False),
        ("datatype 9999", hmod(datatype=9999), False),
        ("datatype 128 (RGB24)", hmod(datatype=128, bitpix=24), False),
        ("datatype 2304 (RGBA32)", hmod(datatype=2304, bitpix=32), False),
        ("datatype 32 (complex64)", hmod(datatype=32, bitpix=64), False),
        ("datatype 1536 (float128)", hmod(datatype=1536, bitpix=128), False),
        ("datatype 4 with bitpix 64", hmod(bitpix=64), False),
        ("datatype 64 (float64) on int16 data", hmod(datatype=64, bitpix=64), False),
        ("vox_offset 1e9", hmod(vox_offset=1e9), False),
        ("vox_offset 1e30", hmod(vox_offset=1e30), False),
        ("vox_offset -352", hmod(vox_offset=-352.0), False),
        ("vox_offset NaN", hmod(vox_offset=nan), False),
        ("vox_offset 351 (odd)", hmod(vox_offset=351.0), False),
        ("vox_offset 0", hmod(vox_offset=0.0), False),
        ("vox_offset at the end of the file", hmod(vox_offset=float(352 + vox)), False),
        ("sform NaN", hmod(srow_x=(0, nan), qform_code=0), True),
        ("sform all zero (singular)", hmod(srow_x=(slice(0, 4), 0.0), srow_y=(slice(0, 4), 0.0),
                                          srow_z=(slice(0, 4), 0.0), qform_code=0), True),
        ("sform with parallel axes", hmod(srow_y=(slice(0, 4), [float(x) for x in hdr0["srow_x"]]), qform_code=0), True),
        ("sform translation 1e30", hmod(srow_x=(3, 1e30), qform_code=0), False),
        ("qform quaternion NaN", hmod(quatern_b=nan, quatern_c=nan, quatern_d=nan, sform_code=0), True),
        ("qform quaternion b^2+c^2+d^2 > 1", hmod(quatern_b=1.0, quatern_c=1.0, quatern_d=1.0, sform_code=0), True),
        ("qform offset Inf", hmod(qoffset_x=inf, sform_code=0), True),
        ("qform_code 99, sform_code 99", hmod(qform_code=99, sform_code=99), False),
        ("qform_code -1, sform_code -1", hmod(qform_code=-1, sform_code=-1), False),
        ("qform and sform disagree by 1000 mm", hmod(qoffset_x=float(hdr0["qoffset_x"]) + 1000), True),
        ("scl_slope 0 (means unscaled)", hmod(scl_slope=0.0), False),
        ("scl_slope NaN", hmod(scl_slope=nan), False),
        ("scl_slope Inf", hmod(scl_slope=inf), True),
        ("scl_slope 1e38", hmod(scl_slope=1e38), True),
        ("scl_inter NaN with slope 1", hmod(scl_slope=1.0, scl_inter=nan), True),
        ("sizeof_hdr 0", hmod(sizeof_hdr=0), False),
        ("sizeof_hdr 540 with n+1 magic", hmod(sizeof_hdr=540), False),
        ("magic n+2", hmod(magic=b"n+2"), False),
        ("magic ni1 (header/image pair) in a single file", hmod(magic=b"ni1"), False),
        ("magic garbage", hmod(magic=b"xyz"), False),
        ("dim_info and slice fields garbage", hmod(dim_info=255, slice_start=-5, slice_end=32767, slice_code=99), False),
        ("xyzt_units garbage (255)", hmod(xyzt_units=255), False),
        ("intent_code 1007 (vector) on a 3D volume", hmod(intent_code=1007), False),
    ]
    for desc, h, ew in variants:
        case(desc, nifti_from_header(h, data0), ew=ew)
    for desc, h, ew in variants[:: 3]:
        case(desc + " (.nii.gz)", nifti_from_header(h, data0), gzipped=True, ew=ew)
    # Control and big-endian.
    case("unmodified crop of LCTSC Case_000 (control)", c.nii_ct_bytes, ok=True)
    be = nib.Nifti1Image(c.nii_ct.astype(">i2"), c.nii_affine)
    be.header.set_qform(c.nii_affine, 1)
    be.header.set_sform(c.nii_affine, 1)
    bh = be.header.as_byteswapped(">") if be.header.endianness != ">" else be.header
    bh["vox_offset"] = 352
    case("valid big-endian NIfTI-1", nifti_from_header(bh, c.nii_ct.astype(">i2").tobytes(order="F")), ok=True)
    # Extensions.
    for esize, what in ((0, "size 0 (a parser that adds it never advances)"), (-16, "size -16"),
                        (17, "size 17 (not a multiple of 16)"), (0x7FFFFFF0, "size 2 GB"),
                        (8, "size 8 (smaller than its own header)")):
        h = hmod(vox_offset=float(352 + 32))
        ext = b"\x01\0\0\0" + struct.pack("<ii", esize, 4) + b"\0" * 24
        case(f"extension {what}", nifti_from_header(h, data0, ext=ext))
    # NIfTI-2
    n2 = nib.Nifti2Image(c.nii_ct, c.nii_affine)
    n2.header.set_sform(c.nii_affine, 1)
    h2 = n2.header
    h2["vox_offset"] = 544
    d2 = np.asarray(c.nii_ct, dtype="<i2").tobytes(order="F")
    case("valid NIfTI-2 (README: only NIfTI-1 is read)", bytes(h2.binaryblock) + b"\0" * 4 + d2)
    for dims, what in (([3, 10 ** 12, 1, 1], "dim[1] 1e12"), ([3, 10 ** 6, 10 ** 6, 10 ** 6], "dims 1e6 each"),
                       ([3, -5, 64, 30], "dim[1] -5"), ([3, 2 ** 62, 4, 1], "dim[1] 2^62 (product overflows)")):
        h = h2.copy()
        arr = h["dim"]
        arr[: len(dims)] = dims
        h["dim"] = arr
        case(f"NIfTI-2 with {what}", bytes(h.binaryblock) + b"\0" * 4 + d2)
    h = h2.copy()
    h["vox_offset"] = 2 ** 62
    case("NIfTI-2 with vox_offset 2^62", bytes(h.binaryblock) + b"\0" * 4 + d2)

    # Truncated data / files (nifti-data).
    full = c.nii_ct_bytes
    for cut, what in ((0, "empty file"), (100, "100 bytes (inside the header)"), (348, "header only"),
                      (352, "header and extension flag only"), (352 + vox // 2, "half the voxels"),
                      (len(full) - 1, "one byte short")):
        c.volume_case("nifti-data", f"NIfTI cut to {what}", {"input.nii": full[:cut]}, expect_error_or_warning=cut > 352)
        c.volume_case("nifti-data", f"NIfTI.gz of a file cut to {what}", {"input.nii.gz": gz(full[:cut])},
                      expect_error_or_warning=cut > 352)
    c.volume_case("nifti-data", "NIfTI with 1 MB of trailing garbage",
                  {"input.nii": full + bytes(rng.randrange(256) for _ in range(1 << 20))})
    for shape, what in (((30000, 30000, 30000), "30000^3 int16 in a 400 KB file"),
                        ((32767, 32767, 1), "32767 x 32767 x 1 int16 in a 400 KB file"),
                        ((2048, 2048, 2048), "2048^3 int16 in a 400 KB file")):
        h = hdr0.copy()
        h.set_data_shape(shape)
        c.volume_case("nifti-data", f"NIfTI header claiming {what}", {"input.nii": nifti_from_header(h, data0)})
        c.volume_case("nifti-data", f"NIfTI.gz header claiming {what}", {"input.nii.gz": gz(nifti_from_header(h, data0))})
    # Honest big volumes (peak memory) and gzip bombs.
    for shape in ((512, 512, 512),):
        h = hdr0.copy()
        h.set_data_shape(shape)
        nbytes = int(np.prod(shape)) * 2
        head = bytes(h.binaryblock) + b"\0" * 4
        bomb = gz_member_prefix_zeros(head, nbytes)
        c.volume_case("nifti-gzip", f"honest all-zero {shape} int16 NIfTI.gz ({nbytes >> 20} MB of voxels, gzip 1000:1)",
                      {"input.nii.gz": bomb}, claimed_voxel_bytes=nbytes)
    h = hdr0.copy()
    bomb = gz_member_prefix_zeros(bytes(h.binaryblock) + b"\0" * 4, 1 << 30)
    c.volume_case("nifti-gzip", "gzip bomb: a 64x64x30 header followed by 1 GB of zeros",
                  {"input.nii.gz": bomb}, claimed_voxel_bytes=vox)
    # gzip damage
    z = gz(full)
    body = 10

    def flip_gz(k):
        b = bytearray(z)
        for _ in range(k):
            p = rng.randrange(body, len(b) - 8)
            b[p] ^= 1 << rng.randrange(8)
        return bytes(b)

    gzcases = [
        ("deflate stream with 1 flipped bit", flip_gz(1)),
        ("deflate stream with 16 flipped bits", flip_gz(16)),
        ("wrong CRC32", z[:-8] + struct.pack("<I", (zlib.crc32(full) ^ 1)) + z[-4:]),
        ("wrong ISIZE", z[:-4] + struct.pack("<I", 12345)),
        ("gzip cut in the middle", z[: len(z) // 2]),
        ("gzip cut just after the header", z[:12]),
        ("gzip without its 8-byte trailer", z[:-8]),
        ("trailing garbage after the gzip member", z + b"garbage!" * 8),
        ("two gzip members (legal)", gz(full[:1000]) + gz(full[1000:])),
        ("gzip of gzip", gz(z)),
        ("gzip header with FEXTRA length 65535 and no data", b"\x1f\x8b\x08\x04\0\0\0\0\0\xff\xff\xff" + b"\0" * 10),
        ("gzip header with an unterminated FNAME", b"\x1f\x8b\x08\x08\0\0\0\0\0\xff" + b"A" * 5000),
        ("gzip header, method 7", b"\x1f\x8b\x07" + z[3:]),
        ("plain NIfTI named .nii.gz", full),
    ]
    for desc, data in gzcases:
        c.volume_case("nifti-gzip", desc, {"input.nii.gz": data}, expect_ok="legal" in desc)
    c.volume_case("nifti-gzip", "gzip NIfTI named .nii", {"input.nii": z})
    c.volume_case("nifti-gzip", "named pipe called input.nii.gz", {"input.nii.gz": ("fifo",)})
    c.volume_case("nifti-gzip", "symlink input.nii -> /dev/zero", {"input.nii": ("symlink", "/dev/zero")})
    c.volume_case("nifti-gzip", "symlink input.nii.gz -> /dev/urandom", {"input.nii.gz": ("symlink", "/dev/urandom")})


def gz_member_prefix_zeros(prefix: bytes, nzeros: int, chunk=1 << 20) -> bytes:
    """gzip member whose content is prefix followed by nzeros zero bytes."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = co.compress(prefix) + co.flush(zlib.Z_FULL_FLUSH)
    co2 = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = co2.compress(b"\0" * chunk) + co2.flush(zlib.Z_FULL_FLUSH)
    reps, rest = divmod(nzeros, chunk)
    co3 = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = co3.compress(b"\0" * rest) + co3.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    zero = b"\0" * chunk
    for _ in range(reps):
        crc = zlib.crc32(zero, crc)
    crc = zlib.crc32(b"\0" * rest, crc)
    total = len(prefix) + nzeros
    return (b"\x1f\x8b\x08\x00\0\0\0\0\x02\xff" + first + block * reps + tail +
            struct.pack("<II", crc, total & 0xFFFFFFFF))


# ---------------------------------------------------------------------------------------
# NRRD


def nrrd_targeted(c: Corpus):
    arr, lps = c.nii_ct, lps_affine(c.nii_affine)
    base_fields = nrrd_fields(arr.shape, lps, "short", "raw")
    raw = np.ascontiguousarray(arr.transpose(2, 1, 0)).astype("<i2").tobytes()
    vox = len(raw)

    def attached(desc, fields, data=raw, ew=False, ok=False, magic="NRRD0004", claimed=None):
        c.volume_case("nrrd-header", desc, {"input.nrrd": nrrd_header(fields, magic) + data},
                      expect_error_or_warning=ew, expect_ok=ok, claimed_voxel_bytes=claimed)

    def f(**kw):
        out = base_fields
        for k, v in kw.items():
            out = replace_field(out, k.replace("_", " "), v)
        return out

    attached("attached raw NRRD (control)", base_fields, ok=True)
    attached("attached gzip NRRD (control)", f(encoding="gzip"), gz(raw), ok=True)
    for sizes in ("1000000000000 1 1", "100000 100000 100000", "18446744073709551615 1 1",
                  "4294967296 4294967296 1", "-64 64 30", "0 64 30", "64 64", "64 64 30 1", "64 64 1e3",
                  "64 64 thirty", "", "65536 65536 65536"):
        attached(f"sizes '{sizes}'", f(sizes=sizes))
        attached(f"sizes '{sizes}' (gzip)", f(sizes=sizes, encoding="gzip"), gz(raw))
    for dim in ("0", "-1", "1", "2", "4", "100", "x"):
        attached(f"dimension {dim}", f(dimension=dim))
    for ty in ("float128", "block", "blah", "", "long double", "uchar", "double", "int64"):
        attached(f"type '{ty}'", f(type=ty))
    attached("type block with block size 1e12", f(type="block") + [("block size", "1000000000000")])
    for enc in ("bzip2", "hex", "txt", "zip", "lzma", ""):
        attached(f"encoding '{enc}'", f(encoding=enc))
    attached("encoding ascii with garbage tokens", f(encoding="ascii"), b"1 2 x 4 NaN inf -inf 1e999 " * 100)
    attached("encoding ascii with NaN and Inf values (full count)", f(encoding="ascii"),
             (" ".join(["nan", "inf", "-inf", "1e400"] * (arr.size // 4 + 1)) + "\n").encode())
    attached("encoding ascii with too few numbers", f(encoding="ascii"), b"1 2 3\n")
    attached("encoding hex with odd digits", f(encoding="hex"), b"abc")
    for endian in ("middle", "", "big"):
        attached(f"endian '{endian}'", f(endian=endian))
    attached("no endian field on short data", f(endian=None))
    for sd, ew in (("(nan,0,0) (0,nan,0) (0,0,nan)", True), ("(inf,0,0) (0,1,0) (0,0,1)", True),
                   ("(0,0,0) (0,0,0) (0,0,0)", True), ("(1,0,0) (1,0,0) (0,0,1)", True), ("none none none", True),
                   ("(1,0,0) (0,1,0)", False), ("(1,0) (0,1) (0,0)", False), ("(-1,0,0) (0,-1,0) (0,0,-1)", False),
                   ("(1e308,0,0) (0,1e308,0) (0,0,1e308)", False), ("garbage", False)):
        attached(f"space directions '{sd}'", f(space_directions=sd), ew=ew)
    for so, ew in (("(nan,nan,nan)", True), ("(inf,0,0)", True), ("(1,2)", False), ("none", False),
                   ("(1e308,1e308,1e308)", False)):
        attached(f"space origin '{so}'", f(space_origin=so), ew=ew)
    attached("spacings NaN instead of space directions",
             f(space_directions=None, space_origin=None, space=None) + [("spacings", "nan nan nan")], ew=True)
    attached("spacings 0 0 0 instead of space directions",
             f(space_directions=None, space_origin=None, space=None) + [("spacings", "0 0 0")], ew=True)
    attached("space 'unknown-space'", f(space="unknown-space"))
    attached("byte skip -1 (data at the end)", f() + [("byte skip", "-1")])
    attached("byte skip 1e12", f() + [("byte skip", "1000000000000")])
    attached("byte skip -5", f() + [("byte skip", "-5")])
    attached("line skip 1e9", f() + [("line skip", "1000000000")])
    attached("byte skip -1 with gzip", f(encoding="gzip") + [("byte skip", "-1")], gz(raw))
    attached("magic NRRD9999", base_fields, magic="NRRD9999")
    attached("magic NRRD0001 (old)", base_fields, magic="NRRD0001")
    attached("field without a colon", base_fields + [("!", "kinds domain domain domain")])
    attached("a 2 MB comment line", base_fields + [("#", "x" * (2 << 20))])
    attached("100000 duplicate fields", base_fields + [("content", "x")] * 100_000)
    attached("NUL bytes in the header", replace_field(base_fields, "content", "a\0b"))
    attached("kinds RGB-color on 3 domain axes", f(kinds="RGB-color domain domain"))
    attached("data cut to half", base_fields, raw[: vox // 2], ew=True)
    attached("gzip data cut to half", f(encoding="gzip"), gz(raw)[: len(gz(raw)) // 2])
    attached("gzip data corrupt", f(encoding="gzip"), gz(raw)[:20] + b"\0" * 50 + gz(raw)[70:])
    attached("no blank line after the header (data starts at once)", base_fields, raw)  # header writer adds one
    c.volume_case("nrrd-header", "header ends at EOF without a blank line",
                  {"input.nrrd": nrrd_header(base_fields)[:-1]})
    c.volume_case("nrrd-header", "only the magic line", {"input.nrrd": b"NRRD0004\n"})
    c.volume_case("nrrd-header", "empty .nrrd", {"input.nrrd": b""})
    c.volume_case("nrrd-header", "binary garbage named .nrrd", {"input.nrrd": bytes(c.rng.randrange(256) for _ in range(2048))})
    shape = (512, 512, 512)
    nbytes = int(np.prod(shape)) * 2
    fields = nrrd_fields(shape, lps, "short", "gzip")
    c.volume_case("nrrd-header", f"honest all-zero 512^3 int16 gzip NRRD ({nbytes >> 20} MB of voxels)",
                  {"input.nrrd": nrrd_header(fields) + gz_zeros(nbytes)}, claimed_voxel_bytes=nbytes)
    c.volume_case("nrrd-header", "gzip bomb: 64x64x30 header, 1 GB of zeros",
                  {"input.nrrd": nrrd_header(f(encoding="gzip")) + gz_zeros(1 << 30)}, claimed_voxel_bytes=vox)

    # Detached data files
    hdr_fields = base_fields

    def detached(desc, datafile_field, files, ew=False, ok=False, sizes=None):
        fl = replace_field(hdr_fields, "data file", datafile_field)
        if sizes:
            fl = replace_field(fl, "sizes", sizes)
        allf = {"input.nhdr": nrrd_header(fl)}
        allf.update(files)
        c.volume_case("nrrd-datafile", desc, allf, target="input.nhdr", expect_error_or_warning=ew, expect_ok=ok)

    detached("detached raw (control)", "input.raw", {"input.raw": raw}, ok=True)
    c.volume_case("nrrd-datafile", "detached gzip header with encoding gzip (control)",
                  {"input.nhdr": nrrd_header(replace_field(replace_field(hdr_fields, "encoding", "gzip"),
                                                           "data file", "input.raw.gz")),
                   "input.raw.gz": gz(raw)}, target="input.nhdr", expect_ok=True)
    detached("data file /dev/zero (small sizes)", "/dev/zero", {})
    detached("data file /dev/zero (sizes 100000^3)", "/dev/zero", {}, sizes="100000 100000 100000")
    detached("data file /dev/zero (sizes 4096^3)", "/dev/zero", {}, sizes="4096 4096 4096")
    detached("data file /dev/urandom", "/dev/urandom", {})
    detached("data file is a named pipe", "pipe.raw", {"pipe.raw": ("fifo",)})
    detached("data file is a symlink to /dev/zero", "zero.raw", {"zero.raw": ("symlink", "/dev/zero")})
    detached("data file is a folder", "folder.raw", {"folder.raw": ("dir",)})
    detached("data file missing", "missing.raw", {})
    detached("data file is the header itself", "input.nhdr", {})
    detached("data file ../../../../../../../../etc/passwd", "../../../../../../../../etc/passwd", {})
    detached("data file ../outside/data.raw (outside the header's folder)", "../outside/data.raw",
             {"../outside/data.raw": raw})
    detached("data file absolute path /etc/passwd", "/etc/passwd", {})
    detached("data file name with a NUL", "in\0put.raw", {"input.raw": raw})
    detached("data file empty name", "", {"input.raw": raw})
    detached("data file too short", "input.raw", {"input.raw": raw[: vox // 3]}, ew=True)
    detached("data file with 1 GB pattern range", "slice%03d.raw 0 1000000000 1", {"slice000.raw": raw})
    detached("data file pattern with step 0", "slice%03d.raw 0 10 0", {"slice000.raw": raw})
    detached("data file pattern %n", "slice%n%n%n.raw 0 2 1", {})
    fl = replace_field(hdr_fields, "data file", "LIST")
    c.volume_case("nrrd-datafile", "data file LIST with 100000 entries",
                  {"input.nhdr": nrrd_header(fl)[:-1] + ("\n".join(["input.raw"] * 100_000) + "\n").encode(),
                   "input.raw": raw}, target="input.nhdr")
    fl = replace_field(hdr_fields, "data file", "LIST")
    c.volume_case("nrrd-datafile", "data file LIST naming /dev/zero and a pipe",
                  {"input.nhdr": nrrd_header(fl)[:-1] + b"/dev/zero\npipe.raw\n", "pipe.raw": ("fifo",)},
                  target="input.nhdr")
    # Real CIP NRRDs, unmodified, as .nrrd attached gzip
    for name in ("ct-64.nrrd", "wholeLung-64.nrrd", "lm-64.nrrd"):
        c.volume_case("codec-baseline", f"unmodified real {name}", {name: c.link("nrrd", name)}, expect_ok=True)


# ---------------------------------------------------------------------------------------
# Label maps: compare / quantify / export-seg


def label_geometry_cases(c: Corpus):
    # Pair A: NIfTI crop of LCTSC (CT + lungs). Pair B: CIP NRRDs (CT + whole lung) and the
    # CIP DICOM series for export-seg.
    ct_a, lab_a, aff_a = c.nii_ct, c.nii_lab, c.nii_affine
    ct_b, lab_b, lps_b = c.cip_ct, c.cip_lung, c.cip_lps

    def ras_variant(aff, kind):
        a = aff.copy()
        sp = np.linalg.norm(a[:3, :3], axis=0)
        if kind == "same":
            return a, False, False
        if kind == "origin+1000x":
            a[0, 3] += 1000
            return a, False, True
        if kind == "origin+1000z":
            a[2, 3] += 1000
            return a, False, True
        if kind == "origin-1000all":
            a[:3, 3] -= 1000
            return a, False, True
        if kind == "origin+half-voxel":
            a[0, 3] += sp[0] / 2
            return a, False, True
        if kind == "origin+1e-4mm":
            a[0, 3] += 1e-4
            return a, False, False
        if kind == "flip-x":
            a[:3, 0] *= -1
            return a, False, True
        if kind == "flip-x-data-flipped":  # same physical content
            a[:3, 3] = a[:3, 3] + a[:3, 0] * (lab_a.shape[0] - 1)
            a[:3, 0] *= -1
            return a, True, None
        if kind == "swap-xy":
            a[:3, [0, 1]] = a[:3, [1, 0]]
            return a, False, True
        if kind == "rotate-30z":
            t = math.radians(30)
            r = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
            a[:3, :3] = r @ a[:3, :3]
            return a, False, True
        if kind == "rotate-2z":
            t = math.radians(2)
            r = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
            a[:3, :3] = r @ a[:3, :3]
            return a, False, True
        if kind == "spacing-x2":
            a[:3, :3] *= 2
            return a, False, True
        if kind == "spacing-z+1%":
            a[:3, 2] *= 1.01
            return a, False, True
        if kind == "origin-nan":
            a[0, 3] = float("nan")
            return a, False, True
        if kind == "direction-nan":
            a[0, 0] = float("nan")
            return a, False, True
        raise ValueError(kind)

    kinds = ["same", "origin+1000x", "origin+1000z", "origin-1000all", "origin+half-voxel", "origin+1e-4mm",
             "flip-x", "flip-x-data-flipped", "swap-xy", "rotate-30z", "rotate-2z", "spacing-x2",
             "spacing-z+1%", "origin-nan", "direction-nan"]
    for kind in kinds:
        # Pair A, NIfTI.
        a, flip, ew = ras_variant(aff_a, kind)
        lab = lab_a[::-1] if flip else lab_a
        test = gz(nifti_with_affine(np.ascontiguousarray(lab), a))
        family = "labels-equivalent" if ew is None else "labels-geometry"
        cid, d = c.new_case(family)
        put(d / "ct.nii.gz", ("link", c.base / "nii" / "ct.nii.gz"))
        put(d / "reference.nii.gz", ("link", c.base / "nii" / "lungs.nii.gz"))
        put(d / "test.nii.gz", test)
        cmds = [["compare", "{case}/reference.nii.gz", "{case}/test.nii.gz"],
                ["compare", "{case}/test.nii.gz", "{case}/reference.nii.gz", "--json"],
                ["quantify", "{case}/ct.nii.gz", "{case}/test.nii.gz"],
                ["compare", "{case}/reference.nii.gz", "{case}/test.nii.gz", "--ct", "{case}/ct.nii.gz"]]
        c.finish(cid, d, family, f"LCTSC crop: test/label map NIfTI '{kind}' against the reference grid",
                 ["test.nii.gz"], cmds, expect_error_or_warning=bool(ew), expect_ok=(kind in ("same",)))
        # Pair B, NRRD; with export-seg onto the DICOM series.
        ras_b = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_b
        a, flip, ew = ras_variant(ras_b, kind)
        lab = lab_b[::-1] if flip else lab_b
        if flip:  # the flip was computed with pair A's shape; redo with pair B's
            a = ras_b.copy()
            a[:3, 3] = a[:3, 3] + a[:3, 0] * (lab_b.shape[0] - 1)
            a[:3, 0] *= -1
        data, _ = nrrd_volume_bytes(np.ascontiguousarray(lab), lps_affine(a), "gzip")
        family = "labels-equivalent" if ew is None else "labels-geometry"
        cid, d = c.new_case(family)
        put(d / "test.nrrd", data)
        cmds = [["compare", "{corpus}/_base/nrrd/wholeLung-64.nrrd", "{case}/test.nrrd"],
                ["quantify", "{corpus}/_base/nrrd/ct-64.nrrd", "{case}/test.nrrd"],
                ["quantify", "{corpus}/_base/cip", "{case}/test.nrrd"],
                ["export-seg", "--ct", "{corpus}/_base/cip", "--labels", "{case}/test.nrrd", "--output", "{tmp}/seg.dcm"]]
        c.finish(cid, d, family, f"CIP: lung mask NRRD '{kind}' against the CIP CT grid (NRRD and DICOM)",
                 ["test.nrrd"], cmds, expect_error_or_warning=bool(ew), expect_ok=(kind == "same"))
    # Dimension mismatch and label value oddities.
    def lab_case(desc, arr, aff=aff_a, ew=False, family="labels-values"):
        img = nib.Nifti1Image(arr, aff)
        img.header.set_qform(aff, 1)
        img.header.set_sform(aff, 1)
        cid, d = c.new_case(family)
        put(d / "ct.nii.gz", ("link", c.base / "nii" / "ct.nii.gz"))
        put(d / "reference.nii.gz", ("link", c.base / "nii" / "lungs.nii.gz"))
        put(d / "test.nii.gz", gz(img.to_bytes()))
        cmds = [["compare", "{case}/reference.nii.gz", "{case}/test.nii.gz"],
                ["quantify", "{case}/ct.nii.gz", "{case}/test.nii.gz"]]
        c.finish(cid, d, family, desc, ["test.nii.gz"], cmds, expect_error_or_warning=ew)

    lab_case("label map one slice shorter", np.ascontiguousarray(lab_a[:, :, :-1]), ew=True, family="labels-geometry")
    lab_case("label map two slices longer", np.ascontiguousarray(np.concatenate([lab_a, lab_a[:, :, :2]], axis=2)),
             ew=True, family="labels-geometry")
    rng = np.random.default_rng(c.seed)
    lab_case("every voxel a different label (int32)", np.arange(lab_a.size, dtype=np.int32).reshape(lab_a.shape))
    lab_case("65535 distinct labels (uint16)", (np.arange(lab_a.size) % 65536).astype(np.uint16).reshape(lab_a.shape))
    lab_case("negative labels (int16)", (lab_a.astype(np.int16) * -1))
    lab_case("labels 4e9 (uint32)", (lab_a.astype(np.uint32) * 4_000_000_000))
    lab_case("float labels 0.5", (lab_a.astype(np.float32) * 0.5), ew=True)
    lab_case("float labels NaN outside the lungs",
             np.where(lab_a > 0, 1.0, np.nan).astype(np.float32), ew=True)
    lab_case("random labels 0..3 everywhere", rng.integers(0, 4, lab_a.shape).astype(np.uint8))
    lab_case("empty label map", np.zeros_like(lab_a))
    lab_case("float64 labels 1e300", lab_a.astype(np.float64) * 1e300, ew=True)
    # compare --batch with a hostile pair of folders
    cid, d = c.new_case("labels-values")
    put(d / "ref" / "a.nii.gz", ("link", c.base / "nii" / "lungs.nii.gz"))
    put(d / "test" / "a.nii.gz", ("fifo",))
    put(d / "ref" / "b.nii.gz", ("link", c.base / "nii" / "lungs.nii.gz"))
    put(d / "test" / "b.nii.gz", ("symlink", "/dev/zero"))
    c.finish(cid, d, "labels-values", "compare --batch where the test files are a pipe and /dev/zero", ["test"],
             [["compare", "--batch", "{case}/ref", "{case}/test", "-o", "{tmp}/batch.csv"]])


# ---------------------------------------------------------------------------------------
# Random mutations


FIELD_VALUES = {
    "DS": ["NaN", "nan", "Inf", "-Inf", "1e308", "-1e308", "1e-308", "0", "-0", "-1", "1e30", "", "abc",
           "1\\", "\\\\\\", "0\\0", "-1\\-1", "1e6\\1e6\\1e6", "NaN\\NaN\\NaN", "1\\0\\0\\0\\1\\0",
           "0\\0\\0\\0\\0\\0", "1" * 64, "0.001\\0.001", "1e-9"],
    "IS": ["0", "-1", "2147483647", "-2147483648", "4294967296", "1e30", "99999999999", "", "x", "1.5",
           "+1", "1000000000", "65536"],
    "US": [0, 1, 2, 3, 7, 8, 12, 15, 16, 17, 32, 33, 64, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF],
    "UI": ["", "1.2.3", "1.2.840.10008.1.2.4.999", "x" * 64, "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80"],
    "CS": ["", "MONOCHROME1", "RGB", "PALETTE COLOR", "YBR_FULL", "garbage", "MONOCHROME2\\MONOCHROME1"],
}
FIELD_TAGS = [
    (0x00280010, "US"), (0x00280011, "US"), (0x00280100, "US"), (0x00280101, "US"), (0x00280102, "US"),
    (0x00280103, "US"), (0x00280002, "US"), (0x00280006, "US"), (0x00280004, "CS"), (0x00280008, "IS"),
    (0x00280030, "DS"), (0x00200032, "DS"), (0x00200037, "DS"), (0x00180050, "DS"), (0x00180088, "DS"),
    (0x00281053, "DS"), (0x00281052, "DS"), (0x00281050, "DS"), (0x00281051, "DS"), (0x00200013, "IS"),
    (0x00201041, "DS"), (0x00181120, "DS"), (0x0020000E, "UI"), (0x00200052, "UI"), (0x00080060, "CS"),
    (0x00080005, "CS"), (0x00080016, "UI"),
]


def random_field_value(rng, vr, enc):
    v = rng.choice(FIELD_VALUES[vr])
    if vr == "US":
        return struct.pack("<H" if enc[1] else ">H", v), str(v)
    return v, repr(v)


def random_cases(c: Corpus, n_total: int):
    rng = c.rng
    single_sources = {
        "ct-small-single": c.base / "single" / "ct-small-single.dcm",
        "cip-slice": c.base / "cip" / c.series["cip"][40],
        "lidc-slice": c.base / "lidc" / c.series["lidc"][3],
        "dcmqi-slice": c.base / "dcmqi" / c.series["dcmqi"][1],
        "tilt-slice": c.base / "tilt" / c.series["tilt"][10],
        "minimal-header": c.base / "minimal" / c.series["minimal"][0],
    }
    for name, p in c.pyd.items():
        if name not in ("693_J2KR.dcm",):
            single_sources[name] = p
    names = sorted(single_sources)
    blobs = {k: single_sources[k].read_bytes() for k in names}
    layouts = {k: element_layout(blobs[k])[0] for k in names}
    codec_sources = [k for k in names if any(s in k for s in ("RLE", "jpeg", "JPEG", "JPG", "jp2k", "JLS",
                                                                "J2K", "JPEG2000"))]
    seg = c.seg_bytes
    seg_layout = element_layout(seg)[0]
    nii = c.nii_ct_bytes
    nii_gz = gz(nii)
    lungs_gz = c.lungs_real
    arr, lps = c.nii_ct, lps_affine(c.nii_affine)
    nrrd_raw, _ = nrrd_volume_bytes(arr, lps, "raw")
    nrrd_gz, _ = nrrd_volume_bytes(arr, lps, "gzip")
    nhdr, nraw = nrrd_volume_bytes(arr, lps, "raw", detached="input.raw")
    cip_nrrd = (c.base / "nrrd" / "ct-64.nrrd").read_bytes()

    weights = [
        ("dicom-bytes", 30), ("dicom-series-bytes", 6), ("dicom-field", 14), ("dicom-codec-bytes", 8),
        ("seg-random", 10), ("nifti-random", 14), ("nrrd-random", 12), ("dicomdir-random", 2),
        ("labels-random", 4),
    ]
    total_w = sum(w for _, w in weights)
    plan = []
    for fam, w in weights:
        plan += [fam] * max(1, round(n_total * w / total_w))
    plan = plan[:max(n_total, len(weights))]

    cip = c.series["cip"]
    dd_files = {f"disc/IMAGES/{n[:-4]}": c.link("cip", n) for n in cip}
    dd_bytes = dicomdir_bytes([["IMAGES", n[:-4]] for n in cip])

    for fam in plan:
        if fam == "dicom-bytes":
            k = rng.choice(names)
            other = blobs[rng.choice(names)]
            data, how = mutate_bytes(rng, blobs[k], layouts[k], other)
            c.volume_case(fam, f"{k}: {how}", {"input.dcm": data})
        elif fam == "dicom-series-bytes":
            name = rng.choice(cip)
            src = (c.base / "cip" / name).read_bytes()
            data, how = mutate_bytes(rng, src, element_layout(src)[0])
            c.volume_case(fam, f"cip series, {name}: {how}", c.series_files("cip", {name: data}), target="series")
        elif fam == "dicom-field":
            k = rng.choice([n for n in names if n != "liver.dcm"] + ["cip-series"] * 4)
            tag, vr = rng.choice(FIELD_TAGS)
            if k == "cip-series":
                scope = rng.choice(["one", "all"])
                targets = [rng.choice(cip)] if scope == "one" else cip
                rep, desc = {}, None
                val = None
                for name in targets:
                    ds = c.series_ds("cip", name)
                    enc = encoding_of(ds)
                    if val is None:
                        val, desc = random_field_value(rng, vr, enc)
                    set_raw(ds, tag, vr, val, enc)
                    rep[name] = dcm_bytes(ds)
                c.volume_case(fam, f"cip series, ({tag >> 16:04X},{tag & 0xFFFF:04X}) = {desc} in {scope} file(s)",
                              c.series_files("cip", rep), target="series")
            else:
                ds = read_dcm(blobs[k])
                enc = encoding_of(ds)
                val, desc = random_field_value(rng, vr, enc)
                set_raw(ds, tag, vr, val, enc)
                try:
                    data = dcm_bytes(ds)
                except Exception as e:  # pydicom refuses some combinations
                    data, desc = blobs[k], f"{desc} (not written: {type(e).__name__})"
                c.volume_case(fam, f"{k}: ({tag >> 16:04X},{tag & 0xFFFF:04X}) = {desc}", {"input.dcm": data})
        elif fam == "dicom-codec-bytes":
            k = rng.choice(codec_sources)
            ds = read_dcm(blobs[k])
            try:
                frames = frames_of(ds)
            except Exception:
                frames = [bytes(ds.PixelData)]
            i = rng.randrange(len(frames))
            f, how = mutate_bytes(rng, frames[i], hot=256)
            frames[i] = f
            c.volume_case(fam, f"{k}: frame {i}: {how}", {"input.dcm": with_pixel_bytes(ds, encaps(frames), True)})
        elif fam == "seg-random":
            if rng.random() < 0.6:
                data, how = mutate_bytes(rng, seg, seg_layout, hot=8192)
            else:
                ds = read_dcm(seg)
                enc = encoding_of(ds)
                how = random_seg_field(rng, ds, enc)
                data = dcm_bytes(ds)
            seg_case(c, fam, f"SEG: {how}", data)
        elif fam == "nifti-random":
            sub = rng.choice(["nii", "nii", "nii.gz", "inner-gz", "field", "lungs.gz"])
            if sub == "nii":
                data, how = mutate_bytes(rng, nii, hot=352)
                c.volume_case(fam, f".nii: {how}", {"input.nii": data})
            elif sub == "nii.gz":
                data, how = mutate_bytes(rng, nii_gz, hot=512)
                c.volume_case(fam, f".nii.gz bytes: {how}", {"input.nii.gz": data})
            elif sub == "lungs.gz":
                data, how = mutate_bytes(rng, lungs_gz, hot=512)
                c.volume_case(fam, f"real Case_000_lungs.nii.gz bytes: {how}", {"input.nii.gz": data})
            elif sub == "inner-gz":
                data, how = mutate_bytes(rng, nii, hot=352)
                c.volume_case(fam, f".nii.gz, inner file: {how}", {"input.nii.gz": gz(data)})
            else:
                data, how = random_nifti_field(rng, c)
                c.volume_case(fam, f".nii header field: {how}", {"input.nii": data})
        elif fam == "nrrd-random":
            sub = rng.choice(["raw", "gzip", "detached", "lines", "lines", "cip"])
            if sub == "raw":
                data, how = mutate_bytes(rng, nrrd_raw, hot=400)
                c.volume_case(fam, f"attached raw NRRD: {how}", {"input.nrrd": data})
            elif sub == "gzip":
                data, how = mutate_bytes(rng, nrrd_gz, hot=500)
                c.volume_case(fam, f"attached gzip NRRD: {how}", {"input.nrrd": data})
            elif sub == "cip":
                data, how = mutate_bytes(rng, cip_nrrd, hot=700)
                c.volume_case(fam, f"real ct-64.nrrd: {how}", {"input.nrrd": data})
            elif sub == "detached":
                if rng.random() < 0.6:
                    h, how = mutate_bytes(rng, nhdr, hot=len(nhdr))
                    files = {"input.nhdr": h, "input.raw": nraw}
                else:
                    r, how = mutate_bytes(rng, nraw, hot=64)
                    files = {"input.nhdr": nhdr, "input.raw": r}
                    how = "data file: " + how
                c.volume_case(fam, f"detached NRRD: {how}", files, target="input.nhdr")
            else:
                data, how = mutate_nrrd_lines(rng, arr, lps)
                c.volume_case(fam, f"NRRD header lines: {how}", {"input.nrrd": data})
        elif fam == "dicomdir-random":
            data, how = mutate_bytes(rng, dd_bytes, element_layout(dd_bytes)[0], hot=len(dd_bytes))
            files = dict(dd_files)
            files["disc/DICOMDIR"] = data
            c.volume_case(fam, f"DICOMDIR: {how}", files, target="disc/DICOMDIR")
        elif fam == "labels-random":
            random_label_case(c, rng)


def random_seg_field(rng, ds, enc):
    choice = rng.randrange(8)
    pf = ds.PerFrameFunctionalGroupsSequence
    if choice == 0:
        k = rng.randrange(len(pf))
        v = rng.choice(FIELD_VALUES["DS"])
        set_raw(pf[k].PlanePositionSequence[0], 0x00200032, "DS", v, enc)
        return f"frame {k} ImagePositionPatient = {v!r}"
    if choice == 1:
        k = rng.randrange(len(pf))
        v = rng.choice(FIELD_VALUES["US"])
        set_us(pf[k].SegmentIdentificationSequence[0], 0x0062000B, v, enc)
        return f"frame {k} ReferencedSegmentNumber = {v}"
    if choice == 2:
        k = rng.randrange(len(ds.SegmentSequence))
        v = rng.choice(FIELD_VALUES["US"])
        set_us(ds.SegmentSequence[k], 0x00620004, v, enc)
        return f"segment {k} SegmentNumber = {v}"
    if choice == 3:
        v = rng.choice(FIELD_VALUES["IS"])
        set_raw(ds, 0x00280008, "IS", v, enc)
        return f"NumberOfFrames = {v!r}"
    if choice == 4:
        tag = rng.choice([0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280102])
        v = rng.choice(FIELD_VALUES["US"])
        set_us(ds, tag, v, enc)
        return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) = {v}"
    if choice == 5:
        v = rng.choice(FIELD_VALUES["DS"])
        set_raw(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0], 0x00280030, "DS", v, enc)
        return f"shared PixelSpacing = {v!r}"
    if choice == 6:
        v = rng.choice(FIELD_VALUES["DS"])
        set_raw(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0], 0x00200037, "DS", v, enc)
        return f"shared ImageOrientationPatient = {v!r}"
    v = rng.choice(FIELD_VALUES["UI"])
    set_raw(ds, 0x00200052, "UI", v, enc)
    return f"FrameOfReferenceUID = {v!r}"


def random_nifti_field(rng, c: Corpus):
    h = nib.Nifti1Header.from_fileobj(io.BytesIO(c.nii_ct_bytes))
    data = np.asarray(c.nii_ct, dtype="<i2").tobytes(order="F")
    field = rng.choice(["dim", "pixdim", "datatype", "bitpix", "vox_offset", "scl_slope", "scl_inter",
                        "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x",
                        "srow_x", "srow_y", "srow_z", "sizeof_hdr", "dim_info", "xyzt_units", "intent_code"])
    ints = [0, 1, -1, 2, 3, 7, 8, 16, 255, 256, 32767, -32768, 1024, 2048, 65535]
    floats = [0.0, -0.0, 1.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e-38, 1e38, 1e30, 0.001,
              352.0, 1e9]
    arr = h[field]
    if arr.shape:
        idx = rng.randrange(arr.shape[0])
        val = rng.choice(floats if arr.dtype.kind == "f" else ints)
        try:
            a = arr.copy()
            a[idx] = val
            h[field] = a
        except (OverflowError, ValueError):
            return nifti_from_header(h, data), f"{field}[{idx}] unchanged"
        return nifti_from_header(h, data), f"{field}[{idx}] = {val}"
    val = rng.choice(floats if arr.dtype.kind == "f" else ints)
    try:
        h[field] = val
    except (OverflowError, ValueError):
        return nifti_from_header(h, data), f"{field} unchanged"
    return nifti_from_header(h, data), f"{field} = {val}"


NRRD_TOKENS = ["nan", "inf", "-1", "0", "1e12", "18446744073709551616", "(nan,nan,nan)", "()", "(,,)",
               "none", "x", "", "4294967295", "(1e308,0,0) (0,1e308,0) (0,0,1e308)", "gzip", "raw", "ascii",
               "hex", "bzip2", "big", "little", "/dev/zero", "..", "short", "double", "block", "64 64",
               "64 64 30 2", "0 0 0"]


def mutate_nrrd_lines(rng, arr, lps):
    fields = nrrd_fields(arr.shape, lps, "short", rng.choice(["raw", "gzip"]))
    raw = np.ascontiguousarray(arr.transpose(2, 1, 0)).astype("<i2").tobytes()
    op = rng.choice(["drop", "dup", "value", "value", "add", "swap"])
    if op == "drop":
        k = rng.randrange(len(fields))
        how = f"drop '{fields[k][0]}'"
        fields = fields[:k] + fields[k + 1:]
    elif op == "dup":
        k = rng.randrange(len(fields))
        v = rng.choice(NRRD_TOKENS)
        how = f"add a second '{fields[k][0]}: {v}'"
        fields = fields + [(fields[k][0], v)]
    elif op == "value":
        k = rng.randrange(len(fields))
        v = rng.choice(NRRD_TOKENS)
        how = f"'{fields[k][0]}' = '{v}'"
        fields = fields[:k] + [(fields[k][0], v)] + fields[k + 1:]
    elif op == "add":
        key = rng.choice(["byte skip", "line skip", "data file", "block size", "spacings", "thicknesses",
                          "axis mins", "axis maxs", "measurement frame", "centerings"])
        v = rng.choice(NRRD_TOKENS)
        how = f"add '{key}: {v}'"
        fields = fields + [(key, v)]
    else:
        i, j = rng.randrange(len(fields)), rng.randrange(len(fields))
        fields = list(fields)
        fields[i], fields[j] = (fields[i][0], fields[j][1]), (fields[j][0], fields[i][1])
        how = f"values of '{fields[i][0]}' and '{fields[j][0]}' swapped"
    enc = dict(fields).get("encoding", "raw")
    data = gz(raw) if enc == "gzip" else raw
    return nrrd_header(fields) + data, how


def random_label_case(c: Corpus, rng):
    a = c.nii_affine.copy()
    sp = np.linalg.norm(a[:3, :3], axis=0)
    kind = rng.choice(["shift", "rotate", "scale"])
    if kind == "shift":
        axis = rng.randrange(3)
        mm = rng.choice([1e-5, 1e-3, 0.1, 0.5, 1.0, 10.0, 1000.0, -1000.0]) * (sp[axis] if rng.random() < 0.5 else 1)
        a[axis, 3] += mm
        ew = abs(mm) >= 0.1 * sp[axis]  # a tenth of a voxel or more
        how = f"origin axis {axis} moved {mm:g} mm"
    elif kind == "rotate":
        deg = rng.choice([0.001, 0.1, 1.0, 5.0, 45.0, 90.0, 180.0])
        t = math.radians(deg)
        r = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
        a[:3, :3] = r @ a[:3, :3]
        ew = deg >= 1.0
        how = f"direction rotated {deg:g} degrees about z"
    else:
        f = rng.choice([0.5, 0.99, 0.9999, 1.0001, 1.01, 2.0])
        axis = rng.randrange(3)
        a[:3, axis] *= f
        ew = abs(f - 1) >= 0.01
        how = f"spacing axis {axis} x{f:g}"
    img = nib.Nifti1Image(c.nii_lab, a)
    img.header.set_qform(a, 1)
    img.header.set_sform(a, 1)
    cid, d = c.new_case("labels-random")
    put(d / "ct.nii.gz", ("link", c.base / "nii" / "ct.nii.gz"))
    put(d / "reference.nii.gz", ("link", c.base / "nii" / "lungs.nii.gz"))
    put(d / "test.nii.gz", gz(img.to_bytes()))
    cmds = [["compare", "{case}/reference.nii.gz", "{case}/test.nii.gz"],
            ["quantify", "{case}/ct.nii.gz", "{case}/test.nii.gz"]]
    c.finish(cid, d, "labels-random", f"label map {how} (expect a warning or error: {ew})", ["test.nii.gz"], cmds,
             expect_error_or_warning=ew)


# ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="../shared/data")
    ap.add_argument("--out", required=True, help="corpus folder (emptied first; outside the repository)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=2000, help="approximate total number of cases")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    data = Path(args.data).resolve()
    repo = Path(__file__).resolve().parent.parent
    if out == repo or repo in out.parents:
        sys.exit(f"fuzz_corpus: {out} is inside the repository {repo}; choose a folder outside it")
    if out.exists():
        if not (out / ".fuzz_corpus").exists() and any(out.iterdir()):
            sys.exit(f"fuzz_corpus: {out} exists and is not a corpus made by this script; remove it first")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ".fuzz_corpus").write_text("made by scripts/fuzz_corpus.py\n")
    t0 = time.time()
    c = Corpus(out, data, args.seed)
    c.prepare_base()
    dicom_targeted(c)
    seg_targeted(c)
    nifti_targeted(c)
    nrrd_targeted(c)
    label_geometry_cases(c)
    targeted = len(c.cases)
    random_cases(c, max(0, args.count - targeted))
    families = {}
    for m in c.cases:
        families[m["family"]] = families.get(m["family"], 0) + 1
    size = 0
    for root, _, files in os.walk(out):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                st = os.stat(p)
                size += st.st_blocks * 512 if st.st_nlink == 1 else 0
    # hard links counted once: count the base separately
    base = sum(os.stat(os.path.join(r, f)).st_size for r, _, fs in os.walk(out / "_base") for f in fs)
    runs = sum(len(m["commands"]) for m in c.cases)
    summary = {"seed": args.seed, "count": len(c.cases), "targeted": targeted, "random": len(c.cases) - targeted,
               "runs": runs, "families": dict(sorted(families.items())), "data": str(data),
               "disk_bytes_approx": size + base}
    (out / "corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{len(c.cases)} cases ({targeted} targeted, {len(c.cases) - targeted} random), {runs} runs, "
          f"~{(size + base) / 1e6:.0f} MB on disk, {time.time() - t0:.0f} s -> {out}")
    for fam, n in sorted(families.items()):
        print(f"  {fam:22s} {n}")


if __name__ == "__main__":
    main()
