"""nibabel's side of the label save/load benchmark: load (with the voxels read into
memory) and save the same .nii.gz, median of REPEAT runs, as JSON."""
import json
import os
import sys
import time

import nibabel as nib
import numpy as np

path, out_dir, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
load, save = [], []
for r in range(repeat):
    t = time.perf_counter()
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    load.append(time.perf_counter() - t)
    t = time.perf_counter()
    nib.save(nib.Nifti1Image(data, img.affine, img.header), os.path.join(out_dir, f"nibabel-save-{r}.nii.gz"))
    save.append(time.perf_counter() - t)
load.sort()
save.sort()
print(json.dumps({"tool": f"nibabel {nib.__version__}", "voxels": int(data.size),
                  "load_s": round(load[len(load) // 2], 4), "save_s": round(save[len(save) // 2], 4)}))
