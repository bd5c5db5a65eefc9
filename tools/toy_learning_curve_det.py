"""Show that a BiFormer detector learns: train it on the toy COCO data and compare
mmdet's CocoMetric on the validation split before and after training.

    python tools/toy_learning_curve_det.py [--epochs 6] [--work-dir DIR]

By default this trains Mask R-CNN + BiFormer-T on the toy data
(configs/detection/toy/maskrcnn_biformer_t_toy_coco.py: 256x256 images, fp32, from
scratch) on the CPU, writing the toy
dataset first when it is missing. The untrained model is evaluated right before the first
iteration, the trained one after the last epoch; both numbers come from the config's
``val_evaluator`` (``CocoMetric``, bbox and segm). The script exits with status 1 when
training did not raise the bbox mAP.
"""
import argparse
import os.path as osp
import subprocess
import sys
import time

from mmengine.config import Config

from biformer_mm.engine import ValidateBeforeTrainingHook, build_runner, load_config

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
MAKE_TOY_COCO = osp.join(ROOT, 'tools', 'dataset', 'make_toy_coco.py')


def set_schedule_length(cfg: Config, epochs: int) -> None:
    """Train for ``epochs`` epochs, validating and saving only at the end, with the
    toy config's lr drop moved to the last 2 epochs (none for 2 epochs or fewer).

    Args:
        cfg (Config): Config changed in place.
        epochs (int): Number of training epochs.
    """
    if epochs < 1:
        raise ValueError(f'--epochs must be at least 1, got {epochs}.')
    cfg.train_cfg.max_epochs = epochs
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'MultiStepLR':
            scheduler.milestones = [epochs - 2 if epochs > 2 else epochs]
    cfg.train_cfg.val_interval = epochs
    cfg.default_hooks.checkpoint.interval = epochs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train a BiFormer detector on the toy COCO data on the CPU and report '
        'COCO AP before and after training.')
    parser.add_argument('--config',
                        default='configs/detection/toy/maskrcnn_biformer_t_toy_coco.py',
                        help='detection config on the toy data (default: %(default)s)')
    parser.add_argument('--epochs', type=int, default=6,
                        help='training epochs (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument('--work-dir', default='work_dirs/toy_learning_curve_det',
                        help='logs and checkpoint (default: %(default)s)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    cfg = load_config(args.config)
    cfg.launcher = 'none'
    cfg.work_dir = args.work_dir
    cfg.randomness = dict(seed=args.seed)
    set_schedule_length(cfg, args.epochs)

    data_root = cfg.train_dataloader.dataset.data_root
    if not osp.isdir(data_root):
        print(f'{data_root} does not exist: writing the toy dataset there.')
        subprocess.run([sys.executable, MAKE_TOY_COCO, '--out', data_root], check=True)

    runner = build_runner(cfg)
    recorder = ValidateBeforeTrainingHook()
    runner.register_hook(recorder)
    start = time.perf_counter()
    runner.train()
    wall = time.perf_counter() - start

    before, after = recorder.history[0]['metrics'], recorder.history[-1]['metrics']
    print(f'\n{args.config}: {args.epochs} epochs '
          f'({runner.iter} iterations), {wall / 60:.1f} min wall time (including both '
          f'evaluations)')
    for key in sorted(k for k in after if k.endswith(('_mAP', '_mAP_50'))):
        print(f'  {key:20s} before {before[key]:.3f}   after {after[key]:.3f}')
    if after['coco/bbox_mAP'] <= before['coco/bbox_mAP']:
        sys.exit('Training did not raise the bbox mAP.')


if __name__ == '__main__':
    main()
