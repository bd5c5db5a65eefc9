"""Mixed precision switches for configs: ``--amp`` and the fp32 fallback without a GPU."""
import logging

from mmengine.config import Config
from mmengine.device import (is_cuda_available, is_mlu_available, is_musa_available,
                             is_npu_available)
from mmengine.logging import print_log

# Keyword arguments that AmpOptimWrapper accepts and OptimWrapper does not.
AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


def _wrapper_type(cfg: Config) -> str:
    """Class name of ``cfg.optim_wrapper.type`` (default ``OptimWrapper``)."""
    wrapper_type = cfg.get('optim_wrapper', {}).get('type', 'OptimWrapper')
    return getattr(wrapper_type, '__name__', str(wrapper_type).split('.')[-1])


def enable_amp(cfg: Config) -> None:
    """Turn on automatic mixed precision with a dynamic loss scale (``--amp``).

    Args:
        cfg (Config): Config whose ``optim_wrapper`` is switched in place.

    Raises:
        ValueError: If the config uses an optimizer wrapper other than
            ``OptimWrapper``/``AmpOptimWrapper``, whose AMP behaviour we cannot know.
    """
    wrapper_type = _wrapper_type(cfg)
    if wrapper_type == 'AmpOptimWrapper':
        print_log('AMP is already enabled in the config.', logger='current',
                  level=logging.WARNING)
        return
    if wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp only supports optim_wrapper.type OptimWrapper or '
                         f'AmpOptimWrapper, but the config uses {wrapper_type}; drop --amp '
                         f'and configure mixed precision in that wrapper instead.')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def fall_back_to_fp32(cfg: Config) -> bool:
    """Replace ``AmpOptimWrapper`` (which our COCO and ADE20K recipes use, as the official ones) by
    ``OptimWrapper``, with a warning, where no device supports it (a CPU-only machine).

    Args:
        cfg (Config): Config changed in place.

    Returns:
        bool: Whether the config was changed.
    """
    # The devices AmpOptimWrapper accepts.
    if _wrapper_type(cfg) != 'AmpOptimWrapper' or is_cuda_available() or \
            is_npu_available() or is_mlu_available() or is_musa_available():
        return False
    print_log('Mixed precision (AmpOptimWrapper) needs a CUDA/NPU/MLU/MUSA device and '
              'none is available: training in fp32 with OptimWrapper instead.',
              logger='current', level=logging.WARNING)
    cfg.optim_wrapper.type = 'OptimWrapper'
    for key in AMP_ONLY_KEYS:
        cfg.optim_wrapper.pop(key, None)
    return True
