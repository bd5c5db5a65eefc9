"""BiFormer (Bi-Level Routing Attention) for MMDetection 3.x and MMSegmentation 1.x, and
its ImageNet classifiers for timm (``biformer_{tiny,small,base}``, registered in timm's
model registry on import)."""
import importlib
import warnings

# mmengine reloads pkg_resources for each `mmdet::`/`mmseg::` base of a config, and each
# reload repeats setuptools' deprecation warning: show it once, hide the repeats.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                        category=UserWarning, module='importlib')

from .analysis import register_flop_handles
from .checkpoint import convert_official_state_dict
from .models import (BiFormer, BiFormerBlock, BiFormerClassifier, BiLevelRoutingAttention,
                     GlobalAttentionLePE)

__version__ = '0.1.0'

# Import-time changes (docs/install.md): BiFormer in mmdet's and mmseg's MODELS, where
# installed, and the FLOP handles.
for _registry in ('mmdet.registry', 'mmseg.registry'):
    try:
        importlib.import_module(_registry).MODELS.register_module(module=BiFormer, force=True)
    except ModuleNotFoundError as _error:  # mmdet or mmseg not installed; not a broken one
        if _error.name not in (_registry, _registry.split('.')[0]):
            raise
register_flop_handles()

__all__ = ['BiFormer', 'BiFormerBlock', 'BiFormerClassifier', 'BiLevelRoutingAttention',
           'GlobalAttentionLePE', 'convert_official_state_dict', '__version__']
