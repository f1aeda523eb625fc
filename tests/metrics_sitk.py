"""Dice and Jaccard of two label masks from SimpleITK, as JSON (cross-check of
pulmo::metrics; run by tests/metrics_real.rs).

usage: metrics_sitk.py REFERENCE.nii.gz TEST.nii.gz [LABEL ...]
prints {"dice": .., "jaccard": .., "labels": {"1": {"dice": .., "jaccard": ..}, ...}}
where the top-level values are SimpleITK's over all labels together
(LabelOverlapMeasuresImageFilter's GetDiceCoefficient() / GetJaccardCoefficient()).
"""

import json
import sys

import SimpleITK as sitk


def main() -> None:
    ref = sitk.Cast(sitk.ReadImage(sys.argv[1]), sitk.sitkUInt8)
    test = sitk.Cast(sitk.ReadImage(sys.argv[2]), sitk.sitkUInt8)
    # Same grid by construction; copy the reference's to avoid float32 round-off checks.
    test.CopyInformation(ref)
    f = sitk.LabelOverlapMeasuresImageFilter()
    f.Execute(ref, test)
    out = {
        "dice": f.GetDiceCoefficient(),
        "jaccard": f.GetJaccardCoefficient(),
        "labels": {},
    }
    for label in sys.argv[3:]:
        lab = int(label)
        out["labels"][label] = {
            "dice": f.GetDiceCoefficient(lab),
            "jaccard": f.GetJaccardCoefficient(lab),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
