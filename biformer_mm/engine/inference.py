"""The OpenMMLab inferencer of a trained detector or segmentor config."""
import importlib
import logging
from typing import Optional

from mmengine.infer import BaseInferencer
from mmengine.logging import print_log

from ..checkpoint import check_trained_checkpoint
from ..safe_load import read_checkpoint, weights_only_path
from .cli import load_config
from .dataset_check import build_lazily

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

    The class names and palette are the checkpoint's ``meta.dataset_meta`` (or an
    OpenMMLab 2.x ``meta.CLASSES``), as the libraries take them. A checkpoint that saves
    none, such as a bare state dict, gets those of the config's test dataset, with a
    warning, where the libraries would name COCO's or Cityscapes' classes.

    Raises:
        FileNotFoundError: If a local checkpoint does not exist.
        biformer_mm.safe_load.UnsafeCheckpointError: If the checkpoint holds more than
            a weights-only load accepts.
        biformer_mm.checkpoint.CheckpointMismatchError: If the checkpoint does not fit
            the config's model key for key (the inferencer loads what fits).
        ValueError: If the config's ``default_scope`` is neither mmdet nor mmseg, or if
            neither the checkpoint nor the config's ``test_dataloader`` names the classes.
    """
    weights = weights_only_path(checkpoint)
    cfg = load_config(config, cfg_options)
    scope = cfg.get('default_scope')
    if scope not in INFERENCERS:
        raise ValueError(f'{config} has default_scope={scope!r}: inference supports '
                         f'{sorted(INFERENCERS)} (detection and segmentation configs).')
    module, name = INFERENCERS[scope]
    inferencer_type = getattr(importlib.import_module(module), name)
    inferencer = inferencer_type(model=cfg, weights=weights, device=device)
    saved = read_checkpoint(weights, allowed=(), mmap=True)
    check_trained_checkpoint(inferencer.model, saved, checkpoint, config)
    if {'dataset_meta', 'CLASSES'} & set(saved.get('meta') or {}):
        return inferencer
    dataset = (cfg.get('test_dataloader') or {}).get('dataset')
    if dataset is None:
        raise ValueError(f'{checkpoint} saves no class names (meta.dataset_meta) and '
                         f'{config} has no test_dataloader.dataset to take them from: '
                         f'add one, with the metainfo classes the model was trained on.')
    metainfo = build_lazily(cfg, dataset, 'test_dataloader.dataset').metainfo
    inferencer.model.dataset_meta = dict(classes=metainfo['classes'],
                                         palette=metainfo.get('palette') or 'random')
    # mmdet's visualizer keeps the dict it was given; mmseg's reads the model's per call.
    inferencer.visualizer.dataset_meta = inferencer.model.dataset_meta
    print_log(f'{checkpoint} saves no class names (meta.dataset_meta): the predictions are '
              f'named after the {len(metainfo["classes"])} classes of the test dataset of '
              f'{config}, not the library\'s default ones.', logger='current',
              level=logging.WARNING)
    return inferencer
