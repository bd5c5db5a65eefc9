"""Measuring BiFormer: FLOP counting in mmengine's analysis."""
from .complexity import count_complexity
from .flop_handles import FLOP_HANDLES, register_flop_handles

__all__ = ['FLOP_HANDLES', 'count_complexity', 'register_flop_handles']
