from .chunked_routed_attention import ChunkedRoutedAttention
from .routed_attention import (ATTN_IMPLS, check_attn_impl, resolve_attn_impl,
                               routed_attention, routed_attention_gather,
                               routed_attention_sdpa, routed_attention_torch)

__all__ = [
    'ATTN_IMPLS', 'ChunkedRoutedAttention', 'check_attn_impl', 'resolve_attn_impl',
    'routed_attention', 'routed_attention_gather', 'routed_attention_sdpa',
    'routed_attention_torch'
]
