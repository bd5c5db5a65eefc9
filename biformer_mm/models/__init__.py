from .backbones import BiFormer
from .biformer_trunk import BiFormerTrunk
from .layers import BiFormerBlock, BiLevelRoutingAttention, GlobalAttentionLePE

__all__ = ['BiFormer', 'BiFormerBlock', 'BiFormerTrunk', 'BiLevelRoutingAttention',
           'GlobalAttentionLePE']
