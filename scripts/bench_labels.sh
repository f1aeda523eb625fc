#!/usr/bin/env bash
# Label map save/load benchmark (issue: annotation): the 512x512x300 demo truth as .nii.gz,
# loaded and saved by pulmo (release) and by nibabel, same file, medians of REPEAT runs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q --example bench_labels
bin="${CARGO_TARGET_DIR:-target}/release"
mkdir -p .bench/labels
[ -f .bench/demo-512x512x300_truth.nii.gz ] || "$bin/pulmo" convert demo .bench/demo-512x512x300.nii.gz
repeat="${REPEAT:-5}"
"$bin/examples/bench_labels" .bench/demo-512x512x300_truth.nii.gz .bench/labels "$repeat"
.venv-tools/bin/python scripts/bench_labels.py .bench/demo-512x512x300_truth.nii.gz .bench/labels "$repeat"
