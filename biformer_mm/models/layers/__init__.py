from .bi_level_routing_attention import BiLevelRoutingAttention
from .biformer_block import BiFormerBlock, BiFormerStage
from .global_attention import GlobalAttentionLePE

__all__ = ['BiLevelRoutingAttention', 'BiFormerBlock', 'BiFormerStage', 'GlobalAttentionLePE']
