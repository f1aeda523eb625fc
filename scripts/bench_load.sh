#!/usr/bin/env bash
# DICOM load benchmark (issue: foundation): writes a 512x512x300 demo series with pulmo,
# then times pulmo, pydicom+numpy, SimpleITK and cat on the same files (warm cache).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -q
dir=.bench/series-512x512x300
if [ ! -f "$dir/slice_0299.dcm" ]; then
  rm -rf "$dir"
  target/release/pulmo write-series demo "$dir"
fi
.venv-tools/bin/python scripts/bench_load.py "$dir" target/release/pulmo --repeat "${REPEAT:-5}"
