"""Synthetic, honest registration benchmark on real CT (issue: longitudinal registration).

For each LCTSC case (real CT + lung mask from ../shared/data/lctsc256):
  baseline (moving) = the real CT with synthetic GGO / consolidation lesions inserted in the lungs;
  follow-up (fixed) = baseline resampled through a KNOWN deformation T of a different model than a
  B-spline (diffeomorphic exp of a smoothed random velocity field + breathing-like motion that slides
  against the chest wall + a small rigid part), with lesion changes (growth, shrinkage,
  GGO->consolidation, a new and a resolved lesion) applied in the follow-up frame, plus N(0, 20 HU).
Then pulmo register (+ pulmo progress), itk-elastix (affine + B-spline, lung parameter set) and the
identity are scored against the truth: TRE over lung voxels and near lesions, folding, warped-lung
Dice and progression-map Dice. Results: .bench/register/results.{json,md}.

Conventions (verified with SimpleITK 2.5.7 / itk 5.4.7): displacement fields are ITK/SimpleITK
vector images on the FIXED grid, component order (x, y, z) in physical LPS mm, and the fixed point x
maps to the moving point x + d(x) (what sitk.DisplacementFieldTransform uses). numpy arrays from
sitk.GetArrayFromImage are (z, y, x, 3). SimpleITK writes such a field to NIfTI as a 5-D image
(dim = [5, nx, ny, nz, 1, 3]), intent_code 1007 (NIFTI_INTENT_VECTOR), components stored as LPS
values unchanged. Beware: with intent_code 1006 (NIFTI_INTENT_DISPVECT) ITK treats the stored
vectors as RAS and negates x and y on read; a 4-D file (dim[4] = 3) reads as a 4-D scalar image.

Usage: scripts/bench_register.sh [--cases Case_007,Case_008,Case_000] [--methods pulmo,elastix,identity]
       [--seed 1] [--threads 2] [--speed] [--regen]
Env: PULMO_BIN (default target/release/pulmo).
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy")  # itk + numpy 2
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".bench" / "register"
GEN_VERSION = 4  # bump when the synthetic generation changes (cached cases are regenerated)

# ----------------------------------------------------------------------------------------------
# geometry helpers (numpy arrays are (z, y, x); vectors are (x, y, z) physical LPS mm)


class Geom:
    def __init__(self, img):
        self.size = np.array(img.GetSize())  # x, y, z
        self.spacing = np.array(img.GetSpacing(), dtype=np.float64)
        self.origin = np.array(img.GetOrigin(), dtype=np.float64)
        self.D = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
        self.Dinv = np.linalg.inv(self.D)
        self.shape = tuple(int(s) for s in self.size[::-1])  # z, y, x
        self.zyx_spacing = tuple(self.spacing[::-1])
        if abs(self.D[2, 2]) < 0.9:
            raise SystemExit("expected axial images (array axis 0 = patient z)")

    def phys(self, ks=slice(None), js=slice(None), is_=slice(None)):
        """Physical coordinates (3, nk, nj, ni) float32 of a box of voxels."""
        k = np.arange(self.shape[0])[ks].astype(np.float64)
        j = np.arange(self.shape[1])[js].astype(np.float64)
        i = np.arange(self.shape[2])[is_].astype(np.float64)
        M = self.D * self.spacing[None, :]  # column c = step of index c
        out = np.empty((3, len(k), len(j), len(i)), np.float32)
        for c in range(3):
            out[c] = (self.origin[c] + M[c, 2] * k[:, None, None] + M[c, 1] * j[None, :, None]
                      + M[c, 0] * i[None, None, :])
        return out

    def to_kji(self, p):
        """Physical (3, ...) -> continuous array index (3, ...) in (k, j, i) order."""
        q = np.tensordot(self.Dinv, p.reshape(3, -1) - self.origin[:, None].astype(np.float32), axes=1)
        q /= self.spacing[:, None]
        return q[::-1].reshape(p.shape).astype(np.float32)


def warp(arr, kji, order, chunk=16):
    """Sample arr at continuous indices kji (3, nz, ny, nx), edge values outside, by z-chunks."""
    out = np.empty(kji.shape[1:], np.float32 if order > 0 else arr.dtype)
    for z0 in range(0, kji.shape[1], chunk):
        c = kji[:, z0:z0 + chunk].astype(np.float64)
        out[z0:z0 + chunk] = ndi.map_coordinates(arr, c, order=order, mode="nearest", prefilter=False)
    return out


def to_img(arr, ref, vector=False):
    img = sitk.GetImageFromArray(arr, isVector=vector)
    img.SetSpacing(ref.GetSpacing())
    img.SetOrigin(ref.GetOrigin())
    img.SetDirection(ref.GetDirection())
    return img


def smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def dice(a, b):
    sa, sb = int(a.sum()), int(b.sum())
    if sa + sb == 0:
        return None
    return 2.0 * int(np.logical_and(a, b).sum()) / (sa + sb)


# ----------------------------------------------------------------------------------------------
# synthetic lesions


class Lesion:
    def __init__(self, rng, center, radius, kind, role, lid):
        self.center = np.asarray(center, np.float64)
        self.radius = float(radius)
        self.kind = kind  # "ggo" | "cons"
        self.role = role
        self.id = lid
        self.target = float(rng.uniform(-650, -400) if kind == "ggo" else rng.uniform(-50, 40))
        s0 = radius / 1.1774  # a single lobe's g = 0.5 iso-surface at `radius`
        lobes = [(np.zeros(3), s0 * rng.uniform(0.8, 1.2, 3), 1.0)]
        for _ in range(int(rng.integers(2, 5))):
            u = rng.standard_normal(3)
            u /= np.linalg.norm(u)
            lobes.append((u * radius * rng.uniform(0.4, 0.8),
                          np.full(3, radius * rng.uniform(0.3, 0.55) / 1.1774), rng.uniform(0.6, 1.0)))
        self.lobes = lobes

    def extent(self, scale=1.0):
        return scale * max(np.linalg.norm(o) + 2.5 * s.max() for o, s, _ in self.lobes)

    def field(self, p, scale=1.0):
        """Implicit function g at physical points p (3, ...); lesion = g >= 0.5."""
        g = np.zeros(p.shape[1:], np.float32)
        for off, sig, w in self.lobes:
            e = np.zeros(p.shape[1:], np.float32)
            for c in range(3):
                e += ((p[c] - (self.center[c] + scale * off[c])) / (scale * sig[c])) ** 2
            g += w * np.exp(-0.5 * e)
        return g

    def info(self):
        return {"id": self.id, "role": self.role, "kind": self.kind,
                "center_mm": [round(float(v), 1) for v in self.center],
                "radius_mm": round(self.radius, 1), "target_hu": round(self.target, 1)}


# role, kind, radius range (mm), change applied in the follow-up (scale of the shape, new kind)
LESION_PLAN = [
    ("persistent", "ggo", (8, 20)),
    ("persistent", "cons", (5, 10)),
    ("ggo_to_cons", "ggo", (8, 16)),
    ("grow", "cons", (6, 14)),
    ("shrink", "cons", (12, 25)),
    ("resolve", "cons", (8, 16)),
    ("new", "cons", (6, 14)),
]
GROW, SHRINK = 1.4, 0.55


def place_lesions(rng, lung, g):
    dist = ndi.distance_transform_edt(lung, sampling=g.zyx_spacing)
    placed = []
    for lid, (role, kind, (rmin, rmax)) in enumerate(LESION_PLAN, start=1):
        r = rng.uniform(rmin, rmax)
        for attempt in range(400):
            if attempt and attempt % 100 == 0:
                r *= 0.8
            cand = np.flatnonzero(dist.ravel() >= max(0.7 * r + 2.0, 4.0))
            if cand.size == 0:
                continue
            k, j, i = np.unravel_index(cand[rng.integers(cand.size)], lung.shape)
            c = g.phys(slice(k, k + 1), slice(j, j + 1), slice(i, i + 1)).reshape(3).astype(np.float64)
            if all(np.linalg.norm(c - o.center) > 1.6 * (r + o.radius) + 6.0 for o in placed):
                placed.append(Lesion(rng, c, r, kind, role, lid))
                break
        else:
            raise RuntimeError(f"could not place lesion {role}")
    return placed


def bbox(g, center, ext):
    """Voxel box (slices) around a physical center, ext mm each side."""
    q = g.to_kji(np.asarray(center, np.float32).reshape(3, 1)).reshape(3)
    half = ext / np.array(g.zyx_spacing)
    lo = np.maximum(np.floor(q - half).astype(int), 0)
    hi = np.minimum(np.ceil(q + half).astype(int) + 1, np.array(g.shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def blend(orig, alpha, kind, target, tex):
    """Lesion intensity: target HU plus part of the underlying texture (vessels stay partly visible)."""
    o = np.clip(orig, -1000, 150)
    val = target + (0.35 if kind == "ggo" else 0.1) * (o + 850.0) + tex
    return orig + alpha * (val - orig)


def alpha_of(gv, lungf):
    return smoothstep((gv - 0.3) / 0.4) * lungf


# ----------------------------------------------------------------------------------------------
# known deformation T: fixed (follow-up) point -> moving (baseline) point


def rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def svf_exp(rng, g, sigma_mm, amp_p95, h=4.0, margin=60.0, steps=7):
    """Stationary velocity field on a coarse axis-aligned grid, exponentiated by scaling and squaring.
    Returns a sampler: physical points (3, ...) -> displacement (3, ...)."""
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], np.float64)
    corners = corners * (g.size - 1)[None, :]
    pc = g.origin[None, :] + (corners * g.spacing[None, :]) @ g.D.T
    lo, hi = pc.min(0) - margin, pc.max(0) + margin
    n = np.ceil((hi - lo) / h).astype(int) + 1  # x, y, z
    shape = (n[2], n[1], n[0])
    v = np.stack([ndi.gaussian_filter(rng.standard_normal(shape), sigma_mm / h, mode="reflect")
                  for _ in range(3)]).astype(np.float64)
    v *= amp_p95 / np.percentile(np.linalg.norm(v, axis=0), 95)
    d = v / 2 ** steps
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"))
    for _ in range(steps):  # d <- d + d o (id + d)
        q = grid + np.stack([d[2], d[1], d[0]]) / h  # (k, j, i) index of x + d(x)
        d = d + np.stack([ndi.map_coordinates(d[c], q, order=1, mode="nearest") for c in range(3)])
    d = d.astype(np.float32)

    def sample(p):
        q = np.stack([(p[2] - lo[2]) / h, (p[1] - lo[1]) / h, (p[0] - lo[0]) / h])
        out = np.empty_like(p)
        for c in range(3):
            out[c] = ndi.map_coordinates(d[c], q, order=1, mode="nearest")
        return out
    return sample


def breathing_region(lung, g):
    """Lungs + mediastinum (3-D closing, radius 20 mm, holes filled per slice, dilated 2 mm),
    extended below the lungs (their x-y footprint) so the upper abdomen moves with the diaphragm."""
    sp = g.zyx_spacing
    dil = ndi.distance_transform_edt(~lung, sampling=sp) <= 20.0
    clo = ndi.distance_transform_edt(dil, sampling=sp) >= 19.5
    clo |= lung
    for k in range(clo.shape[0]):
        clo[k] = ndi.binary_fill_holes(clo[k])
    reg = ndi.distance_transform_edt(~clo, sampling=sp) <= 2.0
    # everything below the lungs inside their (x, y) footprint: cumulative OR from apex to feet
    inferior_first = g.D[2, 2] > 0  # array index 0 = most inferior slice
    if inferior_first:
        reg = np.logical_or.accumulate(reg[::-1], axis=0)[::-1]
    else:
        reg = np.logical_or.accumulate(reg, axis=0)
    return reg


def make_truth(rng, g, lung, amp=1.0):
    """Displacement (3, nz, ny, nx) float32 of T and its parameters."""
    params = {"svf_sigma_mm": float(rng.uniform(15, 25)), "svf_p95_mm": float(rng.uniform(5, 7)),
              "breath_si_mm": float(rng.uniform(6, 10)), "breath_ap_mm": float(rng.uniform(1.5, 3)),
              "rot_deg": [float(a) for a in rng.uniform(-2, 2, 3)],
              "trans_mm": [float(t) for t in rng.uniform(-5, 5, 3)]}
    svf_seed = int(rng.integers(2 ** 63))  # same velocity noise on every retry
    p = g.phys()
    lp = p[:, lung]
    z_top, z_bot = np.percentile(lp[2], 99.5), np.percentile(lp[2], 0.5)
    y_c = 0.5 * (np.percentile(lp[1], 1) + np.percentile(lp[1], 99))
    y_h = 0.5 * (np.percentile(lp[1], 99) - np.percentile(lp[1], 1))
    center = lp.mean(axis=1).astype(np.float64)
    del lp
    w = ndi.gaussian_filter(breathing_region(lung, g).astype(np.float32), sigma=(0.8, 0.8, 0.8))
    while True:
        s = np.clip((z_top - p[2]) / (z_top - z_bot), 0, 1) ** 1.3
        s = np.where(p[2] < z_bot, np.clip(1 - (z_bot - p[2]) / 60.0, 0, 1), s)
        A, B = amp * params["breath_si_mm"], amp * params["breath_ap_mm"]
        bx = p.copy()  # B(x) = x + w (0, -B (y - yc)/hy, A s(z))
        bx[1] += w * (-B * np.clip((p[1] - y_c) / y_h, -1.2, 1.2))
        bx[2] += w * (A * s)
        del s
        sample = svf_exp(np.random.default_rng(svf_seed), g,
                         params["svf_sigma_mm"], amp * params["svf_p95_mm"])
        n = bx + sample(bx)  # N = exp(v) o B
        del bx
        R = rotation(*np.deg2rad(params["rot_deg"]))
        t = np.array(params["trans_mm"])
        T = np.tensordot(R.astype(np.float32), n - center[:, None, None, None].astype(np.float32), axes=1)
        T += (center + t)[:, None, None, None].astype(np.float32)
        del n
        d = (T - p).astype(np.float32)
        del T
        jac = jacobian(np.moveaxis(d, 0, -1), g)
        jmin = float(jac.min())
        print(f"  truth attempt: amplitude x{amp:.2f}, Jacobian min {jmin:.3f}", flush=True)
        if jmin > 0.05 or amp < 0.2:
            break
        amp *= 0.8  # folded truth: reduce the amplitude and retry
    params["amplitude_factor"] = round(amp, 3)
    params["jacobian_min"] = round(jmin, 4)
    params["jacobian_max"] = round(float(jac.max()), 4)
    params["rotation_center_mm"] = [round(float(v), 1) for v in center]
    return d, params


def jacobian(d_zyx3, g):
    img = to_img(d_zyx3.astype(np.float64), g_ref(g), vector=True)
    return sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(img))


def g_ref(g):
    img = sitk.Image([int(s) for s in g.size], sitk.sitkUInt8)
    img.SetSpacing(tuple(g.spacing))
    img.SetOrigin(tuple(g.origin))
    img.SetDirection(tuple(g.D.ravel()))
    return img


# ----------------------------------------------------------------------------------------------
# transition map

# state: 0 outside, 1 healthy lung, 2 GGO, 3 consolidation; label 3 = GGO, 4 = consolidation
STATE = np.ones(256, np.uint8)
STATE[0], STATE[3], STATE[4] = 0, 2, 3
CODE = np.array([[0, 0, 0, 0],
                 [0, 1, 2, 3],
                 [0, 4, 6, 8],
                 [0, 5, 9, 7]], np.uint8)


def transitions(base_labels, follow_labels):
    b, f = STATE[base_labels], STATE[follow_labels]
    out = (b == 0) & (f == 0)
    code = CODE[np.maximum(b, 1), np.maximum(f, 1)]
    code[out] = 0
    return code


PROG, RECOV, CHANGE = (3, 8), (5, 9), (2, 3, 4, 5, 8, 9)


# ----------------------------------------------------------------------------------------------
# case generation


def resample_z(ct_path, lung_path, slices, out_dir):
    """The CT (linear) and lung mask (nearest) resampled to `slices` slices over the same z extent."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "ct.nii.gz", out_dir / "lungs.nii.gz")
    if all(p.exists() for p in paths):
        return paths
    for src, dst, interp, pixel in ((ct_path, paths[0], sitk.sitkLinear, sitk.sitkInt16),
                                    (lung_path, paths[1], sitk.sitkNearestNeighbor, sitk.sitkUInt8)):
        img = sitk.ReadImage(str(src))
        size, sp = list(img.GetSize()), list(img.GetSpacing())
        extent = (size[2] - 1) * sp[2]
        new_sp = [sp[0], sp[1], extent / (slices - 1)]
        out = sitk.Resample(img, [size[0], size[1], slices], sitk.Transform(), interp, img.GetOrigin(),
                            new_sp, img.GetDirection(), -1024 if pixel == sitk.sitkInt16 else 0, pixel)
        sitk.WriteImage(out, str(dst))
    return paths


def generate_case(name, ct_path, lung_path, seed, out_dir, regen=False):
    meta_path = out_dir / "truth.json"
    files = ["fixed_ct", "fixed_labels", "fixed_lungs", "moving_ct", "moving_labels", "moving_lungs",
             "true_displacement", "truth_transitions"]
    if not regen and meta_path.exists() and all((out_dir / f"{f}.nii.gz").exists() for f in files):
        meta = json.loads(meta_path.read_text())
        if meta.get("gen_version") == GEN_VERSION and meta.get("seed") == seed \
                and meta.get("source_ct") == str(ct_path):
            print(f"[{name}] using cached synthetic pair in {out_dir}", flush=True)
            return meta
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    ct_img = sitk.ReadImage(str(ct_path))
    g = Geom(ct_img)
    clean = sitk.GetArrayFromImage(ct_img).astype(np.float32)
    lung = sitk.GetArrayFromImage(sitk.ReadImage(str(lung_path))) > 0
    lungf = lung.astype(np.float32)
    tex = ndi.gaussian_filter(rng.standard_normal(g.shape).astype(np.float32), 1.2)
    tex *= 25.0 / tex.std()

    # 1. baseline: lesions inserted in the lungs
    lesions = place_lesions(rng, lung, g)
    base_ct = clean.copy()
    src_f = clean.copy()  # what the follow-up inherits unchanged (persistent lesions only)
    labels = lung.astype(np.uint8)
    lid = np.zeros(g.shape, np.uint8)
    for les in lesions:
        if les.role == "new":
            continue
        bb = bbox(g, les.center, les.extent())
        gv = les.field(g.phys(*bb))
        a = alpha_of(gv, lungf[bb])
        base_ct[bb] = blend(base_ct[bb], a, les.kind, les.target, tex[bb])
        if les.role == "persistent":
            src_f[bb] = blend(src_f[bb], a, les.kind, les.target, tex[bb])
        m = (gv >= 0.5) & lung[bb]
        labels[bb][m] = 3 if les.kind == "ggo" else 4
        lid[bb][m] = les.id

    # 2. known deformation
    d, tparams = make_truth(rng, g, lung)
    p = g.phys()
    Tp = p + d
    del p
    kji = g.to_kji(Tp)

    # 3. follow-up = baseline through T, with lesion changes in the follow-up frame, + noise
    fix_ct = warp(src_f, kji, 1)
    fix_lab = warp(labels, kji, 0)
    fix_id = warp(lid, kji, 0)
    base_on_fixed = fix_lab.copy()  # baseline labels through the TRUE transform
    fix_lungf = warp(lungf, kji, 1)
    fix_tex = warp(tex, kji, 1)
    del kji
    dmax = float(np.linalg.norm(d, axis=0).max())
    for les in lesions:
        if les.role == "persistent":
            continue
        if les.role != "new":
            fix_lab[fix_id == les.id] = 1
        if les.role == "resolve":
            continue
        scale = {"grow": GROW, "shrink": SHRINK}.get(les.role, 1.0)
        kind = "cons" if les.role == "ggo_to_cons" else les.kind
        target = float(rng.uniform(-50, 40)) if les.role == "ggo_to_cons" else les.target
        bb = bbox(g, les.center, les.extent(scale) + dmax + 3.0)
        gv = les.field(Tp[(slice(None),) + bb], scale)
        fix_ct[bb] = blend(fix_ct[bb], alpha_of(gv, fix_lungf[bb]), kind, target, fix_tex[bb])
        if les.role == "ggo_to_cons":
            fix_lab[fix_id == les.id] = 4
        else:
            m = (gv >= 0.5) & (fix_lab[bb] > 0)
            fix_lab[bb][m] = 3 if kind == "ggo" else 4
    del Tp, fix_tex, fix_lungf, fix_id
    fix_ct += rng.normal(0.0, 20.0, g.shape).astype(np.float32)
    truth_tr = transitions(base_on_fixed, fix_lab)

    # 4. write
    ref = ct_img

    def w(arr, fname, vector=False):
        sitk.WriteImage(to_img(arr, ref, vector), str(out_dir / f"{fname}.nii.gz"), useCompression=True)
    w(np.clip(np.rint(fix_ct), -1024, 3071).astype(np.int16), "fixed_ct")
    w(fix_lab, "fixed_labels")
    w((fix_lab > 0).astype(np.uint8), "fixed_lungs")
    w(np.clip(np.rint(base_ct), -1024, 3071).astype(np.int16), "moving_ct")
    w(labels, "moving_labels")
    w((labels > 0).astype(np.uint8), "moving_lungs")
    w(np.ascontiguousarray(np.moveaxis(d, 0, -1)), "true_displacement", vector=True)
    w(truth_tr, "truth_transitions")

    # self-check of the conventions: sitk warp of the written moving labels with the written field
    check = sitk_warp(sitk.ReadImage(str(out_dir / "moving_labels.nii.gz")),
                      sitk.ReadImage(str(out_dir / "true_displacement.nii.gz")), nearest=True)
    agree = float((sitk.GetArrayFromImage(check) == base_on_fixed).mean())
    fixed_lung = fix_lab > 0
    dn = np.linalg.norm(d[:, fixed_lung], axis=0)
    vox_ml = float(np.prod(g.spacing)) / 1000.0
    les_info = []
    for les in lesions:
        i = les.info()
        i["baseline_ml"] = round(float((lid == les.id).sum()) * vox_ml, 2)
        les_info.append(i)
    counts = np.bincount(truth_tr.ravel(), minlength=10)
    meta = {
        "gen_version": GEN_VERSION, "seed": seed, "case": name, "source_ct": str(ct_path),
        "size": [int(s) for s in g.size], "spacing": [float(s) for s in g.spacing],
        "deformation": tparams,
        "true_displacement_lung_mm": {"mean": round(float(dn.mean()), 2), "p95": round(float(np.percentile(dn, 95)), 2),
                                      "max": round(float(dn.max()), 2)},
        "lesions": les_info,
        "truth_transition_ml": {str(c): round(float(counts[c]) * vox_ml, 2) for c in range(10)},
        "check_sitk_label_warp_agreement": round(agree, 6),
        "generation_s": round(time.perf_counter() - t0, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    print(f"[{name}] synthetic pair written to {out_dir} in {meta['generation_s']} s; "
          f"true |d| in lungs mean {meta['true_displacement_lung_mm']['mean']} mm, "
          f"max {meta['true_displacement_lung_mm']['max']} mm; truth Jacobian "
          f"[{tparams['jacobian_min']}, {tparams['jacobian_max']}]; sitk label warp agreement {agree:.5f}",
          flush=True)
    return meta


# ----------------------------------------------------------------------------------------------
# methods: each returns (displacement sitk image float64 on the fixed grid, seconds, extra info)


def sitk_warp(moving, field, nearest, ref=None, default=0, interp=sitk.sitkLinear):
    """Resample `moving` onto `ref` (default: the moving grid) through the displacement field."""
    tx = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))  # takes a copy's buffer
    return sitk.Resample(moving, ref if ref is not None else moving, tx,
                         sitk.sitkNearestNeighbor if nearest else interp, default, moving.GetPixelID())


def read_field(path):
    img = sitk.ReadImage(str(path))
    note = None
    if img.GetNumberOfComponentsPerPixel() == 1 and img.GetDimension() == 4 and img.GetSize()[3] == 3:
        # 4-D scalar (x, y, z, 3) file: accept it but say so
        arr = sitk.GetArrayFromImage(img)  # (3, z, y, x)
        ref3 = img[:, :, :, 0]
        img = to_img(np.ascontiguousarray(np.moveaxis(arr, 0, -1)), ref3, vector=True)
        note = "displacement stored as a 4-D scalar image (dim[4] = 3), converted"
    if img.GetNumberOfComponentsPerPixel() != 3:
        raise RuntimeError(f"{path}: expected a 3-component vector image, got "
                           f"{img.GetNumberOfComponentsPerPixel()} components, dimension {img.GetDimension()}")
    return sitk.Cast(img, sitk.sitkVectorFloat64), note


def run_identity(case_dir, mdir, args):
    ref = sitk.ReadImage(str(case_dir / "fixed_lungs.nii.gz"))
    t0 = time.perf_counter()
    zero = sitk.Image(ref.GetSize(), sitk.sitkVectorFloat64, 3)
    zero.CopyInformation(ref)
    return zero, time.perf_counter() - t0, {}


def run_pulmo(case_dir, mdir, args):
    binary = os.environ.get("PULMO_BIN", str(ROOT / "target" / "release" / "pulmo"))
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    cmd = [binary, "register", str(case_dir / "fixed_ct.nii.gz"), str(case_dir / "moving_ct.nii.gz"),
           "-o", str(mdir), "--fixed-labels", str(case_dir / "fixed_labels.nii.gz"),
           "--moving-labels", str(case_dir / "moving_labels.nii.gz")]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    except OSError as e:
        raise RuntimeError(f"{shlex.join(cmd)}: {e}")
    secs = time.perf_counter() - t0
    (mdir / "register.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    field, note = read_field(mdir / "displacement.nii.gz")
    extra = {"command": shlex.join(cmd)}
    if note:
        extra["note"] = note
    rj = mdir / "registration.json"
    if rj.exists():
        try:
            extra["registration_json"] = json.loads(rj.read_text())
        except ValueError as e:
            extra["registration_json_error"] = str(e)
    # progression map by pulmo itself, when the command exists
    pdir = mdir / "progress"
    pcmd = [binary, "progress", "--baseline", str(case_dir / "moving_ct.nii.gz"),
            "--baseline-labels", str(case_dir / "moving_labels.nii.gz"),
            "--followup", str(case_dir / "fixed_ct.nii.gz"),
            "--followup-labels", str(case_dir / "fixed_labels.nii.gz"), "--registration", str(mdir),
            "-o", str(pdir)]
    t1 = time.perf_counter()
    r = subprocess.run(pcmd, capture_output=True, text=True, env=env)
    extra["progress_s"] = round(time.perf_counter() - t1, 2)
    if r.returncode == 0 and (pdir / "transitions.nii.gz").exists():
        extra["transitions_path"] = str(pdir / "transitions.nii.gz")
    else:
        extra["progress_error"] = f"{shlex.join(pcmd)} exited {r.returncode}: {r.stderr.strip()[-1000:]}"
    return field, secs, extra


ELASTIX_AFFINE = {
    "ASGDParameterEstimationMethod": ["DisplacementDistribution"],
    "Registration": ["MultiResolutionRegistration"], "Transform": ["AffineTransform"],
    "Metric": ["AdvancedMattesMutualInformation"], "NumberOfHistogramBins": ["32"],
    "NumberOfResolutions": ["3"], "FixedImagePyramid": ["FixedSmoothingImagePyramid"],
    "MovingImagePyramid": ["MovingSmoothingImagePyramid"],
    "Optimizer": ["AdaptiveStochasticGradientDescent"], "MaximumNumberOfIterations": ["300"],
    "ImageSampler": ["RandomCoordinate"], "NumberOfSpatialSamples": ["5000"],
    "NewSamplesEveryIteration": ["true"], "AutomaticTransformInitialization": ["true"],
    "AutomaticScalesEstimation": ["true"], "AutomaticParameterEstimation": ["true"],
    "Interpolator": ["LinearInterpolator"], "ResampleInterpolator": ["FinalBSplineInterpolator"],
    "FinalBSplineInterpolationOrder": ["3"], "DefaultPixelValue": ["-1000"], "ErodeMask": ["false"],
    "HowToCombineTransforms": ["Compose"], "WriteResultImage": ["false"],
}
ELASTIX_BSPLINE = {
    "ASGDParameterEstimationMethod": ["DisplacementDistribution"],
    "Registration": ["MultiMetricMultiResolutionRegistration"], "Transform": ["BSplineTransform"],
    "Metric": ["AdvancedMattesMutualInformation", "TransformBendingEnergyPenalty"],
    "Metric0Weight": ["1.0"], "Metric1Weight": ["0.05"], "NumberOfHistogramBins": ["32"],
    "FinalGridSpacingInPhysicalUnits": ["12.0"], "GridSpacingSchedule": ["8.0", "4.0", "2.0", "1.0"],
    "NumberOfResolutions": ["4"], "FixedImagePyramid": ["FixedSmoothingImagePyramid"],
    "MovingImagePyramid": ["MovingSmoothingImagePyramid"],
    "Optimizer": ["AdaptiveStochasticGradientDescent"], "MaximumNumberOfIterations": ["500"],
    "ImageSampler": ["RandomCoordinate"], "NumberOfSpatialSamples": ["5000"],
    "NewSamplesEveryIteration": ["true"], "AutomaticParameterEstimation": ["true"],
    "Interpolator": ["LinearInterpolator"], "ResampleInterpolator": ["FinalBSplineInterpolator"],
    "FinalBSplineInterpolationOrder": ["3"], "DefaultPixelValue": ["-1000"], "ErodeMask": ["false"],
    "HowToCombineTransforms": ["Compose"], "WriteResultImage": ["true"],
}


def elastix_param_text():
    out = ["// itk-elastix parameter maps used by scripts/bench_register.py (affine, then B-spline);",
           "// fixed mask = fixed lung mask dilated by 10 mm; no moving mask"]
    for title, pm in (("affine", ELASTIX_AFFINE), ("bspline", ELASTIX_BSPLINE)):
        out.append(f"\n// ---- {title} ----")
        for k, vs in pm.items():
            vals = " ".join(v if _isnum(v) else f'"{v}"' for v in vs)
            out.append(f"({k} {vals})")
    return "\n".join(out) + "\n"


def _isnum(v):
    try:
        float(v)
        return True
    except ValueError:
        return False


def sitk_to_itk(img, pixel):
    import itk
    out = itk.GetImageFromArray(np.ascontiguousarray(sitk.GetArrayFromImage(img)).astype(pixel))
    out.SetSpacing(img.GetSpacing())
    out.SetOrigin(img.GetOrigin())
    out.SetDirection(itk.matrix_from_array(np.array(img.GetDirection()).reshape(3, 3)))
    return out


def run_elastix(case_dir, mdir, args):
    import itk
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)
    t0 = time.perf_counter()
    fixed = itk.imread(str(case_dir / "fixed_ct.nii.gz"), itk.F)
    moving = itk.imread(str(case_dir / "moving_ct.nii.gz"), itk.F)
    fl = sitk.ReadImage(str(case_dir / "fixed_lungs.nii.gz"))
    sp = fl.GetSpacing()
    mask = sitk.BinaryDilate(fl, [max(1, int(round(10.0 / s))) for s in sp], sitk.sitkBall)
    fmask = sitk_to_itk(mask, np.uint8)
    po = itk.ParameterObject.New()
    for pm in (ELASTIX_AFFINE, ELASTIX_BSPLINE):
        po.AddParameterMap(pm)
    reg = itk.ElastixRegistrationMethod.New(fixed, moving)
    reg.SetParameterObject(po)
    reg.SetFixedMask(fmask)
    # NB: no reg.SetNumberOfThreads(): with MultiMetricMultiResolutionRegistration and > 1 thread it
    # segfaults (ITKElastix issue #160, still so in 0.25.4); the global ITK default above applies.
    reg.SetLogToConsole(False)
    reg.SetLogToFile(False)
    reg.Update()
    warped = reg.GetOutput()
    tpo = reg.GetTransformParameterObject()
    # transformix also writes deformationField.{mhd,raw} into its output directory (default: cwd)
    field = itk.transformix_deformation_field(moving, tpo, output_directory=str(mdir))
    arr = itk.array_from_image(field).astype(np.float64)  # (z, y, x, 3), components x, y, z
    secs = time.perf_counter() - t0
    fimg = sitk.GetImageFromArray(arr, isVector=True)
    fimg.SetSpacing(tuple(field.GetSpacing()))
    fimg.SetOrigin(tuple(field.GetOrigin()))
    fimg.SetDirection(tuple(np.array(field.GetDirection()).ravel()))
    # convention check: elastix's own warped image (cubic) vs sitk cubic warp of the moving CT with the
    # converted field: ~0.5 HU when right; ~230 HU with x, y negated; 200 HU for no warp at all (Case_007)
    warped_np = itk.array_from_image(warped)
    mov_s = sitk.Cast(sitk.ReadImage(str(case_dir / "moving_ct.nii.gz")), sitk.sitkFloat32)
    ours = sitk.GetArrayFromImage(sitk_warp(mov_s, fimg, nearest=False, ref=fl, default=-1000,
                                            interp=sitk.sitkBSpline))
    lungs = sitk.GetArrayFromImage(fl) > 0
    extra = {"check_warped_vs_sitk_mae_hu_lungs": round(float(np.abs(ours - warped_np)[lungs].mean()), 2),
             "field_geometry_matches_fixed": bool(np.allclose(fimg.GetOrigin(), fl.GetOrigin())
                                                   and fimg.GetSize() == fl.GetSize())}
    t1 = time.perf_counter()  # writing is not in time_s (pulmo's time includes its own writing)
    sitk.WriteImage(sitk.Cast(fimg, sitk.sitkVectorFloat32), str(mdir / "displacement.nii.gz"))
    sitk.WriteImage(sitk.Cast(to_img(warped_np, fl), sitk.sitkInt16), str(mdir / "moving_warped.nii.gz"))
    extra["write_outputs_s"] = round(time.perf_counter() - t1, 2)
    for f in mdir.glob("deformationField.*"):
        f.unlink()
    return fimg, secs, extra


METHODS = {"pulmo": run_pulmo, "elastix": run_elastix, "identity": run_identity}


# ----------------------------------------------------------------------------------------------
# metrics


def stats(x):
    if x.size == 0:
        return {k: None for k in ("mean", "median", "p95", "max")}
    return {"mean": float(x.mean()), "median": float(np.median(x)), "p95": float(np.percentile(x, 95)),
            "max": float(x.max())}


class CaseRef:
    def __init__(self, case_dir):
        self.dir = case_dir
        self.fixed_lungs_img = sitk.ReadImage(str(case_dir / "fixed_lungs.nii.gz"))
        self.fixed_lungs = sitk.GetArrayFromImage(self.fixed_lungs_img) > 0
        self.fixed_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "fixed_labels.nii.gz")))
        self.moving_labels_img = sitk.ReadImage(str(case_dir / "moving_labels.nii.gz"))
        self.truth_tr = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "truth_transitions.nii.gz")))
        true = sitk.ReadImage(str(case_dir / "true_displacement.nii.gz"))
        self.d_true = sitk.GetArrayFromImage(true).astype(np.float32)  # (z, y, x, 3)
        sp = self.fixed_lungs_img.GetSpacing()[::-1]
        lesion_any = self.truth_tr >= 2  # a lesion in either time point (truth transform)
        self.near = (ndi.distance_transform_edt(~lesion_any, sampling=sp) <= 10.0) & self.fixed_lungs
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "fixed_ct.nii.gz")))
        body = ndi.binary_opening(ct > -400, iterations=2)
        lab, n = ndi.label(body)
        if n:
            body = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        body |= self.fixed_lungs
        for k in range(body.shape[0]):
            body[k] = ndi.binary_fill_holes(body[k])
        self.body = body


def evaluate(ref, field, extra):
    d = sitk.GetArrayFromImage(field)
    if d.shape != ref.d_true.shape:
        raise RuntimeError(f"displacement shape {d.shape} != fixed grid {ref.d_true.shape}")
    err = np.linalg.norm(d - ref.d_true, axis=-1)
    m = {"tre_lung": stats(err[ref.fixed_lungs]), "tre_near_lesion": stats(err[ref.near])}
    del err
    jac = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    for name, mask in (("body", ref.body), ("lung", ref.fixed_lungs)):
        j = jac[mask]
        m[f"folded_pct_{name}"] = 100.0 * float((j <= 0).mean())
        m[f"jac_min_{name}"] = float(j.min())
        m[f"jac_max_{name}"] = float(j.max())
    wl = sitk.GetArrayFromImage(sitk_warp(ref.moving_labels_img, field, nearest=True, ref=ref.fixed_lungs_img))
    m["lung_dice"] = dice(wl > 0, ref.fixed_lungs)
    src = "python (moving labels warped by the method's field, nearest)"
    tr = None
    if extra.get("transitions_path"):
        t = sitk.GetArrayFromImage(sitk.ReadImage(extra["transitions_path"]))
        if t.shape == ref.truth_tr.shape:
            tr, src = t, "pulmo progress (transitions.nii.gz)"
        else:
            extra["progress_error"] = f"transitions.nii.gz shape {t.shape} != fixed grid {ref.truth_tr.shape}"
    if tr is None:
        tr = transitions(wl, ref.fixed_labels)
    m["transitions_source"] = src
    for key, codes in (("prog_dice", PROG), ("recov_dice", RECOV), ("change_dice", CHANGE)):
        m[key] = dice(np.isin(tr, codes), np.isin(ref.truth_tr, codes))
    return m


# ----------------------------------------------------------------------------------------------
# report

COLS = [("TRE mean", "tre_lung.mean", 2), ("TRE med", "tre_lung.median", 2), ("TRE p95", "tre_lung.p95", 2),
        ("TRE max", "tre_lung.max", 2), ("near-lesion mean", "tre_near_lesion.mean", 2),
        ("near-lesion p95", "tre_near_lesion.p95", 2), ("% folded", "folded_pct_body", 3),
        ("Jac min", "jac_min_body", 2), ("lung Dice", "lung_dice", 4), ("prog Dice", "prog_dice", 3),
        ("recov Dice", "recov_dice", 3), ("change Dice", "change_dice", 3), ("time s", "time_s", 1)]


def get(m, key):
    for k in key.split("."):
        if not isinstance(m, dict) or m.get(k) is None:
            return None
        m = m[k]
    return m


def fmt(v, nd):
    return "–" if v is None else f"{v:.{nd}f}"


def table(results, methods):
    head = "| case | method | " + " | ".join(c for c, _, _ in COLS) + " |"
    lines = [head, "|" + "---|" * (len(COLS) + 2)]
    for case, cres in results["cases"].items():
        for meth in methods:
            r = cres["methods"].get(meth)
            if r is None:
                continue
            if r.get("status") != "ok":
                lines.append(f"| {case} | {meth} | failed: {r.get('error', '')[:120].replace('|', '/')} |")
                continue
            lines.append(f"| {case} | {meth} | " + " | ".join(fmt(get(r, k), nd) for _, k, nd in COLS) + " |")
    for meth in methods:
        mm = results["mean_over_cases"].get(meth)
        if mm:
            lines.append(f"| **mean over {mm['n_cases']} cases** | {meth} | "
                         + " | ".join(fmt(get(mm, k), nd) for _, k, nd in COLS) + " |")
    return "\n".join(lines)


def mean_over(results, methods):
    out = {}
    for meth in methods:
        rows = [c["methods"][meth] for c in results["cases"].values()
                if c["methods"].get(meth, {}).get("status") == "ok"]
        if not rows:
            continue
        mm = {"n_cases": len(rows)}
        for _, key, _ in COLS:
            vals = [get(r, key) for r in rows]
            vals = [v for v in vals if v is not None]
            if vals:
                cur = mm
                parts = key.split(".")
                for p in parts[:-1]:
                    cur = cur.setdefault(p, {})
                cur[parts[-1]] = float(np.mean(vals))
        out[meth] = mm
    return out


def rounded(o):
    if isinstance(o, float):
        return round(o, 4)
    if isinstance(o, dict):
        return {k: rounded(v) for k, v in o.items()}
    if isinstance(o, list):
        return [rounded(v) for v in o]
    return o


def run_methods(case, case_dir, methods, args):
    ref = CaseRef(case_dir)
    res = {}
    for meth in methods:
        mdir = case_dir / meth
        mdir.mkdir(exist_ok=True)
        print(f"[{case}] {meth} ...", flush=True)
        try:
            field, secs, extra = METHODS[meth](case_dir, mdir, args)
            m = evaluate(ref, field, extra)
            m.update(extra)
            m["time_s"] = secs
            m["status"] = "ok"
            print(f"[{case}] {meth}: TRE mean {m['tre_lung']['mean']:.2f} mm, p95 {m['tre_lung']['p95']:.2f}, "
                  f"near lesions {m['tre_near_lesion']['mean']:.2f}, folded {m['folded_pct_body']:.3f} %, "
                  f"lung Dice {m['lung_dice']:.4f}, prog Dice {fmt(m['prog_dice'], 3)}, "
                  f"{secs:.1f} s", flush=True)
        except Exception as e:  # noqa: BLE001 - a failing method is recorded, the benchmark goes on
            m = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            print(f"[{case}] {meth} FAILED: {m['error'][:500]}", flush=True)
        res[meth] = m
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="Case_007,Case_008,Case_000")
    ap.add_argument("--methods", default="pulmo,elastix,identity")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed", action="store_true", help="also time pulmo vs elastix on lctsc/Case_000 (512x512)")
    ap.add_argument("--speed-slices", type=int, default=0,
                    help="resample the 512x512 speed case to this many slices (same z extent; e.g. 300)")
    ap.add_argument("--regen", action="store_true", help="regenerate the synthetic pairs even if cached")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m}; choose from {', '.join(METHODS)}")
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "elastix_params.txt").write_text(elastix_param_text())
    data = Path(args.data)
    import itk  # noqa: F401 - versions
    header = {"command": shlex.join([sys.argv[0]] + sys.argv[1:]),
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "nproc": os.cpu_count(), "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
              "threads": args.threads, "seed": args.seed, "pulmo_bin": os.environ.get("PULMO_BIN", str(ROOT / "target" / "release" / "pulmo")),
              "versions": {"python": platform.python_version(), "SimpleITK": sitk.Version_VersionString(),
                           "itk": itk.Version.GetITKVersion(), "numpy": np.__version__}}
    try:
        from importlib.metadata import version
        header["versions"]["itk-elastix"] = version("itk-elastix")
    except Exception:  # noqa: BLE001
        pass
    print(f"command: {header['command']}\ndate: {header['date']}\nmachine: nproc={header['nproc']} "
          f"{header['machine']}, threads={args.threads}\n", flush=True)
    results = dict(header, cases={})
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        cdir = out / case
        meta = generate_case(case, data / "lctsc256" / f"{case}_ct.nii.gz", data / "lctsc256" / f"{case}_lungs.nii.gz",
                             args.seed, cdir, args.regen)
        results["cases"][case] = {"truth": meta, "methods": run_methods(case, cdir, methods, args)}
    results["mean_over_cases"] = mean_over(results, methods)
    if args.speed:
        src_ct, src_lungs = data / "lctsc" / "Case_000_ct.nii.gz", data / "lctsc" / "Case_000_lungs.nii.gz"
        nz = sitk.ReadImage(str(src_ct)).GetSize()[2]
        if args.speed_slices:
            src_ct, src_lungs = resample_z(src_ct, src_lungs, args.speed_slices, out / f"speed_src_{args.speed_slices}")
            nz = args.speed_slices
        label = f"Case_000_512x{nz}"
        cdir = out / f"speed_{label}"
        meta = generate_case(label, src_ct, src_lungs, args.seed, cdir, args.regen)
        sm = [m for m in ("pulmo", "elastix") if m in methods] or ["pulmo", "elastix"]
        sres = run_methods(label, cdir, sm, args)
        speed = {"case": f"lctsc/Case_000 512x512x{nz}", "truth": meta, "methods": sres}
        tp, te = sres.get("pulmo", {}).get("time_s"), sres.get("elastix", {}).get("time_s")
        speed["elastix_over_pulmo_time"] = (te / tp) if tp and te else None
        results["speed"] = speed
    results = rounded(results)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    md = [f"# pulmo register benchmark (synthetic known deformation on LCTSC CT)", "",
          f"- command: `{header['command']}`", f"- date: {header['date']}",
          f"- machine: nproc={header['nproc']} ({header['machine']}), threads={args.threads}",
          f"- versions: {', '.join(f'{k} {v}' for k, v in header['versions'].items())}", "",
          "TRE in mm over the fixed lung voxels and over lung voxels within 10 mm of a lesion (either time "
          "point); % folded = det J <= 0 in the fixed body; Dice of the warped lung mask, of the "
          "progression (codes 3/8), recovery (5/9) and any-change regions of the transition map; time = "
          "wall clock incl. resampling the moving CT.", "", table(results, methods)]
    if args.speed:
        sp = results["speed"]
        md += ["", f"## speed: {sp['case']}", ""]
        for m, r in sp["methods"].items():
            md.append(f"- {m}: " + (f"{r['time_s']:.1f} s, TRE mean {fmt(get(r, 'tre_lung.mean'), 2)} mm"
                                    if r.get("status") == "ok" else f"failed: {r.get('error', '')[:200]}"))
        md.append(f"- elastix / pulmo time ratio: {fmt(sp['elastix_over_pulmo_time'], 2)}")
    text = "\n".join(md) + "\n"
    (out / "results.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
