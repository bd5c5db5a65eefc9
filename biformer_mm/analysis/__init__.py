"""Measuring BiFormer: FLOP counting in mmengine's analysis, models of configs as one
network call."""
from .complexity import count_complexity
from .flop_handles import FLOP_HANDLES, register_flop_handles
from .tensor_mode import TensorMode, build_tensor_mode, default_input_size, tensor_mode_inputs

__all__ = ['FLOP_HANDLES', 'TensorMode', 'build_tensor_mode', 'count_complexity',
           'default_input_size', 'register_flop_handles', 'tensor_mode_inputs']
