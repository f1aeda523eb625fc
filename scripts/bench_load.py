"""Side-by-side DICOM series load benchmark: pulmo vs pydicom+numpy vs SimpleITK vs cat.

Usage: .venv-tools/bin/python scripts/bench_load.py SERIES_DIR PULMO_BINARY [--repeat N]
All runs use the same files with a warm page cache; reports medians and ratios.
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import time


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


def peak_rss_delta(code):
    """Runs python code in a fresh interpreter and returns its peak RSS increase (bytes)."""
    prog = (
        "import resource,sys\n"
        "def hwm():\n"
        "  return [int(l.split()[1])*1024 for l in open('/proc/self/status') if l.startswith(('VmHWM','VmRSS'))]\n"
        "import numpy, pydicom, SimpleITK\n"
        "rss0 = hwm()[1]\n" + code + "\nprint(hwm()[0] - rss0)\n"
    )
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("series")
    ap.add_argument("pulmo")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.series, "*.dcm")))
    total_bytes = sum(os.path.getsize(f) for f in files)
    print(f"series: {len(files)} files, {total_bytes / 1e6:.1f} MB, repeat {a.repeat} (median reported)")

    # Warm the cache.
    subprocess.run(["sh", "-c", f"cat {a.series}/*.dcm > /dev/null"], check=True)

    results = {}

    def cat():
        subprocess.run(["sh", "-c", f"cat {a.series}/*.dcm > /dev/null"], check=True)

    results["cat (I/O floor)"] = median_time(cat, a.repeat)

    out = subprocess.run([a.pulmo, "load", a.series, "--repeat", str(a.repeat)], capture_output=True, text=True, check=True).stdout
    pulmo_times = [float(x) for x in re.findall(r"in ([0-9.]+) s", out)]
    peaks = [int(x) for x in re.findall(r"\(\+([0-9]+) over", out)]
    voxel_bytes = int(re.findall(r"voxel bytes ([0-9]+)", out)[0])
    results["pulmo (in-process)"] = (statistics.median(pulmo_times), pulmo_times)

    def pulmo_process():
        subprocess.run([a.pulmo, "load", a.series], capture_output=True, check=True)

    results["pulmo (whole process)"] = median_time(pulmo_process, a.repeat)

    import numpy as np
    import pydicom
    import SimpleITK as sitk

    def pydicom_stack():
        ds = [pydicom.dcmread(f) for f in files]
        normal = np.cross(np.array(ds[0].ImageOrientationPatient[:3], float), np.array(ds[0].ImageOrientationPatient[3:], float))
        ds.sort(key=lambda d: float(np.dot(normal, np.array(d.ImagePositionPatient, float))))
        vol = np.empty((len(ds), ds[0].Rows, ds[0].Columns), np.int16)
        for k, d in enumerate(ds):
            vol[k] = np.clip(np.rint(d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)), -32768, 32767)
        return vol

    results["pydicom + numpy"] = median_time(pydicom_stack, a.repeat)

    def sitk_read():
        r = sitk.ImageSeriesReader()
        names = r.GetGDCMSeriesFileNames(a.series)
        r.SetFileNames(names)
        img = r.Execute()
        return sitk.GetArrayViewFromImage(img)

    results["SimpleITK ImageSeriesReader"] = median_time(sitk_read, a.repeat)
    # Check they agree with pulmo's result shape.
    arr = sitk_read()
    print(f"SimpleITK shape {arr.shape} dtype {arr.dtype}; pydicom shape {pydicom_stack().shape}")

    floor = results["cat (I/O floor)"][0]
    sitk_t = results["SimpleITK ImageSeriesReader"][0]
    print(f"\n{'reader':32} {'median s':>9} {'vs cat':>7} {'SimpleITK/x':>11}")
    for name, (med, _) in results.items():
        print(f"{name:32} {med:9.3f} {med / floor:7.2f} {sitk_t / med:11.2f}")

    sitk_mem = peak_rss_delta(
        f"r=SimpleITK.ImageSeriesReader(); r.SetFileNames(r.GetGDCMSeriesFileNames({a.series!r})); img=r.Execute()"
    )
    print(f"\nvoxel bytes (i16): {voxel_bytes / 1e6:.1f} MB")
    print(f"pulmo peak RSS increase during load: {statistics.median(peaks) / 1e6:.1f} MB = {statistics.median(peaks) / voxel_bytes:.2f} x voxel bytes")
    print(f"SimpleITK peak RSS increase during load: {sitk_mem / 1e6:.1f} MB = {sitk_mem / voxel_bytes:.2f} x voxel bytes")


if __name__ == "__main__":
    main()
