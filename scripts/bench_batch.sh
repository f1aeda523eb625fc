#!/usr/bin/env bash
# Throughput of `pulmo batch` (issue #18): lung segmentation + quantification over the
# nine real LCTSC cases (256 x 256) in one process, release build, CPU. Prints studies
# per hour and the per-study overhead beyond the segmentation itself (reading the CT,
# writing the labels, quantifying, writing the JSON and the row), from the per-study
# `seconds` and `segment_seconds` of results.json; the first study also pays the AI
# process's start and the model load, so it is reported apart.
# Usage: scripts/bench_batch.sh   Env: PULMO_BIN (default target/release/pulmo), PULMO_DATA, OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(cd "${PULMO_DATA:-../shared/data}" && pwd)
bin=${PULMO_BIN:-target/release/pulmo}
export LD_LIBRARY_PATH=$PWD/.venv/libtorch/lib:${LD_LIBRARY_PATH:-}
out=${OUT:-.bench/batch}
rm -rf "$out"
mkdir -p "$out"
manifest=$out/manifest.csv
echo "id,ct" > "$manifest"
for f in "$data"/lctsc256/Case_*_ct.nii.gz; do
  n=$(basename "$f" _ct.nii.gz)
  echo "$n,$f" >> "$manifest"
done
echo "command: $0, date: $(date -Iseconds), machine: nproc=$(nproc)"
start=$(date +%s%N)
"$bin" batch "$manifest" -o "$out/run" --tasks lung,quantify --device cpu > "$out/stdout.txt" 2> "$out/stderr.txt"
end=$(date +%s%N)
python3 - "$out/run/results.json" "$start" "$end" <<'PY'
import json, statistics, sys
rows = json.load(open(sys.argv[1]))["rows"]
wall = (int(sys.argv[3]) - int(sys.argv[2])) / 1e9
ok = [r for r in rows if r["status"] == "ok"]
print(f"{len(ok)} of {len(rows)} studies ok in {wall:.1f} s wall: {len(ok) / wall * 3600:.0f} studies/hour")
first = min(ok, key=lambda r: r["id"])
rest = [r for r in ok if r is not first]
def over(r):
    return r["seconds"] - r["segment_seconds"], 100 * (r["seconds"] - r["segment_seconds"]) / r["segment_seconds"]
for r in ok:
    o, p = over(r)
    print(f"  {r['id']}: {r['seconds']:.2f} s, segmentation {r['segment_seconds']:.2f} s, overhead {o:.2f} s ({p:.1f} %), lungs {r['lungs_ml']:.0f} mL")
o = [over(r) for r in rest]
print(f"after the first study (model load): median {statistics.median(r['seconds'] for r in rest):.2f} s per study, "
      f"overhead beyond segmentation median {statistics.median(x[0] for x in o):.2f} s = {statistics.median(x[1] for x in o):.1f} %, "
      f"max {max(x[1] for x in o):.1f} %")
print(f"first study {first['seconds']:.2f} s (segmentation incl. AI process start and model load {first['segment_seconds']:.2f} s)")
PY
