"""Training and testing support on top of mmengine's Runner."""
from ..safe_load import allow_training_checkpoints
from .amp import enable_amp, fall_back_to_fp32
from .cli import (build_runner, config_or_exit, load_config, test_config, test_parser,
                  train_config, train_parser)
from .compilable_optim import CompilableOptimWrapperConstructor
from .dataset_check import DatasetMismatchError, DatasetNotFoundError, check_dataset
from .distributed import init_cpu_process_group, setup_cpu_distributed
from .validate_before_training_hook import ValidateBeforeTrainingHook
from .visualization import enable_visualization

__all__ = [
    'allow_training_checkpoints', 'build_runner', 'check_dataset',
    'CompilableOptimWrapperConstructor', 'config_or_exit', 'DatasetMismatchError',
    'DatasetNotFoundError', 'enable_amp', 'enable_visualization',
    'fall_back_to_fp32', 'init_cpu_process_group', 'load_config',
    'setup_cpu_distributed', 'test_config', 'test_parser', 'train_config', 'train_parser',
    'ValidateBeforeTrainingHook'
]

# Import-time change to torch's state (docs/checkpoints.md): every weights-only load of
# the process (torch's global allow-list from torch 2.5 on) accepts the types of the
# training checkpoints mmengine writes for our configs, which import this package
# through custom_imports. It widens the allow-list by these data types only.
allow_training_checkpoints()
