"""The logic of ``tools/train.py`` and ``tools/test.py`` (mmdet's tools, for detection and
segmentation configs alike), plus: the data is checked before the Runner is built
(:mod:`.dataset_check`, unless ``--skip-data-check``), and every checkpoint is checked and
handed to the Runner as a weights-only path (:func:`..safe_load.weights_only_path`).
"""
import argparse
import logging
import os
import os.path as osp
from typing import Callable, List, Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import MODELS, RUNNERS
from mmengine.runner import Runner, find_latest_checkpoint

from ..checkpoint import CheckpointMismatchError, check_trained_checkpoint
from ..models import BiFormer
from ..models.backbones.biformer import PRETRAINED_HINT
from ..safe_load import (UnsafeCheckpointError, local_checkpoint, read_checkpoint,
                         weights_only_path)
from .amp import enable_amp, fall_back_to_fp32
from .dataset_check import DatasetMismatchError, check_dataset, warn_of_unused_data_root
from .distributed import LAUNCHERS, setup_cpu_distributed
from .visualization import enable_visualization


def _parser(description: str) -> argparse.ArgumentParser:
    """The arguments both tools take: mmdet's, and ``--skip-data-check``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='directory for logs and checkpoints '
                        '(default: the config\'s work_dir, else ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. train_cfg.max_epochs=1 '
        '"model.backbone.init_cfg=None"')
    parser.add_argument(
        '--skip-data-check', action='store_true',
        help='do not check the dataset before the Runner starts (files, classes, '
        'num_classes, label values, schedule; biformer_mm/engine/dataset_check.py)')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher (pytorch: torchrun; slurm: srun)')
    # torch.distributed.launch passes --local-rank (torch>=2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def train_parser() -> argparse.ArgumentParser:
    """Argument parser of ``tools/train.py``."""
    parser = _parser('Train a detector or segmentor.')
    parser.add_argument('--amp', action='store_true',
                        help='train with automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (GPUs x batch size) / '
                        'auto_scale_lr.base_batch_size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto', metavar='CHECKPOINT',
        help='resume from CHECKPOINT, or with no value from the latest checkpoint '
        'in the work dir; prefix CHECKPOINT with trusted:// to load a file you trust '
        'in full (docs/checkpoints.md)')
    return parser


def test_parser() -> argparse.ArgumentParser:
    """Argument parser of ``tools/test.py``."""
    parser = _parser('Evaluate a checkpoint with the test dataloader and evaluator of a '
                     'config.')
    parser.add_argument('checkpoint', help='checkpoint: path, URL or mmengine backend path, '
                        'read weights-only; prefix it with trusted:// to load a file you '
                        'trust in full (docs/checkpoints.md)')
    parser.add_argument('--show-dir', help='save images with drawn predictions here')
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds each image is shown with --show')
    return parser


def load_config(config: str, cfg_options: Optional[dict] = None) -> Config:
    """``config`` with ``cfg_options`` (``--cfg-options`` style, ``{'a.b': value}``);
    FileNotFoundError, naming the working directory, if it does not exist."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'Config {config} does not exist (relative paths start at '
                                f'{osp.abspath(".")}).')
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(cfg_options or {})
    return cfg


def _check_data(args: argparse.Namespace, cfg: Config, parts: Sequence[str]) -> None:
    if args.skip_data_check:
        print_log('--skip-data-check: the dataset is not checked before the Runner starts.',
                  logger='current', level=logging.WARNING)
    else:
        # Datasets moved by --cfg-options leave the top-level data_root unused, knowingly.
        if not any(key.endswith('.data_root') for key in args.cfg_options or {}):
            warn_of_unused_data_root(cfg, args.config, parts)
        check_dataset(cfg, args.config, parts)


def _common_config(args: argparse.Namespace) -> Config:
    """The config with ``--cfg-options``, launcher and work dir, as mmdet's tools set them."""
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def train_config(args: argparse.Namespace) -> Config:
    """The Runner config of ``tools/train.py`` (``args`` from :func:`train_parser`). In
    order: ``--cfg-options``, launcher, work dir, ``--amp``, ``--auto-scale-lr``,
    ``--resume`` (the work dir's latest checkpoint is found here, to be loaded
    weights-only too), the checkpoint check, the data check, the check that a BiFormer
    backbone's pretrained file exists, the fp32 fallback of AMP without a GPU."""
    cfg = _common_config(args)
    if args.amp:
        enable_amp(cfg)
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError(
                f'--auto-scale-lr needs auto_scale_lr.base_batch_size in {args.config}: '
                f'add auto_scale_lr = dict(enable=False, base_batch_size=16) with the total '
                f'batch size the lr was tuned for.')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        latest = find_latest_checkpoint(cfg.work_dir)
        if latest is None:  # as mmdet's tools/train.py: start afresh, without load_from
            dropped = (f'; load_from={cfg.load_from} is not loaded either (resuming from it '
                       f'would restore its optimizer and schedule)' if cfg.get('load_from')
                       else '')
            print_log(f'--resume: {cfg.work_dir} has no checkpoint to resume from, so '
                      f'training starts from the beginning{dropped}.', logger='current',
                      level=logging.WARNING)
        cfg.resume, cfg.load_from = True, latest
    elif args.resume is not None:
        local_checkpoint(args.resume, hint='Give --resume a checkpoint file, or no value '
                         'to continue from the latest checkpoint in the work dir.')
        cfg.resume, cfg.load_from = True, args.resume
    cfg.load_from = weights_only_path(cfg.get('load_from'),
                                      where='the --resume or load_from path')
    _check_data(args, cfg, ['train_dataloader'] + (['val_dataloader', 'val_evaluator']
                                                   if cfg.get('val_cfg') else []))
    backbone = cfg.model.get('backbone') or {}
    pretrained = BiFormer.pretrained_entry(backbone.get('init_cfg')) \
        if str(backbone.get('type', '')).split('.')[-1] == 'BiFormer' else None
    if pretrained is not None:
        local_checkpoint(pretrained['checkpoint'], hint=PRETRAINED_HINT)
    fall_back_to_fp32(cfg)
    return cfg


def test_config(args: argparse.Namespace) -> Config:
    """The Runner config of ``tools/test.py`` (``args`` from :func:`test_parser`). The
    checkpoint must fit the config's model, key for key (:func:`check_trained_checkpoint`):
    the Runner would load what fits and test the rest as initialised."""
    cfg = _common_config(args)
    cfg.load_from = weights_only_path(args.checkpoint, where='the CHECKPOINT argument')
    _check_data(args, cfg, ['test_dataloader', 'test_evaluator'])
    with MODELS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
        model = registry.build(cfg.model)
    check_trained_checkpoint(model, read_checkpoint(cfg.load_from, allowed=(), mmap=True),
                             args.checkpoint, args.config)
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show_dir, args.show, args.wait_time)
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The Runner of ``cfg`` as mmdet's tools build it, after setting up CPU distributed
    running when ``cfg.launcher`` asks for it and there is no GPU."""
    setup_cpu_distributed(cfg)
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


SETUP_ERRORS = (FileNotFoundError, DatasetMismatchError, UnsafeCheckpointError,
                CheckpointMismatchError)
"""Errors of :func:`train_config`/:func:`test_config` that name the user's fix (a missing
config, dataset or checkpoint, a config that does not fit its data, a checkpoint beyond
the allow-list or that does not fit the model)."""


def config_or_exit(parser: argparse.ArgumentParser,
                   make_config: Callable[[argparse.Namespace], Config],
                   argv: Optional[List[str]] = None) -> Config:
    """``make_config`` (:func:`train_config`, :func:`test_config`) of ``parser``'s
    arguments (``argv``, default ``sys.argv[1:]``); one of the :data:`SETUP_ERRORS` ends
    the tool with its message and exit status 2, as a bad argument does, not a traceback."""
    args = parser.parse_args(argv)
    try:
        return make_config(args)
    except SETUP_ERRORS as error:
        parser.exit(2, f'{parser.prog}: error: {type(error).__name__}: {error}\n')
