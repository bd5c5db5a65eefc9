"""FLOP handles that let mmengine's analysis count BiFormer's attention.

mmengine's ``FlopAnalyzer`` (behind ``get_model_complexity_info``, and so behind mmdet's
and mmseg's ``tools/analysis_tools/get_flops.py``) traces the model with ``torch.jit``
and counts every node whose op name has a handle in its table. By default it misses
BiFormer's attention:

- the routed attention runs inside the operator ``biformer_mm::routed_attention``
  (``'chunked'`` on the CPU with torch >= 2.4) or ``torch.autograd.Function`` subclasses
  (``'chunked'`` on older torch, ``'triton'``), which the trace records as one node named
  ``biformer_mm::routed_attention`` or ``prim::PythonOp.<class name>``;
- the ``'torch'`` strategy on GPUs and the global attention of the last stage call
  ``aten::scaled_dot_product_attention``, which mmengine 0.10.7 has no handle for.

The handles here count them by fvcore's convention, the one the paper's FLOPs use: on
the official code, whose attention is explicit matrix products, fvcore counts one fused
multiply-add as one FLOP for the logits ``q @ k^T`` and the weighted sum ``attn @ v``
and nothing for the scaling, softmax, top-k or gathers. With them every ``attn_impl``
counts what ``'gather'`` (the original algorithm's explicit products) counts.

:func:`register_flop_handles` adds them to the table every ``FlopAnalyzer`` starts
from; ``import biformer_mm`` calls it.
"""
import logging
from math import prod
from typing import Any, Callable, Dict, List

from mmengine.logging import print_log

from ..ops.bra_triton import TritonRoutedAttention
from ..ops.chunked_routed_attention import ChunkedRoutedAttention

SDPA_OP = 'aten::scaled_dot_product_attention'


def python_op_name(function: type) -> str:
    """The op name mmengine's trace analysis gives calls of an autograd Function."""
    return f'prim::PythonOp.{function.__name__}'


def _shape(value: Any) -> List[int]:
    """Sizes of a traced tensor value; every attention input and output is complete."""
    if not value.isCompleteTensor():
        raise ValueError(f'FLOP handle: no static shape for traced value {value}.')
    return value.type().sizes()


def routed_attention_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of one call of the routed attention operator or autograd Functions.

    The tensor inputs are ``q, k, v, r_idx``, in either layout of the ops:
    heads-first ``(N, heads, P, W, D)`` or channel-packed ``(N, P, W, heads * D)``. Each
    query token attends, in every head, to the ``K * W`` tokens of its ``K = r_idx.shape[-1]``
    routed regions: ``q @ k^T`` costs ``numel(q) * K * W`` multiply-adds and
    ``attn @ v`` ``numel(out) * K * W``, as the original algorithm's matrix products.
    """
    q_shape, out_shape = _shape(inputs[0]), _shape(outputs[0])
    routed_tokens = _shape(inputs[3])[-1] * q_shape[-2]
    return (prod(q_shape) + prod(out_shape)) * routed_tokens


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``scaled_dot_product_attention(q, k, v, ...)`` as explicit products.

    ``q @ k^T`` plus ``attn @ v``: every output row costs ``S * (E + Ev)`` for ``S`` keys,
    query width ``E`` and value width ``Ev``. A causal or explicit mask is counted as the
    full product, as fvcore counts masked explicit attention.
    """
    q_shape, k_shape, out_shape = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    return prod(out_shape[:-1]) * k_shape[-2] * (q_shape[-1] + out_shape[-1])


FLOP_HANDLES: Dict[str, Callable[[List[Any], List[Any]], int]] = {
    'biformer_mm::routed_attention': routed_attention_flop_jit,
    python_op_name(ChunkedRoutedAttention): routed_attention_flop_jit,
    python_op_name(TritonRoutedAttention): routed_attention_flop_jit,
    SDPA_OP: sdpa_flop_jit,
}
"""Op name -> handle, for ``FlopAnalyzer(...).set_op_handle(**FLOP_HANDLES)``."""


def register_flop_handles() -> None:
    """Add :data:`FLOP_HANDLES` to the table every mmengine ``FlopAnalyzer`` starts from.

    ``FlopAnalyzer.__init__`` copies its handles from mmengine's module-level table
    ``mmengine.analysis.complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS``; entries added
    there reach every counter built afterwards, including those inside mmdet's and
    mmseg's ``get_flops.py``. The addition is additive: the handles of our autograd
    Functions are ours to set, and ``aten::scaled_dot_product_attention`` gets ours only
    where mmengine has none (a later mmengine handle for it is kept). Calling this again
    changes nothing.

    mmengine keeps the table private; if a future version moves it, this logs a warning
    that names the fallback instead of failing the import.
    """
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
