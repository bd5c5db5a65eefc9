from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from ...ops.routed_attention import check_attn_impl, routed_attention


class BiLevelRoutingAttention(BaseModule):
    """Bi-Level Routing Attention (BRA) from BiFormer, on channels-last maps.

    The map is split into ``n_win x n_win`` regions. Region-level queries and keys are
    the means of the token queries and keys (detached: routing receives no gradient);
    each region is routed to the ``topk`` regions with the largest ``q . k``, and its
    tokens attend to the tokens of those regions. A depthwise convolution of the values
    (LePE) is added before the output projection.

    Args:
        embed_dims (int): Channels of the input, the values and the output.
        num_heads (int): Number of attention heads.
        n_win (int): Regions per side.
        topk (int): Number of key regions each query region attends to.
        qk_dims (int, optional): Channels of queries and keys. Defaults to
            ``embed_dims``.
        side_dwconv (int): Kernel size of the LePE depthwise convolution on the
            values; 0 disables it. Defaults to 5.
        qkv_bias (bool): Whether the qkv projection has a bias. Defaults to True.
        auto_pad (bool): Pad the map to a multiple of ``n_win`` and crop the output
            back. Without it the map must divide by ``n_win``. Defaults to True.
        attn_impl (str): Routed attention implementation: ``'auto'``, ``'torch'``,
            ``'chunked'``, ``'sdpa'``, ``'triton'`` or ``'gather'`` (the original
            algorithm, for reference); see :mod:`biformer_mm.ops.routed_attention`.
            Defaults to ``'auto'``.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 n_win: int,
                 topk: int,
                 qk_dims: Optional[int] = None,
                 side_dwconv: int = 5,
                 qkv_bias: bool = True,
                 auto_pad: bool = True,
                 attn_impl: str = 'auto',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        qk_dims = qk_dims or embed_dims
        if qk_dims % num_heads or embed_dims % num_heads:
            raise ValueError(f'qk_dims={qk_dims} and embed_dims={embed_dims} must both be '
                             f'divisible by num_heads={num_heads}.')
        if not 0 < topk <= n_win**2:
            raise ValueError(f'topk={topk} must be in [1, n_win**2={n_win**2}] (-2 selects '
                             f'global attention in BiFormer arch topks): pick a smaller '
                             f'top-k or a larger n_win.')
        check_attn_impl(attn_impl)
        self.embed_dims = embed_dims
        self.qk_dims = qk_dims
        self.num_heads = num_heads
        self.n_win = n_win
        self.topk = topk
        self.auto_pad = auto_pad
        self.attn_impl = attn_impl
        self.scale = qk_dims**-0.5
        self.qkv = nn.Linear(embed_dims, 2 * qk_dims + embed_dims, bias=qkv_bias)
        self.lepe = nn.Conv2d(embed_dims, embed_dims, side_dwconv, padding=side_dwconv // 2,
                              groups=embed_dims) if side_dwconv > 0 else None
        self.proj = nn.Linear(embed_dims, embed_dims)

    def _to_heads_and_regions(self, x: Tensor, groups: int = 1) -> Tensor:
        """``(N, H, W, G * M * D)`` -> ``(G, N, M, n_win**2, H/n_win * W/n_win, D)``, one
        copy for all ``G`` channel groups."""
        n, h, w, c = x.shape
        s, m = self.n_win, self.num_heads
        x = x.reshape(n, s, h // s, s, w // s, groups, m, c // (groups * m))
        x = x.permute(5, 0, 6, 1, 3, 2, 4, 7)
        return x.reshape(groups, n, m, s * s, (h // s) * (w // s), c // (groups * m))

    def _from_heads_and_regions(self, x: Tensor, h: int, w: int) -> Tensor:
        """Inverse of :meth:`_to_heads_and_regions`."""
        n, m, _, _, d = x.shape
        s = self.n_win
        x = x.view(n, m, s, s, h // s, w // s, d).permute(0, 2, 4, 3, 5, 1, 6)
        return x.reshape(n, h, w, m * d)

    def route(self, q: Tensor, k: Tensor) -> Tensor:
        """Indices ``(N, P, topk)`` of the key regions routed to each query region.

        Region queries/keys are token means over the full ``qk_dims`` channels; they
        are detached, and the top-k scores themselves are not used.

        Args:
            q (Tensor): Queries ``(N, M, P, W, Dqk)``.
            k (Tensor): Keys ``(N, M, P, W, Dqk)``.
        """
        n, m, p, _, d = q.shape
        q_win = q.detach().mean(dim=3).transpose(1, 2).reshape(n, p, m * d)
        k_win = k.detach().mean(dim=3).transpose(1, 2).reshape(n, p, m * d)
        logits = (q_win * self.scale) @ k_win.transpose(-2, -1)
        return logits.topk(self.topk, dim=-1).indices

    def forward(self, x: Tensor) -> Tensor:
        """Forward.

        Args:
            x (Tensor): Channels-last map ``(N, H, W, C)``.

        Returns:
            Tensor: ``(N, H, W, C)``.
        """
        n, h, w, _ = x.shape
        pad_b, pad_r = -h % self.n_win, -w % self.n_win
        if pad_b or pad_r:
            if not self.auto_pad:
                raise ValueError(
                    f'BiLevelRoutingAttention got a {h}x{w} map that does not divide by '
                    f'n_win={self.n_win}: set auto_pad=True, or give inputs whose stage maps '
                    f'are multiples of n_win.')
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r

        qkv = self.qkv(x)
        c_qk = self.qk_dims
        if c_qk == self.embed_dims:
            q, k, v = self._to_heads_and_regions(qkv, groups=3).unbind(0)
        else:
            q, k = self._to_heads_and_regions(qkv[..., :2 * c_qk], groups=2).unbind(0)
            v = self._to_heads_and_regions(qkv[..., 2 * c_qk:])[0]
        out = routed_attention(q, k, v, self.route(q, k), self.scale, self.attn_impl)
        out = self._from_heads_and_regions(out, hp, wp)
        if self.lepe is not None:
            v_map = qkv[..., 2 * c_qk:].permute(0, 3, 1, 2)
            v_map = v_map.contiguous(memory_format=torch.channels_last)
            out = out + self.lepe(v_map).permute(0, 2, 3, 1)
        if pad_b or pad_r:
            out = out[:, :h, :w]
        out = self.proj(out)
        return out
