"""Training and testing support on top of mmengine's Runner.

Importing this package also lets the weights-only loads of our tools (and, from torch 2.6
on, mmengine's own loads) read the training checkpoints our runs write (see
:mod:`biformer_mm.engine.checkpoint_allowlist`).
"""
from .amp import enable_amp, fall_back_to_fp32
from .checkpoint_allowlist import allow_training_checkpoints
from .cli import (build_runner, config_or_exit, test_config, test_parser, train_config,
                  train_parser)
from .dataset_check import DatasetNotFoundError, check_dataset_files
from .distributed import init_cpu_process_group, setup_cpu_distributed
from .overlay import apply_overlay, load_config
from .validate_before_training_hook import ValidateBeforeTrainingHook
from .visualization import enable_visualization

__all__ = [
    'allow_training_checkpoints', 'apply_overlay', 'build_runner', 'check_dataset_files',
    'config_or_exit', 'DatasetNotFoundError', 'enable_amp', 'enable_visualization',
    'fall_back_to_fp32', 'init_cpu_process_group', 'load_config',
    'setup_cpu_distributed', 'test_config', 'test_parser', 'train_config', 'train_parser',
    'ValidateBeforeTrainingHook'
]

allow_training_checkpoints()
