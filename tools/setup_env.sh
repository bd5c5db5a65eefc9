#!/usr/bin/env bash
# Build (or reuse) the biformer-mm Python environment.
#
#   bash tools/setup_env.sh
#
# Creates a virtual environment with the pinned OpenMMLab stack, builds mmcv 2.1.0
# with its compiled ops from the sdist (CUDA ops too when a CUDA GPU is visible),
# installs biformer_mm in editable mode and links it as ./.venv.
#
# Everything slow is cached under $BIFORMER_MM_CACHE (default ~/.cache/biformer-mm):
# the venv itself (keyed by the pinned requirements) and the built mmcv wheel (keyed by
# torch version and device). A second run, or CI on the same machine, only re-links
# this checkout. Running it twice is safe.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BIFORMER_MM_CACHE:-$HOME/.cache/biformer-mm}
PYTHON=${PYTHON:-python3.11}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
REQS="$ROOT/requirements/runtime.txt"

# The machine's pip config names local index folders that pip warns about for every package.
pip_install() {
  "$1" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "${@:2}" 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}
say() { printf '\033[1;34m[setup_env]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup_env] ERROR:\033[0m %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
  || die "Python 3.11 is required (torch $TORCH_VERSION wheels are cp311); set PYTHON=/path/to/python3.11."
[ -f "$REQS" ] || die "missing $REQS: run this script from a biformer-mm checkout."

CONSTRAINTS="$ROOT/requirements/constraints.txt"
KEY=$(cat "$REQS" "$ROOT/requirements/mm.txt" "$CONSTRAINTS" | sha256sum | cut -c1-12)
VENV="$CACHE/venv-$KEY"
STAMP="$VENV/.biformer-mm-ready"
mkdir -p "$CACHE/wheels"

if [ -f "$STAMP" ]; then
  say "reusing cached environment $VENV"
else
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  else
    say "completing the unfinished environment $VENV"
  fi
  say "installing build tools (see requirements/constraints.txt)"
  pip_install "$VENV/bin/python" -q --upgrade pip wheel setuptools ninja
  say "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
  pip_install "$VENV/bin/python" -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  say "installing the rest of the stack from $REQS"
  pip_install "$VENV/bin/python" -q -r "$REQS"
  pip_install "$VENV/bin/python" -q --no-deps openmim==0.3.9
fi
PY="$VENV/bin/python"

# --- mmcv with compiled ops ---------------------------------------------------------
# The wheel is keyed by the torch actually installed and the device: mmcv's ops are
# tied to torch's C++ ABI (a wheel built for another torch imports, then fails).
BUILD_KEY=$("$PY" - <<'PY'
import torch
device = "cpu"
if torch.cuda.is_available():
    major, minor = torch.cuda.get_device_capability()
    device = f"cuda{torch.version.cuda}-sm{major}{minor}"
print(f"torch{torch.__version__.replace('+', '-')}-{device}")
PY
)
if [ "$(cat "$VENV/.mmcv-build-key" 2>/dev/null)" != "$BUILD_KEY" ]; then
  case "$BUILD_KEY" in *cuda*) DEVICE=cuda ;; *) DEVICE=cpu ;; esac
  WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$BUILD_KEY"
  WHEEL=$(ls "$WHEEL_DIR"/mmcv-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHEEL" ]; then
    BUILD=$(mktemp -d "$CACHE/build.XXXXXX")
    trap 'rm -rf "$BUILD"' EXIT
    say "building mmcv $MMCV_VERSION with compiled ops for $BUILD_KEY (about 12 min on 2 cores)"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
      --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD" \
      || die "could not download the mmcv $MMCV_VERSION sdist from PyPI."
    tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch 2.14's headers need C++20; mmcv 2.1.0 hard-codes C++17.
    grep -q -- '-std=c++17' "$SRC/setup.py" || die "mmcv setup.py no longer pins -std=c++17; review the patch."
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    export MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
    if [ "$DEVICE" != cpu ]; then
      export FORCE_CUDA=1
      export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
    fi
    (cd "$SRC" && "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$BUILD/dist") \
      || die "mmcv build failed (see the compiler output above)."
    mkdir -p "$WHEEL_DIR.tmp" && mv "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR.tmp/" && mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"
    WHEEL=$(ls "$WHEEL_DIR"/mmcv-*.whl | head -n1)
    say "cached $WHEEL"
  else
    say "reusing cached mmcv wheel $WHEEL"
  fi
  pip_install "$PY" -q --no-deps --force-reinstall "$WHEEL"
  echo "$BUILD_KEY" > "$VENV/.mmcv-build-key"
fi

if [ ! -f "$STAMP" ]; then
  say "installing mmdet and mmsegmentation"
  pip_install "$PY" -q -r "$ROOT/requirements/mm.txt"
fi

say "installing biformer_mm from $ROOT (editable)"
# Legacy (setup.py develop) editable mode: mim looks for biformer_mm/.mim/{tools,configs}
# next to the imported package, which PEP 660 editable wheels do not provide.
SETUPTOOLS_ENABLE_FEATURES=legacy-editable pip_install "$PY" -q --no-deps --no-build-isolation -e "$ROOT"

say "checking the environment"
TORCH_VERSION=$TORCH_VERSION "$PY" - <<'PY' || die "environment check failed (see above)."
import os
import torch, mmcv, mmengine, mmdet, mmseg, mim
assert torch.__version__.split('+')[0] == os.environ['TORCH_VERSION'], torch.__version__
from mmcv.ops import nms, RoIAlign  # compiled ops
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
import biformer_mm
print(f"torch {torch.__version__}  mmcv {mmcv.__version__} (ops OK)  mmengine {mmengine.__version__}  "
      f"mmdet {mmdet.__version__}  mmseg {mmseg.__version__}  cuda={torch.cuda.is_available()}")
PY
touch "$STAMP"
ln -sfn "$VENV" "$ROOT/.venv"
say "ready: $ROOT/.venv -> $VENV"
