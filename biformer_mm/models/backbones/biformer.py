import logging
from functools import partial
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import initialize
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ...checkpoint import (DOWNLOAD_OFFICIAL_WEIGHTS, convert_official_state_dict,
                           load_converted_state_dict, select_prefix)
from ...safe_load import read_checkpoint
from ..biformer_trunk import BiFormerTrunk

PRETRAINED_KEYS = ('type', 'checkpoint', 'prefix', 'map_location', 'strict')
PRETRAINED_HINT = (f'{DOWNLOAD_OFFICIAL_WEIGHTS} and put them there, set the Pretrained '
                   f'entry\'s checkpoint (model.backbone.init_cfg.checkpoint in a config) '
                   f'to their path, or leave the entry out (model.backbone.init_cfg=None) '
                   f'to train from scratch.')
"""What to do about a missing ``Pretrained`` checkpoint."""


class BiFormer(BiFormerTrunk):
    """BiFormer backbone: "BiFormer: Vision Transformer with Bi-Level Routing Attention"
    (CVPR 2023, https://arxiv.org/abs/2303.08810), for dense prediction.

    :class:`BiFormerTrunk`, then a LayerNorm per requested stage output: NCHW maps at
    stride 4, 8, 16 or 32.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` or a dict with keys
            ``depths``, ``embed_dims``, ``qk_dims``, ``mlp_ratios``, ``topks`` (four
            values each), ``head_dim`` and optionally ``side_dwconv`` (LePE kernel,
            default 5). ``topks[i] == -2`` gives stage ``i`` global attention with LePE;
            a positive value is the routing top-k. Defaults to ``'small'``.
        in_channels (int): Input channels. Defaults to 3.
        n_win (int): Regions per side in Bi-Level Routing Attention. Defaults to 7.
        auto_pad (bool): Pad each stage map to a multiple of ``n_win`` (and crop back),
            so any input size works. Defaults to True.
        drop_path_rate (float): Stochastic depth rate, increasing linearly over the
            blocks. Defaults to 0.
        out_indices (Sequence[int]): Stages whose outputs are returned, one map per
            distinct index in stage order. Defaults to ``(0, 1, 2, 3)``.
        frozen_stages (int): -1 freezes nothing, 0 the stem, ``k >= 1`` the stem and
            the first ``k`` stages, each with the downsampling layer in front of it and
            its output norm, as mmdet's ResNet and PVT do (``downsamples[k - 1]``, which
            feeds stage ``k``, stays trainable, unlike in mmdet's Swin). Frozen parts get
            ``requires_grad=False`` and stay in eval mode. Defaults to -1.
        norm_eval (bool): Keep the BatchNorm layers (stem and downsampling) in eval
            mode while training: frozen running statistics, as the official detection
            models train; a warning where ``norm_cfg`` builds no BatchNorm. Defaults to
            False.
        with_cp (bool): Activation checkpointing per block while gradients are
            enabled, trading compute for memory. Defaults to False.
        attn_impl (str): Routed attention implementation: ``'auto'`` (the fused C++
            kernel on the CPU, the fused Triton kernel on CUDA, where they can run; else
            ``'torch'``), ``'torch'`` (``'chunked'`` on the CPU, ``'sdpa'`` elsewhere), or
            an algorithm: ``'chunked'``, ``'cpp'``, ``'sdpa'``, ``'triton'`` or
            ``'gather'`` (the original algorithm). Defaults to ``'auto'``.
        norm_cfg (dict): Norm layer of the stem and the downsampling layers, built
            with mmcv's ``build_norm_layer``; ``dict(type='SyncBN')`` as the official
            segmentation models. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation of the stem and the MLPs, built with mmcv's
            ``build_activation_layer``. Defaults to ``dict(type='GELU')``.
        init_cfg (dict | list[dict], optional): Initialization config. Linear layers
            get a truncated normal (std 0.02) and LayerNorms ones and zeros first, as in
            the official code. A ``dict(type='Pretrained', checkpoint=PATH)`` entry
            loads an official BiFormer checkpoint (classification or dense layout) or
            one of ours after the other entries; ``PATH`` (local, URL or mmengine
            backend) is read weights-only (``trusted://PATH``: in full). Optional keys:
            ``prefix`` (take only the keys under it, e.g. ``'backbone.'``),
            ``map_location`` (default ``'cpu'``) and ``strict`` (default True: every
            tensor but the per-output norms and BatchNorm's ``num_batches_tracked`` must
            be loaded, with its shape, and apart from the classifier and the output
            norms, which are dropped, the checkpoint must hold nothing else; False loads
            what fits and warns).
            Defaults to None.

    Example:
        >>> import torch
        >>> from biformer_mm import BiFormer
        >>> model = BiFormer(arch='tiny', n_win=7).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 224, 224))]
        [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    """

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 in_channels: int = 3,
                 n_win: int = 7,
                 auto_pad: bool = True,
                 drop_path_rate: float = 0.,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 attn_impl: str = 'auto',
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        arch = self._parse_arch(arch)
        num_stages = len(arch['depths'])
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices={out_indices} must be non-empty stage indices in '
                             f'[0, {num_stages - 1}].')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} must be in [-1, {num_stages}] '
                             f'(-1: none, 0: stem, k: stem and the first k stages).')
        self.pretrained_entry(init_cfg)  # fail at construction, not at the start of training
        # mmcv only here: `import biformer_mm` and the timm classifiers work without it.
        from mmcv.cnn import build_activation_layer, build_norm_layer
        super().__init__(arch=arch, in_channels=in_channels, n_win=n_win, auto_pad=auto_pad,
                         drop_path_rate=drop_path_rate, with_cp=with_cp, attn_impl=attn_impl,
                         norm_layer=lambda channels: build_norm_layer(norm_cfg, channels)[1],
                         act_layer=partial(build_activation_layer, act_cfg),
                         init_cfg=init_cfg)
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        if norm_eval and not any(isinstance(m, _BatchNorm) for m in self.modules()):
            print_log(f'BiFormer: norm_eval=True has no effect: norm_cfg={norm_cfg} builds '
                      f'no BatchNorm layer to keep in eval mode.', logger='current',
                      level=logging.WARNING)
        self.out_norms = nn.ModuleDict(
            {str(i): nn.LayerNorm(self.embed_dims[i], eps=1e-6) for i in out_indices})
        self._freeze_stages()

    def _freeze_stages(self) -> None:
        frozen: List[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen.append(self.stem)
        for i in range(self.frozen_stages):
            if i > 0:
                frozen.append(self.downsamples[i - 1])
            frozen.append(self.stages[i])
            if str(i) in self.out_norms:
                frozen.append(self.out_norms[str(i)])
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'BiFormer':
        """Set training mode, keeping frozen stages and (with ``norm_eval``) BatchNorm
        layers in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    @staticmethod
    def pretrained_entry(init_cfg: Union[dict, List[dict], None]) -> Optional[dict]:
        """Validate the ``Pretrained`` entry of ``init_cfg`` (a dict or a list) and
        return it, or None."""
        cfgs = init_cfg if isinstance(init_cfg, (list, tuple)) else [init_cfg]
        pretrained = [dict(c) for c in cfgs if c is not None and c.get('type') == 'Pretrained']
        if len(pretrained) > 1:
            raise ValueError(f'init_cfg has {len(pretrained)} Pretrained entries; give one '
                             f'checkpoint (merge the files beforehand if you need several).')
        if not pretrained:
            return None
        cfg = pretrained[0]
        unknown = sorted(set(cfg) - set(PRETRAINED_KEYS))
        if unknown or 'checkpoint' not in cfg:
            raise ValueError(f'init_cfg Pretrained entry {cfg} needs checkpoint and takes '
                             f'only {PRETRAINED_KEYS}; unknown keys: {unknown}.')
        return cfg

    def init_weights(self) -> None:
        """Initialise the weights once, as the class docstring's ``init_cfg`` says (a
        second call changes nothing and logs a warning).

        Raises:
            FileNotFoundError: If a local pretrained checkpoint does not exist.
            ValueError: If the checkpoint does not fit (``strict``): wrong file, wrong
                arch, or a ``prefix`` that selects the wrong part.
            biformer_mm.safe_load.UnsafeCheckpointError: If the checkpoint holds types
                a weights-only load refuses.
        """
        if self._is_init:
            print_log(f'{type(self).__name__}.init_weights() was called again: the weights '
                      f'are kept as they are.', logger='current', level=logging.WARNING)
            return
        self.init_default_weights()
        cfgs = self.init_cfg if isinstance(self.init_cfg, (list, tuple)) else [self.init_cfg]
        others = [c for c in cfgs if c is not None and c.get('type') != 'Pretrained']
        if others:
            initialize(self, others)
        pretrained = self.pretrained_entry(self.init_cfg)
        if pretrained is not None:
            self._load_pretrained(**{k: v for k, v in pretrained.items() if k != 'type'})
        self._is_init = True

    def _load_pretrained(self,
                         checkpoint: str,
                         prefix: Optional[str] = None,
                         map_location: Union[str, torch.device, None] = 'cpu',
                         strict: bool = True) -> None:
        loaded = read_checkpoint(checkpoint, map_location, hint=PRETRAINED_HINT,
                                 where='the Pretrained checkpoint '
                                 '(model.backbone.init_cfg.checkpoint in a config)')
        if prefix:
            loaded = select_prefix(loaded, prefix)
        # An ImageNet checkpoint holds no output norms, nor BatchNorm batch counters.
        load_converted_state_dict(
            self, convert_official_state_dict(loaded), source=f'checkpoint {checkpoint}',
            optional=lambda k: k.startswith('out_norms.') or k.endswith('.num_batches_tracked'),
            ignored=lambda k: k.startswith('out_norms.'),
            strict=strict,
            fix='Check that the file is a BiFormer checkpoint of this arch '
                f'({self.arch["depths"]} blocks, {self.embed_dims} channels), give '
                'init_cfg.prefix if its backbone sits under another key, or set '
                'init_cfg.strict=False to load only what fits (e.g. after changing a stage).')

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Images ``(N, in_channels, H, W)`` to the NCHW maps of the distinct
        ``out_indices``, in stage order."""
        taken = sorted(set(self.out_indices))
        _, maps = self.forward_stages(x, taken, last=taken[-1])
        return tuple(self.out_norms[str(i)](out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                     .contiguous() for i, out in zip(taken, maps))
