"""A detector or segmentor of a config as one network call on one image, the way mmdet's
and mmseg's get_flops.py run it: what FLOP counts and inference benchmarks measure."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.structures import BaseDataElement

from ..safe_load import weights_only_path


def default_input_size(cfg: Config) -> Tuple[int, int]:
    """(H, W) of the largest image the test pipeline's ``Resize`` makes: its ``scale``
    is ``(W, H)`` (e.g. 800x1333 for COCO, 512x2048 for ADE20K).

    Raises:
        ValueError: If the test pipeline has no ``Resize`` with a ``scale``.
    """
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for transform in pipeline:
        if str(transform.get('type', '')).split('.')[-1] == 'Resize' and 'scale' in transform:
            scale = transform['scale']
            width, height = (scale, scale) if isinstance(scale, int) else scale
            return int(height), int(width)
    raise ValueError('The config\'s test_dataloader.dataset.pipeline has no Resize with a '
                     'scale to take the input size from: give the size explicitly '
                     '(tools/analysis/get_flops.py --shape H W).')


class TensorMode(nn.Module):
    """``model(inputs, data_samples, mode='tensor')``: the network without pre- or
    post-processing (for a two-stage detector: backbone, neck, RPN and RoI heads on the
    RPN's proposals; for a segmentor: the decode head's logits)."""

    def __init__(self, model: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.model(inputs, self.data_samples, mode='tensor')


def tensor_mode_inputs(model: nn.Module, image: torch.Tensor) -> Tuple[torch.Tensor, list]:
    """A ``(3, H, W)`` uint8 BGR ``image`` as ``model``'s data preprocessor makes it in
    testing (``(1, 3, H', W')``, normalised, padded), and data samples saying it was not
    rescaled."""
    height, width = image.shape[1:]
    meta = dict(img_shape=(height, width), ori_shape=(height, width), scale_factor=(1., 1.))
    with torch.no_grad():
        data = model.data_preprocessor(
            dict(inputs=[image], data_samples=[BaseDataElement(metainfo=meta)]))
    return data['inputs'], data['data_samples']


def build_tensor_mode(cfg: Config,
                      shape: Optional[Tuple[int, int]] = None,
                      checkpoint: Optional[str] = None) -> Tuple[TensorMode, torch.Tensor]:
    """The model of ``cfg`` in eval mode (no auxiliary head, as in mmseg's get_flops.py;
    SyncBN as BN; ``checkpoint``'s weights or random ones, the backbone's ``init_cfg``
    unloaded), and a random image of ``shape`` as its data preprocessor makes it.

    Args:
        cfg (Config): An mmdet or mmseg config (``default_scope`` names the library).
        shape (tuple[int, int], optional): Image ``(H, W)``. Defaults to
            :func:`default_input_size`.
        checkpoint (str, optional): Weights of the model (a training checkpoint), read
            weights-only (``trusted://`` loads a file you trust in full). Defaults to
            None: random weights.

    Returns:
        tuple[TensorMode, Tensor]: The network call and its ``(1, 3, H', W')`` input.
    """
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    height, width = shape or default_input_size(cfg)
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, weights_only_path(checkpoint, 'the checkpoint path'),
                        map_location='cpu', strict=True)
    if getattr(model, 'auxiliary_head', None) is not None:
        model.auxiliary_head = None
    model = revert_sync_batchnorm(model).eval()
    inputs, data_samples = tensor_mode_inputs(
        model, torch.randint(0, 256, (3, height, width), dtype=torch.uint8))
    # The wrapper in eval mode too: torch.onnx.export restores the mode of the module it
    # is given, recursively.
    return TensorMode(model, data_samples).eval(), inputs
