"""Metrics benchmark (issue: quantification and comparison).

A realistic pair of 512x512x300 lung masks: the demo's lungs (reference) against the same
mask dilated by one voxel on the patient's left, eroded by one voxel on the right and
shifted by two slices (test). Times, in separate processes so peak memory is each one's
own: pulmo compare (all metrics: overlap, HD, HD95, ASSD), SimpleITK
(LabelOverlapMeasures + HausdorffDistance) and medpy (dc, jc, hd, hd95, assd), with all
threads and with one thread; and pulmo on the half-size pair for the scaling.
Usage: bench_metrics.py PULMO_BINARY DEMO_TRUTH.nii.gz OUT_DIR
"""
import json
import os
import resource
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
from scipy import ndimage


def make_pair(truth_path, out_dir, step=1):
    img = nib.load(truth_path)
    t = np.asarray(img.dataobj)[::step, ::step, ::step]
    ref = (t > 0).astype(np.uint8)
    x_mid = ref.shape[0] // 2
    dil = ndimage.binary_dilation(ref, iterations=1)
    ero = ndimage.binary_erosion(ref, iterations=1)
    test = np.where(np.arange(ref.shape[0])[:, None, None] >= x_mid, dil, ero).astype(np.uint8)
    test = np.roll(test, 2, axis=2)
    aff = img.affine.copy()
    aff[:3, :3] *= step
    suffix = f"{ref.shape[0]}x{ref.shape[1]}x{ref.shape[2]}"
    paths = []
    for name, arr in (("ref", ref), ("test", test)):
        p = os.path.join(out_dir, f"lungs-{name}-{suffix}.nii.gz")
        out = nib.Nifti1Image(arr, aff)
        out.set_qform(aff, 1)
        out.set_sform(aff, 1)
        nib.save(out, p)
        paths.append(p)
    return paths, ref.nbytes * 2


def run(cmd, env=None):
    """Runs cmd, returns (seconds, peak RSS MB, stdout)."""
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed: {p.stderr}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return dt, rss, p.stdout


PEER = r'''
import sys, time, json, resource
import numpy as np, nibabel as nib
which, ref, test, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
if which == "simpleitk":
    import SimpleITK as sitk
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    a = sitk.ReadImage(ref); b = sitk.ReadImage(test)
    t1 = time.perf_counter()
    o = sitk.LabelOverlapMeasuresImageFilter(); o.Execute(a, b)
    h = sitk.HausdorffDistanceImageFilter(); h.Execute(a, b)
    r = {"dice": o.GetDiceCoefficient(), "jaccard": o.GetJaccardCoefficient(),
         "hd_mm": h.GetHausdorffDistance(), "avg_hd_mm": h.GetAverageHausdorffDistance()}
else:
    from medpy.metric import binary as mb
    ia = nib.load(ref); a = np.asarray(ia.dataobj) > 0; b = np.asarray(nib.load(test).dataobj) > 0
    sp = ia.header.get_zooms()[:3]
    t1 = time.perf_counter()
    r = {"dice": mb.dc(b, a), "jaccard": mb.jc(b, a), "hd_mm": mb.hd(b, a, sp),
         "hd95_mm": mb.hd95(b, a, sp), "assd_mm": mb.assd(b, a, sp)}
t2 = time.perf_counter()
r["read_s"] = t1 - t0; r["metrics_s"] = t2 - t1
print(json.dumps(r))
'''


def main():
    pulmo, truth, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    (ref, test), mask_bytes = make_pair(truth, out_dir)
    (ref2, test2), _ = make_pair(truth, out_dir, step=2)
    peer = os.path.join(out_dir, "peer_metrics.py")
    open(peer, "w").write(PEER)
    rows = []
    for threads in (0, 1):
        env = dict(os.environ)
        if threads:
            env["RAYON_NUM_THREADS"] = "1"
            env["OMP_NUM_THREADS"] = "1"
        label = "1 thread" if threads else "all threads"
        # Each in a fresh process: wrap with python -c to isolate ru_maxrss per child.
        for name, cmd in (
            ("pulmo", [pulmo, "compare", ref, test, "--labels", "1", "--json"]),
            ("SimpleITK", [sys.executable, peer, "simpleitk", ref, test, str(threads)]),
            ("medpy", [sys.executable, peer, "medpy", ref, test, str(threads)]),
        ):
            wrapped = [sys.executable, "-c",
                       "import resource,subprocess,sys,time,json;t=time.perf_counter();"
                       "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
                       "dt=time.perf_counter()-t;"
                       "print(json.dumps({'rc':p.returncode,'s':dt,"
                       "'rss_mb':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
                       "'out':p.stdout,'err':p.stderr[-500:]}))"] + cmd
            p = subprocess.run(wrapped, capture_output=True, text=True, env=env)
            r = json.loads(p.stdout)
            if r["rc"] != 0:
                raise SystemExit(f"{name} failed: {r['err']}")
            rows.append({"tool": name, "threads": label, "wall_s": r["s"], "peak_mb": r["rss_mb"],
                         "result": r["out"][-600:]})
            print(f"{name:10s} {label:12s} wall {r['s']:7.2f} s  peak {r['rss_mb']:7.0f} MB", flush=True)
    t, _, _ = run([pulmo, "compare", ref2, test2, "--labels", "1", "--json"])
    print(f"pulmo half size (1/8 of the voxels): {t:.2f} s")
    print(json.dumps({"mask_bytes_mb": mask_bytes / 1e6, "rows": rows, "pulmo_half_size_s": t}))


if __name__ == "__main__":
    main()
