"""Registration of biformer_mm modules in the OpenMMLab registries that are installed."""
import importlib
from typing import List

import torch.nn as nn

_MODEL_REGISTRIES = ('mmdet.registry', 'mmseg.registry')


def register_model(module: type) -> List[str]:
    """Register ``module`` in the ``MODELS`` registry of mmdet and of mmseg, whichever
    of them are installed.

    Args:
        module (type): The ``nn.Module`` subclass to register under its class name.

    Returns:
        list[str]: The registry modules it was registered in.
    """
    assert issubclass(module, nn.Module)
    registered = []
    for name in _MODEL_REGISTRIES:
        try:
            registry = importlib.import_module(name).MODELS
        except ImportError:
            continue
        registry.register_module(module=module, force=True)
        registered.append(name)
    return registered
