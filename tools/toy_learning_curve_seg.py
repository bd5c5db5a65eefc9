"""Show that a BiFormer segmentor learns: train it on the toy ADE20K data and compare
mmseg's IoUMetric on the validation split before and after training.

    python tools/toy_learning_curve_seg.py [--iters 150] [--work-dir DIR]

By default this trains Semantic FPN + BiFormer-T on the toy data
(configs/segmentation/toy/fpn_biformer_t_toy_ade20k.py: 128x128 crops, BN head, fp32,
from scratch) on the CPU, writing the toy dataset first when it is missing. The untrained
model is evaluated right before the first iteration, the trained one after the last;
both numbers come from the config's ``val_evaluator`` (``IoUMetric``). The script exits
with status 1 when training did not raise the mIoU.
"""
import argparse
import os.path as osp
import subprocess
import sys
import time
from mmengine.config import Config

from biformer_mm.engine import ValidateBeforeTrainingHook, build_runner, load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MAKE_TOY_ADE20K = osp.join(ROOT, 'tools', 'dataset', 'make_toy_ade20k.py')


def set_schedule_length(cfg: Config, iters: int) -> None:
    """Train for ``iters`` iterations, validating and saving only at the end, with
    the last lr scheduler stretched or shrunk to end there.

    Args:
        cfg (Config): Config changed in place.
        iters (int): Number of training iterations.
    """
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    warmup_end = cfg.param_scheduler[0].end
    if iters <= warmup_end:
        raise ValueError(f'--iters {iters} must exceed the {warmup_end} warm-up '
                         f'iterations of the toy schedule.')
    cfg.param_scheduler[-1].end = iters


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a BiFormer segmentor on the toy ADE20K data on the CPU and '
        'report mIoU before and after training.')
    parser.add_argument('--config',
                        default='configs/segmentation/toy/fpn_biformer_t_toy_ade20k.py',
                        help='segmentation config on the toy data (default: %(default)s)')
    parser.add_argument('--iters', type=int, default=150,
                        help='training iterations (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--work-dir', default='work_dirs/toy_learning_curve_seg',
                        help='logs and checkpoint (default: %(default)s)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)
    set_schedule_length(cfg, args.iters)

    data_root = cfg.train_dataloader.dataset.data_root
    if not osp.isdir(data_root):
        print(f'{data_root} does not exist: writing the toy dataset there.')
        subprocess.run([sys.executable, MAKE_TOY_ADE20K, '--out', data_root], check=True)

    runner = build_runner(cfg)
    recorder = ValidateBeforeTrainingHook()
    runner.register_hook(recorder)
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start

    before, after = recorder.history[0], recorder.history[-1]
    print(f'\n{args.config}: {args.iters} iterations, '
          f'{wall / 60:.1f} min wall time (including both evaluations)')
    for key in ('mIoU', 'mAcc', 'aAcc'):
        print(f'  {key:5s} before {before["metrics"][key]:6.2f}   '
              f'after {after["metrics"][key]:6.2f}')
    if after['metrics']['mIoU'] <= before['metrics']['mIoU']:
        sys.exit('Training did not raise the mIoU.')


if __name__ == '__main__':
    main()
