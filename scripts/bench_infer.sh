#!/usr/bin/env bash
# AI inference benchmark (issue: AI proposals). On the 512x512x300 synthetic demo CT:
# - pulmo segment lung / lesion (release, CPU): wall time, model time, peak memory;
# - the same U-Net with the same weights in PyTorch (CPU, same threads, same input size
#   and batch), model time per slice, to show the Rust pipeline adds no overhead.
# Run: scripts/bench_infer.sh   (REPEAT=N for more runs; medians are reported)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# BIN=target/debug/pulmo (the dev profile is optimised) skips the release build;
# LESION_MODEL=DIR/lesion.json benchmarks another lesion manifest.
if [ -z "${BIN:-}" ]; then
  cargo build --release -q
fi
bin="${BIN:-${CARGO_TARGET_DIR:-target}/release/pulmo}"
lesion_model="${LESION_MODEL:-weights/lesion.json}"
mkdir -p .bench
ct=.bench/demo-512x512x300.nii.gz
[ -f "$ct" ] || "$bin" convert demo "$ct"
# SKIP_PEER=1: pulmo only (no PyTorch venv needed).
if [ -z "${SKIP_PEER:-}" ] && [ ! -x .venv-bench/bin/python ]; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q --disable-pip-version-check torch==2.11.0 safetensors==0.6.2 numpy==2.4.6
fi
repeat="${REPEAT:-3}"
for task in lung lesion; do
  for r in $(seq "$repeat"); do
    model="weights/$task.json"
    [ "$task" = lesion ] && model="$lesion_model"
    /usr/bin/time -f "peak RSS %M KB, wall %e s" "$bin" segment "$task" "$ct" --model "$model" \
      -o ".bench/demo-$task.nii.gz" --device cpu > ".bench/segment-$task-$r.log" 2>&1
    grep -E "model|peak" ".bench/segment-$task-$r.log" | tr '\n' ' '
    echo
  done
  line=$(grep "model input" ".bench/segment-$task-1.log" | tail -1)
  # The last "HxW model input" (lesion runs report the lung model's first).
  hw=$(echo "$line" | sed -E 's/.*[(; ]([0-9]+)x([0-9]+) model input.*/\1 \2/')
  batch=$(echo "$line" | sed -E 's/.*batch ([0-9]+).*/\1/')
  # Lesion runs cover only the lungs' slices ("N of M slices").
  slices=$(echo "$line" | sed -E 's/.*batch [0-9]+, ([0-9]+) of [0-9]+ slices.*/\1/')
  case "$slices" in ''|*[!0-9]*) slices=300 ;; esac
  flip=""
  echo "$line" | grep -q "mirror image" && flip="--flip"
  model="weights/$task.json"
  [ "$task" = lesion ] && model="$lesion_model"
  [ -n "${SKIP_PEER:-}" ] && continue
  set -- $hw
  echo "PyTorch peer ($task, ${1}x${2}, batch $batch, $slices slices $flip):"
  .venv-bench/bin/python scripts/bench_infer_torch.py "$model" --slices "$slices" \
    --height "$1" --width "$2" --batch "$batch" --repeat "$repeat" $flip
done
"$bin" compare .bench/demo-512x512x300_truth.nii.gz .bench/demo-lesion.nii.gz --labels 3,4 | head -5
