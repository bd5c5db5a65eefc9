"""Training and testing support on top of mmengine's Runner.

Importing this package also lets the weights-only loads of our tools (and, from torch 2.6
on, mmengine's own loads) read the training checkpoints our runs write (see
:mod:`biformer_mm.engine.checkpoint_allowlist`).
"""
from .amp import enable_amp, fall_back_to_fp32
from .checkpoint_allowlist import allow_training_checkpoints
from .cli import (build_runner, config_or_exit, load_config, test_config, test_parser,
                  train_config, train_parser)
from .dataset_check import DatasetMismatchError, DatasetNotFoundError, check_dataset
from .distributed import init_cpu_process_group, setup_cpu_distributed
from .validate_before_training_hook import ValidateBeforeTrainingHook
from .visualization import enable_visualization

__all__ = [
    'allow_training_checkpoints', 'build_runner', 'check_dataset', 'config_or_exit',
    'DatasetMismatchError', 'DatasetNotFoundError', 'enable_amp', 'enable_visualization',
    'fall_back_to_fp32', 'init_cpu_process_group', 'load_config',
    'setup_cpu_distributed', 'test_config', 'test_parser', 'train_config', 'train_parser',
    'ValidateBeforeTrainingHook'
]

allow_training_checkpoints()
