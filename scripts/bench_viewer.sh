#!/usr/bin/env bash
# Viewer benchmarks (issue: viewer): frame time while scrolling and dragging W/L on the
# 512x512x300 demo in the three-view layout (offscreen, lavapipe or --gpu), and the time
# from `pulmo PATH` to the first image of a 512x512x300 series (under Xvfb when there is
# no display).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/pulmo-xdg-$(id -u)}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
cargo build --release -q --example bench_views
cargo build --release -q
target/release/examples/bench_views "$@"
dir=.bench/series-512x512x300
[ -f "$dir/slice_0299.dcm" ] || target/release/pulmo write-series demo "$dir"
started_xvfb=""
if [ -z "${DISPLAY:-}" ]; then
  Xvfb :77 -screen 0 1400x900x24 >/dev/null 2>&1 & started_xvfb=$!
  export DISPLAY=:77
  sleep 1
fi
for i in 1 2 3 4 5; do
  PULMO_BENCH_FIRST_IMAGE=1 timeout 60 target/release/pulmo "$dir" 2>/dev/null | grep "first image"
done
target/release/pulmo load "$dir" --repeat 3 | grep -E "scan|loaded"
# Process start-up: the viewer's executable (no libtorch) and the AI helper's (libtorch).
for i in 1 2 3; do
  /usr/bin/time -f "pulmo --version (viewer process start): %e s" target/release/pulmo --version >/dev/null
  /usr/bin/time -f "pulmo-ai --version (AI helper start, libtorch loaded): %e s" target/release/pulmo-ai --version >/dev/null
done
[ -n "$started_xvfb" ] && kill "$started_xvfb"
exit 0
