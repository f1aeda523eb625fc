"""Why the lesion model v1 failed in HU: where the COVID-SemiSeg JPEGs put aerated lung and
soft tissue, against real CT in HU (weights/README.md, "Lesion models on real CT volumes").

Prints the pooled grey-level peaks of the 98 images, the spread of the per-image peaks,
the HU peaks of the covid-ct-md volumes (slices 35-75 % of the way up), and the HU the
ground glass of the images gets under the v1 mapping and under v3's per-image
calibration (the same rules as infer::lesion_data::calibrate_windowed).

usage: .venv-tools/bin/python scripts/semiseg_window_check.py   ($PULMO_DATA or ../shared/data)
"""
import glob
import os

import nibabel as nib
import numpy as np
from PIL import Image

DATA = os.environ.get("PULMO_DATA", os.path.join(os.path.dirname(__file__), "../../shared/data"))
LUNG_HU, SOFT_HU = -880.0, 20.0
DEFAULT_PER = (SOFT_HU - LUNG_HU) / (211 - 45)
KERNEL = np.exp(-0.5 * (np.arange(-9, 10) / 3.0) ** 2)
KERNEL /= KERNEL.sum()


def peaks(h, frac=0.02):
    return [i for i in range(2, len(h) - 2) if h[i] >= h[i - 1] and h[i] > h[i + 1] and h[i] > h.max() * frac]


def calibrate(im):
    h = np.bincount(im.ravel(), minlength=256).astype(float)
    s = np.convolve(h, KERNEL, "same")
    n = im.size

    def peak(lo, hi):
        p = lo + int(np.argmax(s[lo:hi]))
        return p if h[max(p - 12, 0) : p + 13].sum() >= 0.05 * n else None

    lung, soft = peak(8, 110), peak(140, 256)
    if soft is not None and soft >= 245:
        soft = None
    if lung is not None and soft is not None and soft >= lung + 100:
        per = float(np.clip((SOFT_HU - LUNG_HU) / (soft - lung), 4, 8))
        return LUNG_HU - per * lung, per, lung, soft
    if lung is not None:
        return LUNG_HU - DEFAULT_PER * lung, DEFAULT_PER, lung, soft
    return LUNG_HU - DEFAULT_PER * 45, DEFAULT_PER, lung, soft


def main():
    files = sorted(glob.glob(os.path.join(DATA, "covid-semiseg/*/img/*.jpg")))
    pooled = np.zeros(256)
    lungs, softs, ggo_v1, ggo_v3 = [], [], [], []
    for f in files:
        im = np.array(Image.open(f).convert("L"))
        mask = np.array(Image.open(f.replace("/img/", "/mask/").replace(".jpg", ".png")))
        pooled += np.bincount(im.ravel(), minlength=256)
        a, per, lung, soft = calibrate(im)
        lungs += [lung] if lung is not None else []
        softs += [soft] if soft is not None else []
        g = im[mask == 1].astype(float)
        if g.size:
            ggo_v1.append(np.median(-1350 + 1500 * g / 255))
            ggo_v3.append(np.median(a + per * g))
    s = np.convolve(pooled, KERNEL, "same")
    print(f"{len(files)} images; pooled grey peaks {peaks(s)}; saturated (>= 250) {pooled[250:].sum() / pooled.sum():.1%}")
    print(f"per-image lung peak 5/50/95 %: {np.percentile(lungs, [5, 50, 95])}, soft-tissue peak: {np.percentile(softs, [5, 50, 95])}")
    print(f"GGO median HU per image 5/50/95 %: v1 mapping {np.percentile(ggo_v1, [5, 50, 95]).round()}, v3 calibration {np.percentile(ggo_v3, [5, 50, 95]).round()}")
    for f in sorted(glob.glob(os.path.join(DATA, "covid-ct-md/*_ct.nii.gz"))):
        v = np.asarray(nib.load(f).dataobj).astype(float)
        nz = v.shape[2]
        x = v[:, :, int(nz * 0.35) : int(nz * 0.75)]
        hh, e = np.histogram(x[(x > -1100) & (x < 400)], bins=150, range=(-1100, 400))
        hs = np.convolve(hh.astype(float), KERNEL[::3] / KERNEL[::3].sum(), "same")
        print(f"{os.path.basename(f)}: HU peaks {[int(e[p] + 5) for p in peaks(hs)]}")


if __name__ == "__main__":
    main()
