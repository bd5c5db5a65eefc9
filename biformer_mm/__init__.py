"""BiFormer (Bi-Level Routing Attention) for MMDetection 3.x and MMSegmentation 1.x, and
its ImageNet classifiers for timm (``biformer_tiny``, ``biformer_small``,
``biformer_base``, registered in timm's model registry on import)."""
import warnings

# mmengine reads each `mmdet::`/`mmseg::` base of a config with importlib.reload(
# pkg_resources), and every reload raises setuptools' deprecation warning of
# pkg_resources again (4 more times per tool run of our configs). Show it once: where
# mmengine first imports pkg_resources; hide only the repeats, which importlib raises.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                        category=UserWarning, module='importlib')

from .analysis import register_flop_handles
from .checkpoint import convert_official_state_dict
from .models import (BiFormer, BiFormerBlock, BiFormerClassifier, BiLevelRoutingAttention,
                     GlobalAttentionLePE)
from .registry import register_model

__version__ = '0.1.0'

register_model(BiFormer)
register_flop_handles()

__all__ = ['BiFormer', 'BiFormerBlock', 'BiFormerClassifier', 'BiLevelRoutingAttention',
           'GlobalAttentionLePE', 'convert_official_state_dict', '__version__']
