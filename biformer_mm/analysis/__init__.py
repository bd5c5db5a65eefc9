"""Measuring BiFormer: FLOP counting in mmengine's analysis."""
from .flop_handles import FLOP_HANDLES, register_flop_handles

__all__ = ['FLOP_HANDLES', 'register_flop_handles']
