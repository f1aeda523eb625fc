#!/usr/bin/env bash
# A bounded slice of the CLI fuzzing corpus (issue #16), run by `make test`: derives the
# corpus from the real data (../shared/data or $PULMO_DATA) with scripts/fuzz_corpus.py,
# runs SAMPLE cases (default 300, stratified by family; about 3 minutes on 2 cores) of
# `pulmo info/convert/load/compare/quantify/import-seg` under a 4 GiB address-space limit
# and a 20 s time-out with scripts/fuzz_run.py, and fails on any panic, crash, hang,
# allocation abort or silent wrong answer. The corpus is deleted afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${PULMO_DATA:-../shared/data}
if [ ! -d "$data/dicom" ]; then
  if [ "${CI:-}" = true ]; then
    echo "fuzz_ci: the real data ($data) is missing" >&2
    exit 1
  fi
  echo "fuzz_ci: skipped: the real data ($data) is missing"
  exit 0
fi
cargo build --bin pulmo
work=$(mktemp -d /tmp/pulmo-fuzz-ci.XXXXXX)
trap 'rm -rf "$work"' EXIT
.venv-tools/bin/python scripts/fuzz_corpus.py --data "$data" --out "$work/corpus" --seed "${SEED:-1}" >/dev/null
.venv-tools/bin/python scripts/fuzz_run.py --bin target/debug/pulmo --corpus "$work/corpus" \
  --jobs 2 --timeout 20 --mem-mb 4096 --sample "${SAMPLE:-300}" --seed "${SEED:-1}" --quiet
