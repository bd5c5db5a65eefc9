from .backbones import BiFormer
from .layers import BiFormerBlock, BiLevelRoutingAttention, GlobalAttentionLePE

__all__ = ['BiFormer', 'BiFormerBlock', 'BiLevelRoutingAttention', 'GlobalAttentionLePE']
