#!/usr/bin/env bash
# Installs whatever pulmo needs and is missing; fast and silent when all is there.
#   scripts/setup.sh [--torch lean|full] [--no-tools]
# - Debian packages for Vulkan (lavapipe on machines without a GPU), EGL and X11, and a
#   single-node Slurm with munge for the batch test (apt-get as root, or through sudo when
#   not root; the daemons are started only by scripts/slurm_ci.sh, on loopback).
# - .venv: PyPI's torch==2.11.0 wheel, the libtorch that tch 0.24 links against.
#   lean (default): the wheel without dependencies plus the two small CUDA runtime wheels
#   libtorch_cpu.so links against (~1.3 GB). full: all CUDA dependencies (~4.6 GB), for
#   NVIDIA GPUs (build with `--features cuda`).
# - .venv-tools: Python tools used by the tests and benchmarks (pydicom, SimpleITK,
#   nibabel, numpy).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VARIANT="${PULMO_TORCH:-lean}"
TOOLS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --torch) TORCH_VARIANT="$2"; shift 2 ;;
    --no-tools) TOOLS=0; shift ;;
    *) echo "setup.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

TORCH_VERSION=2.11.0
CUDA_RUNTIME=nvidia-cuda-runtime==13.0.96
CUDA_CUPTI=nvidia-cuda-cupti==13.0.85
TOOLS_PKGS="pydicom==3.0.2 pydicom-data==1.0.0 numpy==2.4.6 SimpleITK==2.5.7 nibabel==5.4.2 highdicom==0.28.2"

say() { echo "setup: $*"; }

# ---- Debian packages -------------------------------------------------------------
DEB_PKGS="mesa-vulkan-drivers libvulkan1 libgl1-mesa-dri libegl1 libegl-mesa0 libxkbcommon-x11-0 \
libx11-xcb1 libxcursor1 libxrandr2 libxi6 xvfb xauth python3-venv cmake g++ time slurm-wlm munge"
if command -v dpkg-query >/dev/null 2>&1; then
  missing=""
  for p in $DEB_PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      # python3-venv is not needed where python3 already has a working venv module.
      if [ "$p" = python3-venv ] && python3 -c 'import ensurepip, venv' 2>/dev/null; then continue; fi
      missing="$missing $p"
    fi
  done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "setup: missing Debian packages:$missing" >&2
      echo "setup: run as root: apt-get install -y$missing" >&2
      exit 1
    fi
    say "installing Debian packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  fi
else
  say "not a Debian system: make sure Vulkan (or GL) drivers and X11/Wayland libraries are installed"
fi

# ---- Rust ------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install Rust >= 1.95 (rustup) first" >&2
  exit 1
fi
rust_minor=$(rustc --version | sed -E 's/rustc 1\.([0-9]+).*/\1/')
if [ "${rust_minor:-0}" -lt 95 ]; then
  echo "setup: $(rustc --version) is too old: pulmo needs Rust >= 1.95 (rustup update)" >&2
  exit 1
fi

# ---- libtorch from PyPI's torch wheel -------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
have_variant=$(cat .venv/.torch-variant 2>/dev/null || true)
if [ ! -f .venv/libtorch/lib/libtorch_cpu.so ] || { [ "$TORCH_VARIANT" = full ] && [ "$have_variant" != full ]; }; then
  # The wheel unpacks to ~1.3 GB (4.6 GB full) and the first build needs ~10 GB more:
  # say so plainly instead of failing half-way with "No space left on device".
  free_gb=$(df -Pk . | awk 'NR == 2 { print int($4 / 1048576) }')
  if [ "${free_gb:-0}" -lt 4 ]; then
    echo "setup: only ${free_gb} GB free on the disk holding $PWD; libtorch needs ~1.3 GB" \
      "(4.6 GB full) and the first build ~10 GB: free some space first" >&2
    exit 1
  fi
  case "$TORCH_VARIANT" in
    lean)
      say "installing libtorch $TORCH_VERSION (lean CPU install, ~1.3 GB)"
      .venv/bin/pip install -q --disable-pip-version-check --no-cache-dir --no-deps "torch==$TORCH_VERSION" "$CUDA_RUNTIME" "$CUDA_CUPTI" ;;
    full)
      say "installing torch $TORCH_VERSION with all CUDA dependencies (~4.6 GB)"
      .venv/bin/pip install -q --disable-pip-version-check --no-cache-dir "torch==$TORCH_VERSION" ;;
    *) echo "setup: --torch takes lean or full, not $TORCH_VARIANT" >&2; exit 2 ;;
  esac
  echo "$TORCH_VARIANT" > .venv/.torch-variant
fi
site=$(ls -d .venv/lib/python3.*/site-packages | head -n1)
ln -sfn "${site#.venv/}/torch" .venv/libtorch
[ -f .venv/libtorch/lib/libtorch_cpu.so ] || { echo "setup: libtorch missing under .venv/libtorch" >&2; exit 1; }

# ---- Python tools for tests and benchmarks -------------------------------------
if [ "$TOOLS" = 1 ] && [ "$(cat .venv-tools/.ok 2>/dev/null)" != "$TOOLS_PKGS" ]; then
  say "installing Python tools into .venv-tools ($TOOLS_PKGS)"
  [ -x .venv-tools/bin/python ] || python3 -m venv .venv-tools
  .venv-tools/bin/pip install -q --disable-pip-version-check $TOOLS_PKGS
  echo "$TOOLS_PKGS" > .venv-tools/.ok
fi
exit 0
