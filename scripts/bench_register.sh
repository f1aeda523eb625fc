#!/usr/bin/env bash
# Synthetic registration benchmark on real LCTSC CTs (known deformation, inserted lesion changes):
# pulmo register (+ progress) vs itk-elastix B-spline vs identity. See scripts/bench_register.py.
# Usage: scripts/bench_register.sh [--cases Case_007,Case_008,Case_000] [--methods pulmo,elastix,identity]
#                                  [--seed 1] [--threads 2] [--speed]
# Env: PULMO_BIN (default target/release/pulmo), PYTHON (interpreter used to create the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-bench
reqs=(itk-elastix==0.25.4 SimpleITK==2.5.7 numpy==2.2.6 scipy==1.15.3)
stamp="$venv/.reqs"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${reqs[*]}" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "${reqs[@]}"
    echo "${reqs[*]}" > "$stamp"
fi
exec "$venv/bin/python" scripts/bench_register.py "$@"
