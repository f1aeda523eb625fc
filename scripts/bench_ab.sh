#!/usr/bin/env bash
# A/B check of the README's benchmarks between two builds of pulmo (e.g. before and after
# a refactor that must not change performance): DICOM load, viewer frame time (lavapipe),
# brush step to GPU texture, and `pulmo compare` on a 512x512x300 pair. Runs the two
# builds in turn (A B, B A, ...) on the same inputs and prints each figure's median and
# the B/A ratio.
#   scripts/bench_ab.sh DIR_A DIR_B [ROUNDS]
# DIR_A and DIR_B each hold a release `pulmo` and the `bench_views` and `bench_annotate`
# examples (cargo build --release --bins --examples, then copy them out of target/).
# Inputs go to .bench/ab (the demo series, the demo's lungs and a perturbed copy).
set -euo pipefail
cd "$(dirname "$0")/.."
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-5}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/pulmo-xdg-$(id -u)}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
data=.bench/ab
mkdir -p "$data"
[ -f "$data/series/slice_0299.dcm" ] || "$A/pulmo" write-series demo "$data/series" >/dev/null
[ -f "$data/demo_truth.nii.gz" ] || "$A/pulmo" convert demo "$data/demo.nii.gz" >/dev/null
if [ ! -f "$data/lungs-test.nii.gz" ]; then
  .venv-tools/bin/python - "$data" <<'PY'
import sys, nibabel as nib, numpy as np
d = sys.argv[1]
img = nib.load(f"{d}/demo_truth.nii.gz"); ref = np.asarray(img.dataobj) > 0
def grow(a):  # one-voxel dilation with the 6-neighbourhood
    out = a.copy()
    for ax in range(3):
        for s in (1, -1):
            r = np.roll(a, s, axis=ax); edge = [slice(None)] * 3
            edge[ax] = 0 if s == 1 else -1; r[tuple(edge)] = False; out |= r
    return out
mid = ref.shape[0] // 2
test = np.where(np.arange(ref.shape[0])[:, None, None] >= mid, grow(ref), ~grow(~ref))
test = np.roll(test.astype(np.uint8), 2, axis=2)
for name, arr in (("ref", ref.astype(np.uint8)), ("test", test)):
    o = nib.Nifti1Image(arr, img.affine); o.set_qform(img.affine, 1); o.set_sform(img.affine, 1)
    nib.save(o, f"{d}/lungs-{name}.nii.gz")
PY
fi
out=$(mktemp -d)
for r in $(seq "$ROUNDS"); do
  # A B, then B A: neither build always runs on the machine the other just warmed.
  order="A B"; [ $((r % 2)) -eq 0 ] && order="B A"
  for side in $order; do
    dir=${!side}
    # Load: the scan + decode time pulmo reports (median of 3 in-process loads).
    "$dir/pulmo" load "$data/series" --repeat 3 | grep -E "loaded" >>"$out/load-$side"
    # Compare: the whole process, wall seconds.
    /usr/bin/time -f "%e" -o "$out/t" "$dir/pulmo" compare "$data/lungs-ref.nii.gz" \
      "$data/lungs-test.nii.gz" >/dev/null
    cat "$out/t" >>"$out/compare-$side"
    "$dir/bench_views" --frames 30 | grep -E "median" >>"$out/views-$side"
    "$dir/bench_annotate" 2>/dev/null | grep -E "GPU|upload" >>"$out/annotate-$side"
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys, pathlib
d = pathlib.Path(sys.argv[1])
def nums(name, pattern):
    text = (d / name).read_text()
    return [float(x) for x in re.findall(pattern, text)]
rows = [
    ("load 512x512x300 series (s, in-process)", "load", r"([0-9.]+) s"),
    ("pulmo compare, whole process (s)", "compare", r"^([0-9.]+)$"),
    ("viewer frame while scrolling (ms)", "views", r"scrolling[^0-9]*([0-9.]+) ms"),
    ("brush step to GPU texture (ms)", "annotate", r"GPU texture[^0-9]*median ([0-9.]+) ms"),
]
print(f"{'figure':45} {'A median':>10} {'B median':>10} {'B/A':>6}")
for title, name, pat in rows:
    a = nums(f"{name}-A", re.compile(pat, re.M)); b = nums(f"{name}-B", re.compile(pat, re.M))
    if not a or not b:
        print(f"{title:45} (no figures: see {d})"); continue
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"{title:45} {ma:10.4f} {mb:10.4f} {mb / ma:6.2f}   (n={len(a)}/{len(b)})")
PY
echo "raw output: $out"
