"""BiFormer ImageNet classifiers for timm: ``biformer_tiny``, ``biformer_small`` and
``biformer_base``, registered in timm's model registry when :mod:`biformer_mm` is
imported.

"BiFormer: Vision Transformer with Bi-Level Routing Attention" (CVPR 2023,
https://arxiv.org/abs/2303.08810). The stages are :class:`BiFormerTrunk`, the same code
as the dense backbone :class:`biformer_mm.BiFormer`; the head is the official one
(BatchNorm2d over the last stage, global average pooling, a linear classifier).

Usage::

    import biformer_mm  # registers the models
    import timm

    model = timm.create_model('biformer_small', pretrained=True,
                              pretrained_cfg_overlay=dict(file='biformer_small_best.pth'))

The official checkpoints (``biformer_{tiny,small,base}_best.pth``, linked from
https://github.com/rayleizhu/BiFormer) are read weights-only, with the training
arguments they pickle (:data:`~biformer_mm.safe_load.OFFICIAL_CHECKPOINT_GLOBALS`)
allowed; ``file='trusted://PATH'`` loads a file you trust in full.
"""
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier, get_device_dtype, register_notrace_module
from timm.models import (PretrainedCfg, build_model_with_cfg, generate_default_cfgs,
                         register_model, resolve_pretrained_cfg)
from timm.models._features import feature_take_indices
from torch import Tensor

from ...checkpoint import (DOWNLOAD_OFFICIAL_WEIGHTS, OFFICIAL_WEIGHTS,
                           convert_official_state_dict, load_converted_state_dict)
from ...safe_load import read_checkpoint
from ..biformer_trunk import BiFormerTrunk
from ..layers import BiLevelRoutingAttention, GlobalAttentionLePE

# Leaves of torch.fx graphs (timm's fx feature extraction): the Python control flow of
# the attention layers depends on tensor shapes.
register_notrace_module(BiLevelRoutingAttention)
register_notrace_module(GlobalAttentionLePE)


class BiFormerClassifier(BiFormerTrunk):
    """BiFormer image classifier in timm's model API.

    :class:`BiFormerTrunk` (stem, downsampling layers, four stages), then the official
    head: ``norm`` (BatchNorm2d over the last stage), global pooling, dropout and
    ``head`` (Linear). Weights are initialised at construction as in the official code.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` or an arch dict as for
            :class:`biformer_mm.BiFormer`. Defaults to ``'small'``.
        in_chans (int): Input channels. Defaults to 3.
        num_classes (int): Classes of the linear head; 0 leaves it out. Defaults to 1000.
        global_pool (str): timm pooling type (``'avg'``, ``'max'``, ``'avgmax'``,
            ``'catavgmax'``, or ``''`` for none). Defaults to ``'avg'``, as the official
            model.
        drop_rate (float): Dropout before the head. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate, increasing linearly over the
            blocks. Defaults to 0.
        n_win (int): Regions per side in Bi-Level Routing Attention. Defaults to 7, as
            the official ImageNet models.
        auto_pad (bool): Pad each stage map to a multiple of ``n_win``, so any input
            size works. At 224x224 (maps 56, 28, 14, 7) nothing is padded. Defaults to
            True.
        attn_impl (str): Routed attention implementation (``'auto'``, ``'torch'``,
            ``'triton'``, ``'gather'``). Defaults to ``'auto'``.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_chans: int = 3,
                 num_classes: int = 1000,
                 global_pool: str = 'avg',
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 n_win: int = 7,
                 auto_pad: bool = True,
                 attn_impl: str = 'auto') -> None:
        super().__init__(arch=arch, in_channels=in_chans, n_win=n_win, auto_pad=auto_pad,
                         drop_path_rate=drop_path_rate, with_cp=False, attn_impl=attn_impl,
                         norm_layer=nn.BatchNorm2d, act_layer=nn.GELU)
        self.num_classes = num_classes
        self.num_features = self.embed_dims[-1]
        self.feature_info = [dict(num_chs=dim, reduction=4 * 2**i, module=f'stages.{i}')
                             for i, dim in enumerate(self.embed_dims)]
        self.norm = nn.BatchNorm2d(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes, global_pool)
        self.init_default_weights()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing per block while gradients are enabled."""
        self.with_cp = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the head by a new one with ``num_classes`` outputs (0: none) and,
        unless ``global_pool`` is None, a new pooling (``''``: none)."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.head = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, **get_device_dtype(self))
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_features(self, x: Tensor) -> Tensor:
        """Images ``(N, in_chans, H, W)`` to the normed last-stage map
        ``(N, num_features, H/32, W/32)``."""
        x, _ = self.forward_stages(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the output of :meth:`forward_features` and classify it (or, with
        ``pre_logits``, return the pooled features)."""
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[Tensor], Tuple[Tensor, List[Tensor]]]:
        """The stage outputs (timm 1.x feature API).

        Args:
            x (Tensor): Images ``(N, in_chans, H, W)``.
            indices (int | list[int], optional): Stages to return: the last ``n`` for an
                int, these (negative ones count from the end) for a list, all for None.
            norm (bool): Apply the final BatchNorm to the last stage's output when it is
                returned.
            stop_early (bool): Stop after the last stage in ``indices``.
            output_fmt (str): Only ``'NCHW'``.
            intermediates_only (bool): Return only the stage outputs.

        Returns:
            list[Tensor] | tuple[Tensor, list[Tensor]]: The stage outputs, after the
            final output (as :meth:`forward_features` when every stage ran).
        """
        if output_fmt != 'NCHW':
            raise ValueError(f'BiFormer intermediates are NCHW maps, got '
                             f'output_fmt={output_fmt!r}.')
        last_stage = len(self.stages) - 1
        take, max_index = feature_take_indices(len(self.stages), indices)
        x, intermediates = self.forward_stages(
            x, take, last=max_index if stop_early else None)
        if norm and max_index == last_stage:
            intermediates[-1] = self.norm(intermediates[-1])
        if intermediates_only:
            return intermediates
        if not stop_early or max_index == last_stage:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self,
                                  indices: Union[int, List[int]] = 1,
                                  prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages after the last one in ``indices`` and, with ``prune_norm`` /
        ``prune_head`` (or when stages are dropped), the final norm and the head."""
        take, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        self.downsamples = self.downsamples[:max_index]
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # sized for the last stage, and only applied there
        if prune_end:
            self.num_features = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take


FIRST_CONV = 'stem.0'
CLASSIFIER = 'head'


def _adapted_by_timm(key: str) -> bool:
    """Keys that timm's ``load_pretrained`` adapts after the filter: the classifier
    (dropped for another ``num_classes``) and the first conv's weight (adapted to another
    ``in_chans``)."""
    return key.startswith(CLASSIFIER + '.') or key == FIRST_CONV + '.weight'


def checkpoint_filter_fn(state_dict: Mapping[str, Any],
                         model: BiFormerClassifier) -> Dict[str, Tensor]:
    """Map an official BiFormer classification checkpoint (or one of ours) to the
    classifier's keys, head included, and check that it fits ``model``.

    Every key must be there with the model's shape, and nothing else, except the head
    and the first conv's weight: timm adapts those afterwards (and checks them).

    Raises:
        ValueError: If the checkpoint is not a BiFormer classifier of this arch.
    """
    converted = convert_official_state_dict(state_dict, keep_classifier=True)
    load_converted_state_dict(
        model, {k: v for k, v in converted.items() if not _adapted_by_timm(k)},
        source='The pretrained checkpoint', optional=_adapted_by_timm, check_only=True,
        fix=f'Give the official ImageNet classification checkpoint of this arch '
            f'(biformer_{{tiny,small,base}}_best.pth, linked from {OFFICIAL_WEIGHTS}; '
            f'{model.arch["depths"]} blocks, {model.embed_dims} channels).')
    return converted


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    """The pretrained cfg of the official ImageNet-1k training and evaluation."""
    return dict(
        url='', num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7),
        crop_pct=0.875, interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD, first_conv=FIRST_CONV, classifier=CLASSIFIER,
        paper_ids='arXiv:2303.08810',
        paper_name='BiFormer: Vision Transformer with Bi-Level Routing Attention',
        origin_url=OFFICIAL_WEIGHTS, **kwargs)


default_cfgs = generate_default_cfgs({
    'biformer_tiny.in1k': _cfg(notes=(
        'Official biformer_tiny_best.pth: ImageNet-1k top-1 81.4% (paper), 13.1M params, '
        '2.2 GFLOPs at 224.', )),
    'biformer_small.in1k': _cfg(notes=(
        'Official biformer_small_best.pth: ImageNet-1k top-1 83.8% (paper), 25.5M params, '
        '4.5 GFLOPs at 224.', )),
    'biformer_base.in1k': _cfg(notes=(
        'Official biformer_base_best.pth: ImageNet-1k top-1 84.3% (paper), 56.8M params, '
        '9.8 GFLOPs at 224.', )),
})


def _read_weights(cfg: PretrainedCfg) -> PretrainedCfg:
    """``cfg`` with the checkpoint its ``file`` (or ``url``) names read into
    ``state_dict``: weights-only, with only the official files' extra types allowed
    (``trusted://`` loads a trusted file in full)."""
    location = cfg.file or cfg.url
    if not location:
        raise ValueError(
            f'BiFormer has no downloadable weights in timm (the official links are '
            f'gone). Download biformer_{{tiny,small,base}}_best.pth (linked from '
            f'{OFFICIAL_WEIGHTS}) and pass pretrained_cfg_overlay=dict(file=PATH), or '
            f'use pretrained=False.')
    where = "pretrained_cfg_overlay['file']"
    checkpoint = read_checkpoint(
        location, map_location='cpu', where=where,
        hint=f'{DOWNLOAD_OFFICIAL_WEIGHTS} and pass their path as {where}.')
    return dataclasses.replace(cfg, state_dict=checkpoint)


def _create_biformer(variant: str, pretrained: bool = False,
                     **kwargs: Any) -> Union[BiFormerClassifier, nn.Module]:
    cfg = resolve_pretrained_cfg(variant, kwargs.pop('pretrained_cfg', None),
                                 kwargs.pop('pretrained_cfg_overlay', None))
    read = pretrained and cfg.state_dict is None and not cfg.hf_hub_id
    if read:
        # Read here rather than by timm, whose file loads were not weights-only before
        # timm 1.0.26 and do not accept trusted://.
        cfg = _read_weights(cfg)
    model = build_model_with_cfg(
        BiFormerClassifier, variant, pretrained, pretrained_cfg=cfg,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(dict(out_indices=(0, 1, 2, 3), feature_cls='getter',
                              no_rewrite=True), **kwargs.pop('feature_cfg', {})),
        **kwargs)
    if read:
        # The model now holds the weights; its pretrained_cfg (and that of the model a
        # features_only wrapper holds) only names where they came from.
        for module in model.modules():
            getattr(module, 'pretrained_cfg', {}).pop('state_dict', None)
    return model


@register_model
def biformer_tiny(pretrained: bool = False, **kwargs: Any) -> BiFormerClassifier:
    """BiFormer-T: depths 2, 2, 8, 2, channels 64-512, 13.1M parameters."""
    return _create_biformer('biformer_tiny', pretrained, **dict(dict(arch='tiny'), **kwargs))


@register_model
def biformer_small(pretrained: bool = False, **kwargs: Any) -> BiFormerClassifier:
    """BiFormer-S: depths 4, 4, 18, 4, channels 64-512, 25.5M parameters."""
    return _create_biformer('biformer_small', pretrained, **dict(dict(arch='small'), **kwargs))


@register_model
def biformer_base(pretrained: bool = False, **kwargs: Any) -> BiFormerClassifier:
    """BiFormer-B: depths 4, 4, 18, 4, channels 96-768, 56.8M parameters."""
    return _create_biformer('biformer_base', pretrained, **dict(dict(arch='base'), **kwargs))
