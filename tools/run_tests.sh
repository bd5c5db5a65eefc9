#!/usr/bin/env bash
# Set up the environments (cached after the first run) and run the test suite on both
# tested stacks: the whole suite on the modern stack (./.venv), then the tests marked
# `classic` (pytest -m classic) on the classic stack (./.venv-classic).
#
#   bash tools/run_tests.sh [pytest args...]
#   STACK=modern bash tools/run_tests.sh tests/test_backbone.py -k fixture   # one stack
#
# Extra arguments go to pytest on each stack (a `-m EXPR` is combined with `classic` on
# the classic stack). The exit status is non-zero if either run fails; a selection of
# yours with no classic test in it passes on the classic stack, with a note.
# pytest-xdist runs PYTEST_WORKERS processes (default: one per core, at most 4; each
# worker's torch gets cores / workers threads, tests/conftest.py); `-n 0` runs in one.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STACKS=${STACK:-modern classic}
say() { printf '\033[1;35m[run_tests]\033[0m %s\n' "$*"; }

CORES=$(nproc)
WORKERS=${PYTEST_WORKERS:-$(( CORES < 4 ? CORES : 4 ))}
STATUS=0
for stack in $STACKS; do
  START=$(date +%s)
  STACK=$stack bash "$ROOT/tools/setup_env.sh"
  say "$stack stack ready in $(( $(date +%s) - START )) s"
  ARGS=("$@")
  case "$stack" in
    modern) PY="$ROOT/.venv/bin/python" ;;
    classic)
      PY="$ROOT/.venv-classic/bin/python"
      # pytest keeps only the last -m: fold the caller's into ours.
      MARK=classic ARGS=() PREV=
      for arg in "$@"; do
        if [ "$PREV" = -m ]; then MARK="classic and ($arg)"; PREV=; continue; fi
        PREV=$arg
        [ "$arg" = -m ] || ARGS+=("$arg")
      done
      ARGS+=(-m "$MARK") ;;
  esac
  START=$(date +%s)
  say "$stack stack: pytest -n $WORKERS ${ARGS[*]+${ARGS[*]}}"
  CODE=0
  (cd "$ROOT" && "$PY" -m pytest -n "$WORKERS" ${ARGS[@]+"${ARGS[@]}"}) || CODE=$?
  # Exit status 5: nothing collected. Only a selection of the caller's may have no
  # classic test; the whole suite always has some.
  if [ "$stack" = classic ] && [ "$CODE" = 5 ] && [ $# -gt 0 ]; then
    say "classic stack: no test of this selection is marked classic"
    CODE=0
  fi
  say "$stack stack: pytest exited with $CODE after $(( $(date +%s) - START )) s"
  [ "$CODE" = 0 ] || STATUS=$CODE
done
exit "$STATUS"
