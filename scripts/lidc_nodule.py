"""How much of the real LIDC-IDRI-0001 nodule a lesion proposal covers.

The series ../shared/data/dicom/lidc-0001-16slices holds a spiculated nodule with a
ground-glass rim, touching the posterior pleura of the left lower lobe (slices 4..14 of
16). No voxel mask ships with the series, so the reference is drawn here: voxels above
-500 HU within 14 mm of the nodule's centre (slice 9, row 369, column 328), inside pulmo's
lung proposal after a per-slice closing with a 25 x 25 px square (17.6 mm), which fills
the notch the juxtapleural nodule cuts into the lung mask and stays off the chest wall.
That gives 4.1 mL (vessels entering the ball are included, so it is an approximation).

usage: lidc_nodule.py LUNGS.nii.gz LESIONS.nii.gz [MORE_LESIONS.nii.gz ...]
"""
import glob
import os
import sys

import nibabel as nib
import numpy as np
import pydicom

DATA = os.environ.get("PULMO_DATA", os.path.join(os.path.dirname(__file__), "../../shared/data"))


def main():
    files = sorted(
        glob.glob(os.path.join(DATA, "dicom/lidc-0001-16slices/*.dcm")),
        key=lambda f: float(os.path.basename(f)[:-4]),
    )
    first = pydicom.dcmread(files[0])
    px = float(first.PixelSpacing[0])
    dz = 2.5
    ml = px * px * dz / 1000
    v = np.stack(
        [
            pydicom.dcmread(f).pixel_array * float(first.RescaleSlope) + float(first.RescaleIntercept)
            for f in files
        ],
        0,
    )
    # NIfTI from pulmo: voxel (i, j, k) = (column, row, slice), slices ascending z as here.
    lung = np.transpose(np.asarray(nib.load(sys.argv[1]).dataobj), (2, 1, 0)) > 0

    def morph(a, r, grow):
        for ax in (1, 2):
            out = a.copy()
            for d in range(-r, r + 1):
                s = np.roll(a, d, ax)
                out = (out | s) if grow else (out & s)
            a = out
        return a

    closed = morph(morph(lung, 12, True), 12, False)
    z, h, w = v.shape
    seed = (9, 369, 328)
    zz, rr, cc = np.meshgrid(np.arange(z), np.arange(h), np.arange(w), indexing="ij")
    ball = ((zz - seed[0]) * dz) ** 2 + ((rr - seed[1]) * px) ** 2 + ((cc - seed[2]) * px) ** 2 <= 14.0**2
    nodule = (v > -500) & ball & closed
    ks = np.nonzero(nodule)[0]
    print(f"reference nodule {nodule.sum() * ml:.2f} mL on slices {ks.min()}..{ks.max()}")
    for path in sys.argv[2:]:
        les = np.transpose(np.asarray(nib.load(path).dataobj), (2, 1, 0)) >= 3
        inside = (les & nodule).sum()
        print(
            f"{path}: covers {100 * inside / nodule.sum():.1f} % of the nodule "
            f"({inside * ml:.2f} mL); lesion elsewhere {(les & ~nodule).sum() * ml:.2f} mL"
        )


if __name__ == "__main__":
    main()
