#!/usr/bin/env bash
# GPU check on a CUDA machine (issue: AI proposals, viewer). Run there with binaries
# built here (`cargo build --release --features cuda --bins --example bench_views`; the
# AI helper `pulmo-ai` must lie next to PULMO_BIN), since nothing can be built or fetched
# there:
#
#   PULMO_BIN=... BENCH_VIEWS_BIN=... PULMO_DATA=... OUT=... scripts/gpu_check.sh
#
#   TORCH_LIB  libtorch with CUDA (default: /opt/torch/.venv/.../torch/lib)
#   PY         a python with torch + safetensors for the PyTorch peer (default python3)
#   REPEAT     inference runs per model (default 3; medians are reported)
#   TRAIN_MIN  wall-time budget of each lesion training run in minutes (0: no training)
#   DEVICE     cuda (default; cpu for a dry run of this script without a GPU)
#   STEPS, TRAIN_EXTRA   steps per epoch (75) and extra train arguments (dry runs)
#   WARM_ONLY=1  stage 1 without the separate whole-process runs, CPU runs and agreement
#   ONLY       train only these configurations (e.g. "b12"); SKIP_BENCH=1 skips stages 1-2
#
# Stages, each time-limited so one failure leaves the others' results:
#  1. inference on the 512x512x300 demo: `pulmo segment lung|lesion --device cuda`,
#     first REPEAT jobs in one process (`--repeat`: the first cold, the others warm as
#     in the viewer) beside the same U-Net in PyTorch (half, same batch; warm and cold),
#     then REPEAT separate processes (whole-process wall time with file reading, CUDA
#     start-up and writing; peak GPU memory sampled by nvidia-smi every 100 ms), once on
#     the CPU for the agreement of half-precision CUDA with f32 CPU results;
#  2. viewer frame times: `bench_views --gpu` (wgpu on the GPU, offscreen);
#  3. lesion training: the configurations below, concurrently on the one GPU, each with
#     `--time-budget-min $TRAIN_MIN --keep-best`; each run's weights, manifest and log
#     are packed into $OUT/train-NAME.tar.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${PULMO_BIN:?}" "${BENCH_VIEWS_BIN:?}" "${PULMO_DATA:?}" "${OUT:?}"
TORCH_LIB="${TORCH_LIB:-/opt/torch/.venv/lib/python3.12/site-packages/torch/lib}"
PY="${PY:-python3}"
REPEAT="${REPEAT:-3}"
TRAIN_MIN="${TRAIN_MIN:-0}"
DEVICE="${DEVICE:-cuda}"
STEPS="${STEPS:-75}"
TRAIN_EXTRA="${TRAIN_EXTRA:-}"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PULMO_DATA
work=/tmp/pulmo-gpu
mkdir -p "$work" "$OUT"
log() { echo "== $(date +%T) $*"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
echo "$(nproc) CPU threads"

peak_gpu_mib() { # runs "$@" while sampling GPU memory; prints the peak in MiB
  command -v nvidia-smi >/dev/null || { "$@"; return; }
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$work/smi" &
  local smi=$!
  "$@"
  local rc=$?
  kill "$smi" 2>/dev/null
  wait "$smi" 2>/dev/null
  echo "peak GPU memory used: $(sort -n "$work/smi" | tail -1) MiB (whole GPU, nvidia-smi)"
  return $rc
}

stage_inference() {
  local ct="$work/demo.nii.gz"
  log "demo CT"
  "$PULMO_BIN" convert demo "$ct" || return 1
  for task in lung lesion; do
    log "segment $task $DEVICE, one process, $REPEAT runs (run 1 cold, then warm as in the viewer)"
    "$PULMO_BIN" segment "$task" "$ct" -o "$work/$task-warm.nii.gz" --device "$DEVICE" \
      --repeat "$REPEAT" 2>&1 | grep -E "^run |total" | tee "$work/seg-$task-1.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { log "segment $task on $DEVICE failed"; return 2; }
    local line hw batch
    line=$(grep "model input" "$work/seg-$task-1.log" | tail -1)
    hw=$(echo "$line" | sed -E 's/.*[(; ]([0-9]+)x([0-9]+) model input.*/\1 \2/')
    batch=$(echo "$line" | sed -E 's/.*batch ([0-9]+).*/\1/')
    set -- $hw
    for mode in "" --cold; do
      log "PyTorch peer $task (${1}x${2}, batch $batch, $DEVICE) $mode"
      "$PY" scripts/bench_infer_torch.py "weights/$task.json" --slices 300 --height "$1" \
        --width "$2" --batch "$batch" --repeat "$REPEAT" --device "$DEVICE" $mode \
        $([ "$DEVICE" = cuda ] && echo --half)
    done
    [ "${WARM_ONLY:-0}" = 1 ] && continue
    for r in $(seq "$REPEAT"); do
      log "segment $task cuda run $r"
      peak_gpu_mib "$PULMO_BIN" segment "$task" "$ct" -o "$work/$task-cuda.nii.gz" \
        --device "$DEVICE" >"$work/seg-$task-p$r.log" 2>&1
      local rc=$?
      grep -vE "slices$" "$work/seg-$task-p$r.log"
      [ $rc -eq 0 ] || { log "segment $task on CUDA failed (rc $rc)"; return 2; }
    done
    log "segment $task cpu ($(nproc) threads)"
    "$PULMO_BIN" segment "$task" "$ct" -o "$work/$task-cpu.nii.gz" --device cpu 2>&1 |
      grep -E "model|wall|slices|done" || true
    log "agreement of CUDA (half) with CPU (f32), $task"
    "$PULMO_BIN" compare "$work/$task-cpu.nii.gz" "$work/$task-cuda.nii.gz" 2>&1 | head -8
  done
  "$PULMO_BIN" compare "${ct%.nii.gz}_truth.nii.gz" "$work/lesion-warm.nii.gz" --labels 3,4 | head -5
}

# name: extra `pulmo train lesion` arguments (all: seed 7, 1.0 mm, crop 192, depth 4).
CONFIGS=(
  "b12:--base 12 --batch 8 --real-per-batch 6"
  "b12strong:--base 12 --batch 8 --real-per-batch 6 --augment strong"
  "b16:--base 16 --batch 16 --real-per-batch 12"
  "b16mix:--base 16 --batch 16 --real-per-batch 8"
)

stage_train() {
  local pids=()
  # The budget plus data loading, the first epoch's overshoot and the evaluation.
  local train_limit
  train_limit=$(awk "BEGIN { print int($TRAIN_MIN * 60 + 100) }")
  if [ -n "${ONLY:-}" ]; then
    local keep=()
    for c in "${CONFIGS[@]}"; do
      [[ " $ONLY " == *" ${c%%:*} "* ]] && keep+=("$c")
    done
    CONFIGS=("${keep[@]}")
  fi
  for c in "${CONFIGS[@]}"; do
    local name="${c%%:*}" args="${c#*:}"
    local dir="$work/train-$name"
    mkdir -p "$dir"
    (
      # shellcheck disable=SC2086
      timeout "$train_limit" "$PULMO_BIN" train lesion --data "$PULMO_DATA" -o "$dir" --spacing 1.0 --crop 192 \
        --depth 4 --seed 7 --epochs 400 --steps "$STEPS" $args --keep-best $TRAIN_EXTRA \
        --time-budget-min "$TRAIN_MIN" --device "$DEVICE" >"$dir/train.log" 2>&1
      echo "exit $?" >>"$dir/train.log"
      tar -C "$dir" -cf "$OUT/train-$name.tar" lesion.safetensors lesion.json train.log
    ) &
    pids+=($!)
  done
  wait "${pids[@]}"
  for c in "${CONFIGS[@]}"; do
    local name="${c%%:*}"
    log "training $name"
    grep -E "data|device|budget|keeping|Dice|done|exit|rror" "$work/train-$name/train.log" |
      grep -v "^epoch" | head -12
    grep "^epoch" "$work/train-$name/train.log" | tail -3
  done
}

if [ "${SKIP_BENCH:-0}" = 1 ]; then
  log "stages 1-2 skipped"
else
log "stage 1: inference"
export work PY REPEAT DEVICE
export -f log peak_gpu_mib stage_inference
timeout 150 bash -c stage_inference
rc=$?
if [ $rc -eq 2 ]; then
  log "CUDA inference failed: stopping (nothing else would work)"
  ldd "$(dirname "$PULMO_BIN")/pulmo-ai" | grep -E "torch|c10|not found"
  exit 3
fi
log "stage 2: viewer"
timeout 60 "$BENCH_VIEWS_BIN" --gpu --frames 120 || log "bench_views failed ($?)"
fi
if [ "$TRAIN_MIN" != 0 ]; then
  log "stage 3: lesion training, $TRAIN_MIN min per run"
  stage_train
fi
log "done"
