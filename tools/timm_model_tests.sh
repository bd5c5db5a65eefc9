#!/usr/bin/env bash
# timm's own model tests (tests/test_models.py of huggingface/pytorch-image-models) on
# biformer_tiny, biformer_small and biformer_base, with biformer_mm imported first:
#
#   bash tools/timm_model_tests.sh PATH_TO_TIMM_CHECKOUT [pytest args...]
#
# PATH_TO_TIMM_CHECKOUT is a clone of https://github.com/huggingface/pytorch-image-models
# (its tests/test_models.py is read at TIMM_REV, default HEAD). Nothing of it is
# installed or copied into this repository: a scratch folder gets a copy of the test
# file, a conftest.py that imports biformer_mm (so timm's list_models, evaluated when
# the file is collected, includes our models) and timm's pytest markers. The copy adds
# our module, biformer_timm, to FEAT_INTER_FILTERS, timm's list of models whose
# forward_intermediates() it tests; nothing else is changed.
#
# Torchscript tests are deselected: torch.jit.script cannot compile our models (see
# docs/classification.md). The installed timm is the one under test (PYTHON's).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TIMM_REPO=${1:?usage: bash tools/timm_model_tests.sh PATH_TO_TIMM_CHECKOUT [pytest args...]}
shift
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

git -C "$TIMM_REPO" show "${TIMM_REV:-HEAD}:tests/test_models.py" > "$SCRATCH/test_models.py"
grep -q "'csatv2', 'cpubone'$" "$SCRATCH/test_models.py" || {
  echo "FEAT_INTER_FILTERS of this test_models.py does not end as expected; add" \
       "'biformer_timm' to it by hand." >&2; exit 1; }
sed -i "s/'csatv2', 'cpubone'$/'csatv2', 'cpubone', 'biformer_timm',/" "$SCRATCH/test_models.py"
echo 'import biformer_mm  # noqa: F401  registers biformer_{tiny,small,base} in timm' \
  > "$SCRATCH/conftest.py"
cat > "$SCRATCH/pytest.ini" <<'EOF'
[pytest]
markers =
    base: model tests using the basic setup
    cfg: model tests checking the config
    torchscript: model tests using torchscript
    features: model tests checking feature extraction
    fxforward: model tests using torch fx (only forward)
    fxbackward: model tests using torch fx (only backward)
    timeout: pytest-timeout's per-test limit (inactive without the plugin)
EOF
cd "$SCRATCH"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest test_models.py \
  -k 'biformer and not torchscript' -p no:cacheprovider -rs "$@"
