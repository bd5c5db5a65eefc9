#!/usr/bin/env bash
# The whole detection pipeline in one command, on the CPU, without downloads:
#
#   bash tools/run_demo.sh
#
# 1. the environment (tools/setup_env.sh); 2. the toy COCO data in data/toy_coco;
# 3. Mask R-CNN + BiFormer-T trained from scratch with tools/train.py (the toy config:
#    256x256, fp32, 8 epochs, lr x0.1 for the last 2); 4. tools/test.py: CocoMetric (bbox,
#    segm) and ground truth | predictions in work_dirs/demo/vis/*.png; 5. tools/infer.py on
#    the validation images: work_dirs/demo/infer/{vis,preds}/.
# WORK_DIR (default work_dirs/demo) and EPOCHS (default 8; the lr drop moves with it) can be set.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
WORK_DIR=${WORK_DIR:-work_dirs/demo}
CONFIG=configs/detection/toy/maskrcnn_biformer_t_toy_coco.py
EXTRA=()
if [ -n "${EPOCHS:-}" ]; then
  EXTRA=(--cfg-options "train_cfg.max_epochs=$EPOCHS" "train_cfg.val_interval=$EPOCHS"
         "param_scheduler.1.milestones=[$(( EPOCHS > 2 ? EPOCHS - 2 : EPOCHS ))]")
fi

say() { printf '\033[1;32m[run_demo]\033[0m %s\n' "$*"; }

say "1/5 environment"
STACK=modern bash tools/setup_env.sh
PY="$ROOT/.venv/bin/python"

say "2/5 toy COCO dataset -> data/toy_coco"
"$PY" tools/dataset/make_toy_coco.py --out data/toy_coco

say "3/5 training $CONFIG on the CPU -> $WORK_DIR"
START=$(date +%s)
"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" ${EXTRA[@]+"${EXTRA[@]}"}
say "training took $(( $(date +%s) - START )) s"

CHECKPOINT=$(cat "$WORK_DIR/last_checkpoint")
say "4/5 evaluating $CHECKPOINT with CocoMetric, drawing predictions -> $WORK_DIR/vis"
rm -rf "$WORK_DIR/vis"
"$PY" tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR" --show-dir "$WORK_DIR/vis"

say "5/5 tools/infer.py on the validation images -> $WORK_DIR/infer"
rm -rf "$WORK_DIR/infer"
"$PY" tools/infer.py data/toy_coco/val "$CONFIG" "$CHECKPOINT" --out-dir "$WORK_DIR/infer" \
  --score-thr 0.7
say "done: metrics above; ground truth | predictions in $WORK_DIR/vis/, predictions alone in $WORK_DIR/infer/vis/ ($(ls "$WORK_DIR/infer/vis" | wc -l) images)"
