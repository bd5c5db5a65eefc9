import os.path as osp
from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, trunc_normal_init
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ...checkpoint import convert_official_state_dict, load_checkpoint_file
from ...ops.routed_attention import ATTN_IMPLS
from ..layers.biformer_block import GLOBAL_ATTENTION, BiFormerBlock

ARCH_KEYS = ('depths', 'embed_dims', 'qk_dims', 'mlp_ratios', 'topks', 'head_dim')


class BiFormer(BaseModule):
    """BiFormer backbone: "BiFormer: Vision Transformer with Bi-Level Routing Attention"
    (CVPR 2023, https://arxiv.org/abs/2303.08810), for dense prediction.

    A convolutional stem (two 3x3 stride-2 convs with BN) and 3x3 stride-2 conv+BN
    downsampling between four stages of :class:`BiFormerBlock`. Each requested stage
    output goes through its own LayerNorm and is returned as an NCHW map at stride
    4, 8, 16 or 32.

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
        out_indices (Sequence[int]): Stages whose outputs are returned. Defaults to
            ``(0, 1, 2, 3)``.
        frozen_stages (int): -1 freezes nothing, 0 the stem, ``k >= 1`` the stem and
            the first ``k`` stages (with their downsampling and output norms). Frozen
            parts get ``requires_grad=False`` and stay in eval mode. Defaults to -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode while training (frozen
            running statistics). Defaults to False.
        with_cp (bool): Activation checkpointing per block, trading compute for
            memory. Defaults to False.
        attn_impl (str): Routed attention implementation: ``'auto'`` (fused Triton
            kernel on CUDA when available, else ``'torch'``), ``'torch'``,
            ``'triton'`` or ``'gather'`` (the original algorithm). Defaults to
            ``'auto'``.
        init_cfg (dict | list[dict], optional): Initialization config. With
            ``dict(type='Pretrained', checkpoint=PATH)`` an official BiFormer
            checkpoint (or one of ours) is loaded by :meth:`init_weights`.
            Defaults to None.

    Example:
        >>> import torch
        >>> from biformer_mm import BiFormer
        >>> model = BiFormer(arch='tiny', n_win=7).eval()
        >>> [tuple(o.shape) for o in model(torch.rand(1, 3, 224, 224))]
        [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    """

    arch_zoo: Dict[str, dict] = {
        'tiny': dict(depths=[2, 2, 8, 2], embed_dims=[64, 128, 256, 512],
                     qk_dims=[64, 128, 256, 512], mlp_ratios=[3, 3, 3, 3],
                     topks=[1, 4, 16, -2], head_dim=32),
        'small': dict(depths=[4, 4, 18, 4], embed_dims=[64, 128, 256, 512],
                      qk_dims=[64, 128, 256, 512], mlp_ratios=[3, 3, 3, 3],
                      topks=[1, 4, 16, -2], head_dim=32),
        'base': dict(depths=[4, 4, 18, 4], embed_dims=[96, 192, 384, 768],
                     qk_dims=[96, 192, 384, 768], mlp_ratios=[3, 3, 3, 3],
                     topks=[1, 4, 16, -2], head_dim=32),
    }

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
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = self._parse_arch(arch)
        num_stages = len(arch['depths'])
        if n_win < 1:
            raise ValueError(f'n_win must be a positive int, got {n_win}.')
        for i, topk in enumerate(arch['topks']):
            if topk != GLOBAL_ATTENTION and not 0 < topk <= n_win**2:
                raise ValueError(
                    f'arch topks[{i}]={topk} must be -2 (global attention) or a top-k in '
                    f'[1, n_win**2={n_win**2}]: lower it or raise n_win.')
        out_indices = tuple(out_indices)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices={out_indices} must be non-empty stage indices in '
                             f'[0, {num_stages - 1}].')
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages={frozen_stages} must be in [-1, {num_stages}] '
                             f'(-1: none, 0: stem, k: stem and the first k stages).')
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}.')

        self.arch = arch
        self.in_channels = in_channels
        self.n_win = n_win
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        dims = arch['embed_dims']
        self.embed_dims = dims

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0] // 2, 3, stride=2, padding=1),
            nn.BatchNorm2d(dims[0] // 2), nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1),
            nn.BatchNorm2d(dims[0]))
        self.downsamples = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1),
                          nn.BatchNorm2d(dims[i + 1])) for i in range(num_stages - 1))
        drop_rates = torch.linspace(0, drop_path_rate, sum(arch['depths'])).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(arch['depths']):
            first = sum(arch['depths'][:i])
            self.stages.append(nn.Sequential(*(BiFormerBlock(
                dims[i], num_heads=arch['qk_dims'][i] // arch['head_dim'], n_win=n_win,
                topk=arch['topks'][i], qk_dims=arch['qk_dims'][i],
                mlp_ratio=arch['mlp_ratios'][i], drop_path=drop_rates[first + j],
                side_dwconv=arch['side_dwconv'], auto_pad=auto_pad, attn_impl=attn_impl)
                for j in range(depth))))
        self.out_norms = nn.ModuleDict(
            {str(i): nn.LayerNorm(dims[i], eps=1e-6) for i in out_indices})
        self._freeze_stages()

    @classmethod
    def _parse_arch(cls, arch: Union[str, dict]) -> dict:
        """Validate ``arch`` and return the full setting dict."""
        if isinstance(arch, str):
            if arch not in cls.arch_zoo:
                raise ValueError(f'Unknown BiFormer arch {arch!r}: use one of '
                                 f'{sorted(cls.arch_zoo)} or a dict with keys {ARCH_KEYS}.')
            arch = cls.arch_zoo[arch]
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or dict, got {type(arch).__name__}.')
        missing = [k for k in ARCH_KEYS if k not in arch]
        if missing:
            raise ValueError(f'arch dict is missing keys {missing}; it needs {ARCH_KEYS} '
                             f'(and optionally side_dwconv).')
        unknown = sorted(set(arch) - set(ARCH_KEYS) - {'side_dwconv'})
        if unknown:
            raise ValueError(f'arch dict has unknown keys {unknown}; allowed: {ARCH_KEYS} '
                             f'and side_dwconv.')
        arch = dict(arch)
        arch.setdefault('side_dwconv', 5)
        for key in ARCH_KEYS[:-1]:
            arch[key] = list(arch[key])
            if len(arch[key]) != 4:
                raise ValueError(f'arch[{key!r}] must have one value per stage (4), got '
                                 f'{len(arch[key])}: {arch[key]}.')
        head_dim = arch['head_dim']
        for i, (dim, qk_dim, topk) in enumerate(
                zip(arch['embed_dims'], arch['qk_dims'], arch['topks'])):
            if topk == GLOBAL_ATTENTION:
                if dim % 8:
                    raise ValueError(f'arch embed_dims[{i}]={dim} must be divisible by 8, '
                                     f'the head count of global attention (topks[{i}]=-2).')
                continue
            for name, value in (('embed_dims', dim), ('qk_dims', qk_dim)):
                if value % head_dim:
                    raise ValueError(f'arch {name}[{i}]={value} is not divisible by '
                                     f'head_dim={head_dim}; pick channels that are multiples '
                                     f'of head_dim.')
            if dim % (qk_dim // head_dim):
                raise ValueError(f'arch embed_dims[{i}]={dim} must be divisible by the '
                                 f'{qk_dim // head_dim} heads (qk_dims[{i}] // head_dim).')
        return arch

    def _freeze_stages(self) -> None:
        """Stop gradients and statistics updates of the frozen stages."""
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

    def init_weights(self) -> None:
        """Initialise weights, or load the checkpoint named by a ``Pretrained``
        ``init_cfg`` (official BiFormer layout or ours)."""
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            self._load_pretrained(self.init_cfg['checkpoint'])
            return
        if self.init_cfg is not None:
            super().init_weights()
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_init(module, std=.02, bias=0.)
            elif isinstance(module, nn.LayerNorm):
                constant_init(module, val=1., bias=0.)

    def _load_pretrained(self, path: str) -> None:
        """Load a checkpoint into the backbone, logging missing/unexpected keys."""
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'BiFormer pretrained checkpoint not found at {osp.abspath(path)}. Download '
                f'the official ImageNet weights (biformer_{{tiny,small,base}}_best.pth) and put '
                f'them there, set model.backbone.init_cfg.checkpoint to their path, or set '
                f'model.backbone.init_cfg=None to train from scratch.')
        state_dict = convert_official_state_dict(load_checkpoint_file(path))
        own = self.state_dict()
        mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                      for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
        if mismatched:
            raise ValueError(f'Checkpoint {path} does not fit this BiFormer (wrong arch?). '
                             f'Shape mismatches:\n  ' + '\n  '.join(mismatched))
        result = self.load_state_dict(state_dict, strict=False)
        print_log(f'Loaded BiFormer weights from {path}; missing keys: '
                  f'{result.missing_keys or "none"}; unexpected keys: '
                  f'{result.unexpected_keys or "none"}', logger='current')
        self._is_init = True

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f'BiFormer expects a 4-D (N, C, H, W) tensor, got shape '
                             f'{tuple(x.shape)}; batch single images with x[None].')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'BiFormer expects {self.in_channels} input channels, got '
                             f'{x.shape[1]} (shape {tuple(x.shape)}); set in_channels or '
                             f'convert the input.')

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Forward.

        Args:
            x (Tensor): Images ``(N, in_channels, H, W)``.

        Returns:
            tuple[Tensor]: NCHW maps of the stages in ``out_indices``.
        """
        self._check_input(x)
        outs = []
        # Channels-last memory makes the blocks' NCHW <-> NHWC permutes free views.
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            for block in stage:
                if self.with_cp and x.requires_grad:
                    x = cp.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if i in self.out_indices:
                out = self.out_norms[str(i)](x.permute(0, 2, 3, 1))
                outs.append(out.permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
