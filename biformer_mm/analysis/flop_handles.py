"""FLOP handles that let mmengine's ``FlopAnalyzer`` (and so mmdet's and mmseg's
``get_flops.py``) count BiFormer's attention: the operator
``biformer_mm::routed_attention``, the autograd Functions (``prim::PythonOp.NAME``) and
``aten::scaled_dot_product_attention``, which mmengine 0.10.7 has no handles for.

They count by fvcore's convention, the paper's: one fused multiply-add per FLOP for
``q @ k^T`` and ``attn @ v``, nothing for scaling, softmax, top-k or gathers, so every
``attn_impl`` counts what ``'gather'``'s explicit products count.

Import-time change: ``import biformer_mm`` calls :func:`register_flop_handles`.
"""
import logging
from math import prod
from typing import Any, Callable, Dict, List

from mmengine.logging import print_log

from ..ops.bra_triton import TritonRoutedAttention
from ..ops.chunked_routed_attention import ChunkedRoutedAttention

SDPA_OP = 'aten::scaled_dot_product_attention'


def _shape(value: Any) -> List[int]:
    """Sizes of a traced tensor value; every attention input and output is complete."""
    if not value.isCompleteTensor():
        raise ValueError(f'FLOP handle: no static shape for traced value {value}.')
    return value.type().sizes()


def routed_attention_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of one routed attention call on ``q, k, v, r_idx``: each query token
    attends, in every head, to the ``K * W`` tokens of its ``K`` routed regions of ``W``
    tokens, so ``(numel(q) + numel(out)) * K * W``."""
    q_shape, out_shape = _shape(inputs[0]), _shape(outputs[0])
    routed_tokens = _shape(inputs[3])[-1] * q_shape[-2]
    return (prod(q_shape) + prod(out_shape)) * routed_tokens


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``scaled_dot_product_attention(q, k, v, ...)`` as explicit products
    (masks counted as the full product, as fvcore counts masked attention)."""
    q_shape, k_shape, out_shape = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    return prod(out_shape[:-1]) * k_shape[-2] * (q_shape[-1] + out_shape[-1])


FLOP_HANDLES: Dict[str, Callable[[List[Any], List[Any]], int]] = {
    'biformer_mm::routed_attention': routed_attention_flop_jit,
    **{f'prim::PythonOp.{function.__name__}': routed_attention_flop_jit  # autograd Functions
       for function in (ChunkedRoutedAttention, TritonRoutedAttention)},
    SDPA_OP: sdpa_flop_jit,
}
"""Op name -> handle, for ``FlopAnalyzer(...).set_op_handle(**FLOP_HANDLES)``."""


def register_flop_handles() -> None:
    """Add :data:`FLOP_HANDLES` to mmengine's table
    ``complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS``, which every ``FlopAnalyzer``
    copies; an SDPA handle of mmengine's own is kept. If mmengine moves the table, a
    warning names the fallback."""
    try:
        from mmengine.analysis import complexity_analysis
        table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    except (ImportError, AttributeError):
        print_log(
            'biformer_mm: mmengine.analysis.complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS '
            'was not found, so mmengine FLOP counts will skip the routed and global '
            'attention; pass biformer_mm.analysis.FLOP_HANDLES to '
            'FlopAnalyzer(...).set_op_handle(**FLOP_HANDLES) to count them.',
            logger='current', level=logging.WARNING)
        return
    for name, handle in FLOP_HANDLES.items():
        if name == SDPA_OP:
            table.setdefault(name, handle)
        else:
            table[name] = handle
