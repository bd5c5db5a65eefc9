from .biformer_timm import BiFormerClassifier

__all__ = ['BiFormerClassifier']
