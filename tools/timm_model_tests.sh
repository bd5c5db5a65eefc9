#!/usr/bin/env bash
# timm's own model tests (tests/test_models.py of huggingface/pytorch-image-models) on
# biformer_{tiny,small,base}, with biformer_mm imported first (docs/classification.md):
#
#   bash tools/timm_model_tests.sh PATH_TO_TIMM_CHECKOUT [pytest args...]
#
# The test file is read from the checkout at TIMM_REV (default HEAD) into a scratch folder
# with a conftest.py that imports biformer_mm and timm's pytest markers; the copy adds
# biformer_timm to FEAT_INTER_FILTERS (the models whose forward_intermediates() it tests).
# Torchscript tests are deselected: torch.jit.script cannot compile our models (a -k EXPR
# of yours narrows this selection). The timm
# under test is PYTHON's.
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
# pytest keeps only the last -k: fold the caller's into ours.
SELECT='biformer and not torchscript' ARGS=() PREV=
for arg in "$@"; do
  if [ "$PREV" = -k ]; then SELECT="$SELECT and ($arg)"; PREV=; continue; fi
  PREV=$arg
  [ "$arg" = -k ] || ARGS+=("$arg")
done
cd "$SCRATCH"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest test_models.py \
  -k "$SELECT" -p no:cacheprovider -rs ${ARGS[@]+"${ARGS[@]}"}
