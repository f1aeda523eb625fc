#!/usr/bin/env bash
# AI inference benchmark (issue: AI proposals). On the 512x512x300 synthetic demo CT:
# - pulmo segment lung / lesion (release, CPU): wall time, model time, peak memory;
# - the same U-Net with the same weights in PyTorch (CPU, same threads, same input size
#   and batch), model time per slice, to show the Rust pipeline adds no overhead.
# Run: scripts/bench_infer.sh   (REPEAT=N for more runs; medians are reported)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/pulmo"
mkdir -p .bench
ct=.bench/demo-512x512x300.nii.gz
[ -f "$ct" ] || "$bin" convert demo "$ct"
if [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q --disable-pip-version-check torch==2.11.0 safetensors==0.6.2 numpy==2.4.6
fi
repeat="${REPEAT:-3}"
for task in lung lesion; do
  for r in $(seq "$repeat"); do
    /usr/bin/time -f "peak RSS %M KB, wall %e s" "$bin" segment "$task" "$ct" \
      -o ".bench/demo-$task.nii.gz" --device cpu > ".bench/segment-$task-$r.log" 2>&1
    grep -E "model|peak" ".bench/segment-$task-$r.log" | tr '\n' ' '
    echo
  done
  line=$(grep "model input" ".bench/segment-$task-1.log" | tail -1)
  # The last "HxW model input" (lesion runs report the lung model's first).
  hw=$(echo "$line" | sed -E 's/.*[(; ]([0-9]+)x([0-9]+) model input.*/\1 \2/')
  batch=$(echo "$line" | sed -E 's/.*batch ([0-9]+).*/\1/')
  set -- $hw
  echo "PyTorch peer ($task, ${1}x${2}, batch $batch):"
  .venv-bench/bin/python scripts/bench_infer_torch.py "weights/$task.json" --slices 300 \
    --height "$1" --width "$2" --batch "$batch" --repeat "$repeat"
done
"$bin" compare .bench/demo-512x512x300_truth.nii.gz .bench/demo-lesion.nii.gz --labels 3,4 | head -5
