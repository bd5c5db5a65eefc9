from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from timm.layers import DropPath, Mlp
from torch import Tensor

from .bi_level_routing_attention import BiLevelRoutingAttention
from .global_attention import GlobalAttentionLePE

GLOBAL_ATTENTION = -2
"""``topk`` value that selects global attention with LePE (BiFormer's last stage)."""


class BiFormerBlock(BaseModule):
    """One BiFormer block on NCHW maps.

    ``x + dwconv3x3(x)``, then pre-norm attention and MLP residual branches with
    stochastic depth. The attention is :class:`BiLevelRoutingAttention` for a positive
    ``topk`` and :class:`GlobalAttentionLePE` for ``topk == -2``.

    Args:
        embed_dims (int): Channels.
        num_heads (int): Attention heads of the routing attention.
        n_win (int): Regions per side of the routing attention.
        topk (int): Routed regions per region, or -2 for global attention.
        qk_dims (int, optional): Query/key channels of the routing attention.
            Defaults to ``embed_dims``.
        mlp_ratio (float): MLP hidden channels over ``embed_dims``. Defaults to 3.
        drop_path (float): Stochastic depth rate. Defaults to 0.
        side_dwconv (int): LePE kernel size. Defaults to 5.
        auto_pad (bool): Let the routing attention pad maps to a multiple of
            ``n_win``. Defaults to True.
        attn_impl (str): Routed attention implementation. Defaults to ``'auto'``.
        act_layer (Callable[[], nn.Module]): Builds the activation of the MLP.
            Defaults to ``nn.GELU``.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 n_win: int,
                 topk: int,
                 qk_dims: Optional[int] = None,
                 mlp_ratio: float = 3.,
                 drop_path: float = 0.,
                 side_dwconv: int = 5,
                 auto_pad: bool = True,
                 attn_impl: str = 'auto',
                 act_layer: Callable[[], nn.Module] = nn.GELU,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.pos_embed = nn.Conv2d(embed_dims, embed_dims, 3, padding=1, groups=embed_dims)
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        if topk == GLOBAL_ATTENTION:
            # Official quirk, kept on purpose: the global stage has 8 heads (its default)
            # whatever num_heads/head_dim say, as the pretrained weights expect.
            self.attn = GlobalAttentionLePE(embed_dims, side_dwconv=side_dwconv)
        else:
            self.attn = BiLevelRoutingAttention(
                embed_dims, num_heads, n_win, topk, qk_dims=qk_dims, side_dwconv=side_dwconv,
                auto_pad=auto_pad, attn_impl=attn_impl)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.mlp = Mlp(embed_dims, int(mlp_ratio * embed_dims), act_layer=act_layer)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` to ``(N, C, H, W)``."""
        x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


class BiFormerStage(nn.Sequential):
    """The blocks of one BiFormer stage: a module, so that hooks on ``stages.{i}`` (timm's
    ``FeatureHookNet``) see its output. ``with_cp``: activation checkpointing per block
    while gradients are enabled."""

    def __init__(self, *blocks: nn.Module) -> None:
        super().__init__(*blocks)
        self.with_cp = False

    def forward(self, x: Tensor) -> Tensor:
        for block in self:
            if self.with_cp and torch.is_grad_enabled():
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x
