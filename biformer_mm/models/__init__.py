from .backbones import BiFormer
from .biformer_trunk import BiFormerTrunk
from .classifiers import BiFormerClassifier
from .layers import BiFormerBlock, BiLevelRoutingAttention, GlobalAttentionLePE

__all__ = ['BiFormer', 'BiFormerBlock', 'BiFormerClassifier', 'BiFormerTrunk',
           'BiLevelRoutingAttention', 'GlobalAttentionLePE']
