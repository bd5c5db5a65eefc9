#!/usr/bin/env bash
# Build (or reuse) a biformer-mm Python environment.
#
#   bash tools/setup_env.sh                        # the modern stack, linked as ./.venv
#   STACK=classic bash tools/setup_env.sh          # the classic stack, ./.venv-classic
#   PYTHON=python3.12 bash tools/setup_env.sh      # any Python 3.10-3.12 with wheels
#
# STACK picks the pinned torch/torchvision (requirements/constraints-$STACK.txt):
#   modern   torch 2.14.1, torchvision 0.29.1 (Python 3.10-3.12; the default)
#   classic  torch 2.1.2, torchvision 0.16.2, numpy<2: mmdet's install guide and
#            OpenMMLab's prebuilt mmcv 2.1.0 wheels (Python 3.10-3.11)
# Both get mmengine, mmcv 2.1.0 built with its ops from the sdist (CUDA ops when a GPU is
# visible), mmdet, mmsegmentation, timm, openmim, pytest, the export tools, and biformer_mm
# in editable mode, linked for mim. Cached under $BIFORMER_MM_CACHE (default ~/.cache/biformer-mm): the
# venv (keyed by stack, Python version and every pin) and the mmcv wheel (keyed
# by torch version and device). A second run only re-links this checkout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${BIFORMER_MM_CACHE:-$HOME/.cache/biformer-mm}
STACK=${STACK:-modern}
PYTHON=${PYTHON:-python3.11}
MMCV_VERSION=2.1.0
OPENMIM_VERSION=0.3.9
REQS="$ROOT/requirements/runtime.txt"
CONSTRAINTS="$ROOT/requirements/constraints-$STACK.txt"
DEPLOY_REQS="$ROOT/requirements/deploy-$STACK.txt"

# The machine's pip config names local index folders that pip warns about for every package.
pip_install() {
  "$1" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "${@:2}" 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
}
SECONDS=0
say() { printf '\033[1;34m[setup_env +%ss]\033[0m %s\n' "$SECONDS" "$*"; }
die() { printf '\033[1;31m[setup_env] ERROR:\033[0m %s\n' "$*" >&2; exit 1; }

case "$STACK" in
  # torch 2.14's headers need C++20; mmcv 2.1.0 hard-codes C++17.
  modern) LINK="$ROOT/.venv"; MMCV_CXX_STD=c++20 ;;
  # Built as OpenMMLab builds its wheels for torch 2.1: unpatched.
  classic) LINK="$ROOT/.venv-classic"; MMCV_CXX_STD=c++17 ;;
  *) die "unknown STACK=$STACK: use STACK=modern (the default) or STACK=classic." ;;
esac
[ -f "$REQS" ] && [ -f "$CONSTRAINTS" ] && [ -f "$DEPLOY_REQS" ] \
  || die "missing $REQS, $DEPLOY_REQS or $CONSTRAINTS: run this script from a biformer-mm checkout."
TORCH_VERSION=$(sed -n 's/^torch==//p' "$CONSTRAINTS")
TORCHVISION_VERSION=$(sed -n 's/^torchvision==//p' "$CONSTRAINTS")

command -v "$PYTHON" >/dev/null 2>&1 \
  || die "$PYTHON not found: set PYTHON to a Python 3.10, 3.11 or 3.12 interpreter (e.g. PYTHON=/usr/bin/python3.12)."
if ! "$PYTHON" -c '' >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1 \
    && PYENV_VERSION_OF=$(pyenv whence "$PYTHON" 2>/dev/null | tail -n1) && [ -n "$PYENV_VERSION_OF" ]; then
  # A pyenv shim of a version that is installed but not active here.
  say "$PYTHON is a pyenv shim of the inactive version $PYENV_VERSION_OF: using it directly"
  PYTHON="$(pyenv root)/versions/$PYENV_VERSION_OF/bin/$PYTHON"
fi
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>&1) \
  || die "$PYTHON does not run: $PYVER"
case "$PYVER" in
  3.10|3.11|3.12) ;;
  *) die "$PYTHON is Python $PYVER; biformer-mm is tested on Python 3.10, 3.11 and 3.12: set PYTHON to one of them." ;;
esac
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$PYTHON (Python $PYVER) lacks the venv/ensurepip modules: install them (Debian/Ubuntu: apt install python$PYVER-venv)."

# Every pin this script installs is in the key, so that changing one builds anew.
KEY=$(printf 'stack=%s python=%s openmim=%s\n' "$STACK" "$PYVER" "$OPENMIM_VERSION" \
  | cat - "$REQS" "$ROOT/requirements/mm.txt" "$DEPLOY_REQS" "$CONSTRAINTS" | sha256sum | cut -c1-12)
VENV="$CACHE/venv-$KEY"
STAMP="$VENV/.biformer-mm-ready"
mkdir -p "$CACHE/wheels"

if [ -f "$STAMP" ]; then
  say "reusing cached $STACK environment $VENV (Python $PYVER)"
else
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating the $STACK virtual environment $VENV (Python $PYVER)"
    "$PYTHON" -m venv "$VENV"
  else
    say "completing the unfinished $STACK environment $VENV (Python $PYVER)"
  fi
  say "installing build tools (see ${CONSTRAINTS#$ROOT/})"
  pip_install "$VENV/bin/python" -q --upgrade pip wheel setuptools ninja
  # Name what is missing before downloading gigabytes: the torch wheels are the only
  # binary-only pins.
  MISSING=()
  for PIN in "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"; do
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --dry-run --no-deps \
      --only-binary "${PIN%%==*}" "$PIN" >"$VENV/.wheel-check.log" 2>&1 || MISSING+=("$PIN")
  done
  if [ ${#MISSING[@]} -gt 0 ]; then
    # pip's own words first: a network, proxy or index error fails the check too.
    tail -n 5 "$VENV/.wheel-check.log" >&2
    rm -rf "$VENV"
    die "pip finds no wheel of ${MISSING[*]} for Python $PYVER on $(uname -m) (the $STACK stack; PyPI and the indexes of your pip config were searched). Use a Python these wheels exist for (e.g. PYTHON=python3.11), or the other STACK."
  fi
  say "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION"
  pip_install "$VENV/bin/python" -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  say "installing the rest of the stack from ${REQS#$ROOT/}"
  pip_install "$VENV/bin/python" -q -r "$REQS"
  pip_install "$VENV/bin/python" -q --no-deps "openmim==$OPENMIM_VERSION"
fi
PY="$VENV/bin/python"

# --- mmcv with compiled ops ---------------------------------------------------------
# The wheel is keyed by the torch actually installed and the device: mmcv's ops are
# tied to torch's C++ ABI (a wheel built for another torch imports, then fails). Wheels
# for several Pythons share that directory (their names carry the Python tag).
read -r BUILD_KEY PYTAG < <("$PY" - <<'PY'
import sys
import torch
device = "cpu"
if torch.cuda.is_available():
    major, minor = torch.cuda.get_device_capability()
    device = f"cuda{torch.version.cuda}-sm{major}{minor}"
print(f"torch{torch.__version__.replace('+', '-')}-{device}", "cp%d%d" % sys.version_info[:2])
PY
)
# The venv records the mmcv version and build key it holds: a change of either reinstalls.
if [ "$(cat "$VENV/.mmcv-build-key" 2>/dev/null)" != "$MMCV_VERSION-$BUILD_KEY" ]; then
  case "$BUILD_KEY" in *cuda*) DEVICE=cuda ;; *) DEVICE=cpu ;; esac
  WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$BUILD_KEY"
  WHEEL=$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-$PYTAG-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHEEL" ]; then
    BUILD=$(mktemp -d "$CACHE/build.XXXXXX")
    trap 'rm -rf "$BUILD"' EXIT
    say "building mmcv $MMCV_VERSION with compiled ops for $BUILD_KEY, $PYTAG, $MMCV_CXX_STD (about 12 min on 2 cores)"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
      --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD" \
      || die "could not download the mmcv $MMCV_VERSION sdist from PyPI."
    tar -xzf "$BUILD"/mmcv-$MMCV_VERSION.tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    grep -q -- '-std=c++17' "$SRC/setup.py" || die "mmcv setup.py no longer pins -std=c++17; review the patch."
    sed -i "s/-std=c++17/-std=$MMCV_CXX_STD/g" "$SRC/setup.py"
    export MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)}
    if [ "$DEVICE" != cpu ]; then
      export FORCE_CUDA=1
      export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
    fi
    (cd "$SRC" && "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$BUILD/dist") \
      || die "mmcv build failed (see the compiler output above)."
    # Into the shared directory through a rename, so a reader never sees half a wheel.
    mkdir -p "$WHEEL_DIR"
    for BUILT in "$BUILD"/dist/mmcv-*.whl; do
      cp "$BUILT" "$WHEEL_DIR/.$(basename "$BUILT").tmp"
      mv "$WHEEL_DIR/.$(basename "$BUILT").tmp" "$WHEEL_DIR/$(basename "$BUILT")"
    done
    WHEEL=$(ls "$WHEEL_DIR"/mmcv-$MMCV_VERSION-$PYTAG-*.whl | head -n1)
    say "cached $WHEEL"
  else
    say "reusing cached mmcv wheel $WHEEL"
  fi
  pip_install "$PY" -q --no-deps --force-reinstall "$WHEEL"
  echo "$MMCV_VERSION-$BUILD_KEY" > "$VENV/.mmcv-build-key"
fi

if [ ! -f "$STAMP" ]; then
  say "installing mmdet and mmsegmentation"
  pip_install "$PY" -q -r "$ROOT/requirements/mm.txt"
  say "installing the export tools from ${DEPLOY_REQS#$ROOT/}"
  pip_install "$PY" -q -r "$DEPLOY_REQS"
fi

say "installing biformer_mm from $ROOT (editable)"
pip_install "$PY" -q --no-deps --no-build-isolation -e "$ROOT"
# mim (openmim 0.3.9) runs SITE/PACKAGE/.mim/tools/{train,test}.py, PACKAGE spelled as typed
# and SITE the folder of the .dist-info, where a PEP 660 editable install puts no package.
# This link makes `mim train/test biformer-mm` run this checkout's tools. Its name is no
# module name, so imports never see it, and pip never writes through it (docs/install.md).
ln -sfn "$ROOT/biformer_mm" "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/biformer-mm"

say "checking the environment"
TORCH_VERSION=$TORCH_VERSION "$PY" - <<'PY' || die "environment check failed (see above)."
import os
import sys
import torch, mmcv, mmengine, mmdet, mmseg, mim
assert torch.__version__.split('+')[0] == os.environ['TORCH_VERSION'], torch.__version__
from mmcv.ops import nms, RoIAlign  # compiled ops
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
import biformer_mm
print(f"Python {sys.version.split()[0]}  torch {torch.__version__}  mmcv {mmcv.__version__} "
      f"(ops OK)  mmengine {mmengine.__version__}  mmdet {mmdet.__version__}  "
      f"mmseg {mmseg.__version__}  cuda={torch.cuda.is_available()}")
PY
touch "$STAMP"
# ln -sfn into a real directory would put the link inside it and leave it in use.
if [ -e "$LINK" ] && [ ! -L "$LINK" ]; then
  die "$LINK is a directory, not this script's link: move it away (the environment is ready in $VENV)."
fi
ln -sfn "$VENV" "$LINK"
say "ready ($STACK stack): $LINK -> $VENV"
