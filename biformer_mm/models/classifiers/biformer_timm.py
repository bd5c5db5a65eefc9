"""BiFormer ImageNet classifiers for timm (``biformer_{tiny,small,base}``, registered in
timm's model registry when :mod:`biformer_mm` is imported)::

    model = timm.create_model('biformer_small', pretrained=True,
                              pretrained_cfg_overlay=dict(file='biformer_small_best.pth'))

The official checkpoints are read weights-only (``file='trusted://PATH'``: in full).
"""
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import create_classifier, get_device_dtype, register_notrace_module
from timm.models import (build_model_with_cfg, generate_default_cfgs, register_model,
                         resolve_pretrained_cfg)
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
    """BiFormer image classifier in timm's model API: :class:`BiFormerTrunk`, then the
    official head (``norm``: BatchNorm2d, global pooling, dropout, ``head``: Linear).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` or an arch dict as for
            :class:`biformer_mm.BiFormer`. Defaults to ``'small'``.
        in_chans (int): Input channels. Defaults to 3.
        num_classes (int): Classes of the linear head; 0 leaves it out. Defaults to 1000.
        global_pool (str): timm pooling type (``'avg'``, ``'max'``, ``'avgmax'``,
            ``'catavgmax'``, or ``''`` for none). Defaults to ``'avg'``, as the official
            model.
        drop_rate (float): Dropout before the head. Defaults to 0.
        drop_path_rate, n_win, auto_pad, attn_impl: As for :class:`biformer_mm.BiFormer`
            (``n_win`` 7, as the official ImageNet models, pads nothing at 224x224).
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
        """A new head of ``num_classes`` outputs (0: none) and pooling (None: kept)."""
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.head = create_classifier(
            self.num_features, num_classes, pool_type=global_pool, **get_device_dtype(self))
        self.num_classes = num_classes
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    def forward_features(self, x: Tensor) -> Tensor:
        return self.norm(self.forward_stages(x)[0])

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
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
        """The stage outputs (timm's feature API; ``output_fmt`` only ``'NCHW'``;
        ``norm`` applies the final BatchNorm to the last stage's output)."""
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
        """timm's pruning: the stages after the largest of ``indices`` go; the norm with
        ``prune_norm`` or when stages go, the head with ``prune_head`` or when stages go."""
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
    """Keys that timm's ``load_pretrained`` adapts after the filter (to another
    ``num_classes`` or ``in_chans``)."""
    return key.startswith(CLASSIFIER + '.') or key == FIRST_CONV + '.weight'


def checkpoint_filter_fn(state_dict: Mapping[str, Any],
                         model: BiFormerClassifier) -> Dict[str, Tensor]:
    """Map an official BiFormer classification checkpoint (or one of ours) to the
    classifier's keys and check that it fits ``model`` (timm checks the adapted keys).

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
    f'biformer_{arch}.in1k': _cfg(notes=(
        f'Official biformer_{arch}_best.pth: ImageNet-1k top-1 {top1}% (paper), {params}M '
        f'params, {gflops} GFLOPs at 224.', ))
    for arch, top1, params, gflops in (('tiny', 81.4, 13.1, 2.2), ('small', 83.8, 25.5, 4.5),
                                       ('base', 84.3, 56.8, 9.8))})


def _create_biformer(variant: str, pretrained: bool = False,
                     **kwargs: Any) -> Union[BiFormerClassifier, nn.Module]:
    cfg = resolve_pretrained_cfg(variant, kwargs.pop('pretrained_cfg', None),
                                 kwargs.pop('pretrained_cfg_overlay', None))
    read = pretrained and cfg.state_dict is None and not cfg.hf_hub_id
    if read and not (cfg.file or cfg.url):
        raise ValueError(
            f'BiFormer has no downloadable weights in timm (the official links are '
            f'gone). Download biformer_{{tiny,small,base}}_best.pth (linked from '
            f'{OFFICIAL_WEIGHTS}) and pass pretrained_cfg_overlay=dict(file=PATH), or '
            f'use pretrained=False.')
    if read:
        # Read here, weights-only, rather than by timm, whose file loads were not
        # weights-only before timm 1.0.26 and do not accept trusted://.
        where = "pretrained_cfg_overlay['file']"
        cfg = dataclasses.replace(cfg, state_dict=read_checkpoint(
            cfg.file or cfg.url, map_location='cpu', where=where,
            hint=f'{DOWNLOAD_OFFICIAL_WEIGHTS} and pass their path as {where}.'))
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
    return _create_biformer('biformer_tiny', pretrained, **dict(dict(arch='tiny'), **kwargs))


@register_model
def biformer_small(pretrained: bool = False, **kwargs: Any) -> BiFormerClassifier:
    return _create_biformer('biformer_small', pretrained, **dict(dict(arch='small'), **kwargs))


@register_model
def biformer_base(pretrained: bool = False, **kwargs: Any) -> BiFormerClassifier:
    return _create_biformer('biformer_base', pretrained, **dict(dict(arch='base'), **kwargs))
