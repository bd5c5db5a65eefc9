from .chunked_routed_attention import ChunkedRoutedAttention
from .routed_attention import (ALGORITHMS, ATTN_IMPLS, OPERATOR, check_attn_impl,
                               resolve_algorithm, resolve_attn_impl, routed_attention,
                               routed_attention_chunked, routed_attention_cpp,
                               routed_attention_gather, routed_attention_map,
                               routed_attention_sdpa, runs_map_kernel)
# Registers torch.ops.biformer_mm.routed_attention where torch has custom_op (>= 2.4).
from . import routed_attention_op  # noqa: E402,F401  isort:skip

__all__ = [
    'ALGORITHMS', 'ATTN_IMPLS', 'ChunkedRoutedAttention', 'OPERATOR', 'check_attn_impl',
    'resolve_algorithm', 'resolve_attn_impl', 'routed_attention', 'routed_attention_chunked',
    'routed_attention_cpp', 'routed_attention_gather', 'routed_attention_map',
    'routed_attention_sdpa', 'runs_map_kernel'
]
