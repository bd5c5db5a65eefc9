from .bi_level_routing_attention import BiLevelRoutingAttention
from .biformer_block import BiFormerBlock
from .global_attention import GlobalAttentionLePE

__all__ = ['BiLevelRoutingAttention', 'BiFormerBlock', 'GlobalAttentionLePE']
