#!/usr/bin/env bash
# Metrics benchmark (issue: quantification and comparison): pulmo compare against
# SimpleITK and medpy on a realistic pair of 512x512x300 lung masks; see
# scripts/bench_metrics.py. Peers live in .venv-bench (created here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q
bin="${CARGO_TARGET_DIR:-target}/release/pulmo"
mkdir -p .bench
[ -f .bench/demo-512x512x300_truth.nii.gz ] || "$bin" convert demo .bench/demo-512x512x300.nii.gz
if ! .venv-bench/bin/python -c "import medpy, SimpleITK, nibabel, scipy" 2>/dev/null; then
  python3 -m venv .venv-bench
  .venv-bench/bin/pip install -q --disable-pip-version-check numpy==2.4.6 scipy==1.17.1 \
    medpy==0.5.2 nibabel==5.4.2 SimpleITK==2.5.7
fi
.venv-bench/bin/python scripts/bench_metrics.py "$bin" \
  .bench/demo-512x512x300_truth.nii.gz .bench/metrics
