"""The OpenMMLab inferencer of a trained detector or segmentor config."""
import importlib
from typing import Optional

from mmengine.infer import BaseInferencer

from ..safe_load import weights_only_path
from .cli import load_config

INFERENCERS = {'mmdet': ('mmdet.apis', 'DetInferencer'),
               'mmseg': ('mmseg.apis', 'MMSegInferencer')}
"""Config ``default_scope`` -> (module, class) of the library's inferencer."""


def build_inferencer(config: str,
                     checkpoint: str,
                     cfg_options: Optional[dict] = None,
                     device: Optional[str] = None) -> BaseInferencer:
    """mmdet's ``DetInferencer`` or mmseg's ``MMSegInferencer`` (by the config's
    ``default_scope``) for ``config`` with the weights of ``checkpoint`` (path, URL or
    backend path, read weights-only; ``trusted://``: in full), on ``device`` (default:
    the inferencer's choice), with ``cfg_options`` (``--cfg-options``).

    Raises:
        FileNotFoundError: If a local checkpoint does not exist.
        biformer_mm.safe_load.UnsafeCheckpointError: If the checkpoint holds more than
            a weights-only load accepts.
        ValueError: If the config's ``default_scope`` is neither mmdet nor mmseg.
    """
    weights = weights_only_path(checkpoint)
    cfg = load_config(config, cfg_options)
    scope = cfg.get('default_scope')
    if scope not in INFERENCERS:
        raise ValueError(f'{config} has default_scope={scope!r}: inference supports '
                         f'{sorted(INFERENCERS)} (detection and segmentation configs).')
    module, name = INFERENCERS[scope]
    inferencer_type = getattr(importlib.import_module(module), name)
    return inferencer_type(model=cfg, weights=weights, device=device)
