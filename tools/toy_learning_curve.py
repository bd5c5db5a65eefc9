"""Show that a BiFormer detector or segmentor learns: train it on the toy data on the CPU
and compare the config's ``val_evaluator`` on the validation split before and after.

    python tools/toy_learning_curve.py det [--epochs 6] [--config CONFIG] [--work-dir DIR]
    python tools/toy_learning_curve.py seg [--iters 150] [--config CONFIG] [--work-dir DIR]

``det`` trains configs/detection/toy/maskrcnn_biformer_t_toy_coco.py (``CocoMetric``, bbox
and segm), ``seg`` configs/segmentation/toy/fpn_biformer_t_toy_ade20k.py (``IoUMetric``),
from scratch in fp32; the toy dataset is written first when it is missing. The untrained
model is evaluated right before the first iteration (``ValidateBeforeTrainingHook``), the
trained one at the end. Exits 1 when training did not raise the bbox mAP (det) or the
mIoU (seg).
"""
import argparse
import os.path as osp
import subprocess
import sys
import time

from mmengine.config import Config

from biformer_mm.engine import ValidateBeforeTrainingHook, build_runner, load_config

TOOLS = osp.dirname(osp.abspath(__file__))
TASKS = dict(
    det=dict(config='configs/detection/toy/maskrcnn_biformer_t_toy_coco.py', length='epochs',
             default=6, make='make_toy_coco.py', goal='coco/bbox_mAP', fmt='.3f'),
    seg=dict(config='configs/segmentation/toy/fpn_biformer_t_toy_ade20k.py', length='iters',
             default=150, make='make_toy_ade20k.py', goal='mIoU', fmt='6.2f'))


def set_schedule_length(cfg: Config, task: str, length: int) -> None:
    """Train for ``length`` epochs (det) or iterations (seg), validating and saving only
    at the end. det moves the lr drop to the last 2 epochs (none for 2 epochs or fewer);
    seg stretches or shrinks the last lr scheduler to end there."""
    if task == 'det':
        if length < 1:
            raise ValueError(f'--epochs must be at least 1, got {length}.')
        cfg.train_cfg.max_epochs = length
        for scheduler in cfg.param_scheduler:
            if scheduler.type == 'MultiStepLR':
                scheduler.milestones = [length - 2 if length > 2 else length]
    else:
        warmup_end = cfg.param_scheduler[0].end
        if length <= warmup_end:
            raise ValueError(f'--iters {length} must exceed the {warmup_end} warm-up '
                             f'iterations of the toy schedule.')
        cfg.train_cfg.max_iters = length
        cfg.param_scheduler[-1].end = length
    cfg.train_cfg.val_interval = length
    cfg.default_hooks.checkpoint.interval = length


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('task', choices=sorted(TASKS))
    parser.add_argument('--config', help='config on the toy data (default: the task\'s '
                        'Mask R-CNN or Semantic FPN BiFormer-T toy config)')
    parser.add_argument('--epochs', type=int, help=f'det: training epochs (default '
                        f"{TASKS['det']['default']})")
    parser.add_argument('--iters', type=int, help=f'seg: training iterations (default '
                        f"{TASKS['seg']['default']})")
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--work-dir', help='logs and checkpoint (default: '
                        'work_dirs/toy_learning_curve_TASK)')
    args = parser.parse_args()
    task = TASKS[args.task]
    other = 'iters' if task['length'] == 'epochs' else 'epochs'
    if getattr(args, other) is not None:
        parser.error(f'--{other} is for the other task; {args.task} takes '
                     f"--{task['length']}.")
    args.length = getattr(args, task['length'])
    args.length = task['default'] if args.length is None else args.length
    args.config = args.config or task['config']
    args.work_dir = args.work_dir or f'work_dirs/toy_learning_curve_{args.task}'
    return args


def main() -> None:
    args = parse_args()
    task = TASKS[args.task]
    cfg = load_config(args.config)
    cfg.launcher = 'none'
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)
    set_schedule_length(cfg, args.task, args.length)

    data_root = cfg.train_dataloader.dataset.data_root
    if not osp.isdir(data_root):
        print(f'{data_root} does not exist: writing the toy dataset there.')
        subprocess.run([sys.executable, osp.join(TOOLS, 'dataset', task['make']), '--out',
                        data_root], check=True)

    runner = build_runner(cfg)
    recorder = ValidateBeforeTrainingHook()
    runner.register_hook(recorder)
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start

    before, after = recorder.history[0]['metrics'], recorder.history[-1]['metrics']
    iters = f' ({runner.iter} iterations)' if args.task == 'det' else ''
    print(f"\n{args.config}: {args.length} {task['length']}{iters}, {wall / 60:.1f} min "
          'wall time (including both evaluations)')
    keys = sorted(k for k in after if k.endswith(('_mAP', '_mAP_50'))) \
        if args.task == 'det' else ['mIoU', 'mAcc', 'aAcc']
    for key in keys:
        print(f"  {key:20s} before {before[key]:{task['fmt']}}   "
              f"after {after[key]:{task['fmt']}}")
    if after[task['goal']] <= before[task['goal']]:
        sys.exit(f"Training did not raise {task['goal']}.")


if __name__ == '__main__':
    main()
