"""The part of BiFormer that its dense backbone and its ImageNet classifier share."""
import operator
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, trunc_normal_init
from torch import Tensor

from .layers.biformer_block import GLOBAL_ATTENTION, BiFormerBlock, BiFormerStage

ARCH_KEYS = ('depths', 'embed_dims', 'qk_dims', 'mlp_ratios', 'topks', 'head_dim')


def check_input(x: Tensor, in_channels: int) -> None:
    """Raise ``ValueError`` unless ``x`` is an ``(N, in_channels, H, W)`` batch."""
    if x.dim() != 4:
        raise ValueError(f'BiFormer expects a 4-D (N, C, H, W) tensor, got shape '
                         f'{tuple(x.shape)}; batch single images with x[None].')
    # An int also where legacy ONNX tracing gives sizes as tensors (no TracerWarning).
    if operator.index(x.shape[1]) != in_channels:
        raise ValueError(f'BiFormer expects {in_channels} input channels, got '
                         f'{x.shape[1]} (shape {tuple(x.shape)}); set in_channels (in_chans '
                         f'in timm) or convert the input.')


# A call in torch.fx graphs (timm's fx feature extraction): its Python control flow
# depends on the input shape.
torch.fx.wrap('check_input')


class BiFormerTrunk(BaseModule):
    """Stem, downsampling layers and stages of BiFormer ("BiFormer: Vision Transformer
    with Bi-Level Routing Attention", CVPR 2023, https://arxiv.org/abs/2303.08810):
    NCHW maps at strides 4, 8, 16 and 32, for :class:`~biformer_mm.BiFormer` and the
    timm classifier. Needs torch, timm and mmengine only.

    Args (keyword-only): as :class:`biformer_mm.BiFormer`'s, and ``norm_layer``
    (Callable[[int], nn.Module]: the norm of the stem and the downsampling layers) and
    ``act_layer`` (Callable[[], nn.Module]: the activation of the stem and the MLPs),
    which the mm backbone builds with mmcv.
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

    def __init__(self, *, arch: Union[str, dict], in_channels: int, n_win: int,
                 auto_pad: bool, drop_path_rate: float, with_cp: bool, attn_impl: str,
                 norm_layer: Callable[[int], nn.Module], act_layer: Callable[[], nn.Module],
                 init_cfg: Union[dict, List[dict], None] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        arch = self._parse_arch(arch)
        if n_win < 1:
            raise ValueError(f'n_win must be a positive int, got {n_win}.')
        self.arch = arch
        self.in_channels = in_channels
        self.n_win = n_win
        dims = arch['embed_dims']
        self.embed_dims = dims

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dims[0] // 2, 3, stride=2, padding=1),
            norm_layer(dims[0] // 2), act_layer(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1), norm_layer(dims[0]))
        self.downsamples = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1),
                          norm_layer(dims[i + 1]))
            for i in range(len(dims) - 1))
        drop_rates = torch.linspace(0, drop_path_rate, sum(arch['depths'])).tolist()
        self.stages = nn.ModuleList()
        for i, depth in enumerate(arch['depths']):
            first = sum(arch['depths'][:i])
            self.stages.append(BiFormerStage(*(BiFormerBlock(
                dims[i], num_heads=arch['qk_dims'][i] // arch['head_dim'], n_win=n_win,
                topk=arch['topks'][i], qk_dims=arch['qk_dims'][i],
                mlp_ratio=arch['mlp_ratios'][i], drop_path=drop_rates[first + j],
                side_dwconv=arch['side_dwconv'], auto_pad=auto_pad, attn_impl=attn_impl,
                act_layer=act_layer)
                for j in range(depth))))
        self.with_cp = with_cp

    @property
    def with_cp(self) -> bool:
        """Activation checkpointing per block while gradients are enabled."""
        return all(stage.with_cp for stage in self.stages)

    @with_cp.setter
    def with_cp(self, enable: bool) -> None:
        for stage in self.stages:
            stage.with_cp = enable

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
        unknown = sorted(set(arch) - set(ARCH_KEYS) - {'side_dwconv'})
        if missing or unknown:
            raise ValueError(f'arch dict needs the keys {ARCH_KEYS} (and optionally '
                             f'side_dwconv); missing keys {missing}, unknown keys {unknown}.')
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
                if qk_dim != dim:  # its q, k and v all have the stage's width
                    raise ValueError(f'arch qk_dims[{i}]={qk_dim} must equal embed_dims[{i}]='
                                     f'{dim}: stage {i} has global attention (topks[{i}]=-2), '
                                     f'whose queries and keys have the stage\'s width.')
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

    def init_default_weights(self) -> None:
        """The official initialisation of the Linear layers and LayerNorms."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_init(module, std=.02, bias=0.)
            elif isinstance(module, nn.LayerNorm):
                constant_init(module, val=1., bias=0.)

    def forward_stages(self,
                       x: Tensor,
                       take: Sequence[int] = (),
                       last: Optional[int] = None) -> Tuple[Tensor, List[Tensor]]:
        """Run the stem and the stages up to ``last``.

        Args:
            x (Tensor): Images ``(N, in_channels, H, W)``.
            take (Sequence[int]): Stages whose outputs to return as well.
            last (int, optional): Last stage to run. Defaults to the last one.

        Returns:
            tuple[Tensor, list[Tensor]]: The output of stage ``last`` and the outputs of
            the stages in ``take``, in stage order, all NCHW (channels-last memory).
        """
        check_input(x, self.in_channels)
        last = len(self.stages) - 1 if last is None else last
        taken = []
        # Channels-last memory makes the blocks' NCHW <-> NHWC permutes free views.
        x = self.stem(x.contiguous(memory_format=torch.channels_last))
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsamples[i - 1](x)
            x = stage(x)
            if i in take:
                taken.append(x)
            if i == last:
                break
        return x, taken
