from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from ...ops.export_path import (is_compiling, is_exporting, is_torch_exporting,
                                is_tracing_for_onnx, routed_attention_export_map)
from ...ops.routed_attention import (check_attn_impl, routed_attention, routed_attention_map,
                                     runs_map_kernel)


def _pad(x: Tensor, pad_b: int, pad_r: int) -> Tensor:
    """``x`` ``(N, H, W, C)`` with ``pad_b`` zero rows and ``pad_r`` zero columns added.
    For the legacy ONNX exporter the zeros are concatenated: its ``Pad`` of computed
    sizes has no inferable shape, which later conversions (UperNet's pooling) need."""
    if not is_tracing_for_onnx():
        return F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    n, h, w, c = x.shape
    x = torch.cat([x, x.new_zeros(n, pad_b, w, c)], dim=1)
    return torch.cat([x, x.new_zeros(n, h + pad_b, pad_r, c)], dim=2)


def _crop(x: Tensor, h: int, w: int) -> Tensor:
    """The top-left ``h x w`` of a channels-last map ``(N, H', W', C)``. Under
    ``torch.export``/``torch.compile`` by ``index_select``: a slice would guard on
    whether the result is contiguous, which holds only at sizes padded alike."""
    if not (is_torch_exporting() or is_compiling()):
        return x[:, :h, :w]
    rows = torch.arange(h, device=x.device)
    cols = torch.arange(w, device=x.device)
    return x.index_select(1, rows).index_select(2, cols)


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
            ``'chunked'``, ``'cpp'``, ``'sdpa'``, ``'triton'`` or ``'gather'`` (the original
            algorithm); see :mod:`biformer_mm.ops.routed_attention`. Exports record
            :mod:`biformer_mm.ops.export_path`'s form. In CPU inference (eager or
            compiled), ``'cpp'`` (and ``'auto'`` choosing it) reads the qkv map directly
            (:func:`~biformer_mm.ops.routed_attention.runs_map_kernel`). Defaults to
            ``'auto'``.
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
        # Official quirk, kept on purpose: the scale is over all heads' query/key
        # channels (qk_dims), not per head (qk_dims // num_heads), in the routing and in
        # the token attention. The pretrained weights were trained with it; "fixing" it
        # changes every official model's outputs.
        self.scale = qk_dims**-0.5
        self.qkv = nn.Linear(embed_dims, 2 * qk_dims + embed_dims, bias=qkv_bias)
        self.lepe = nn.Conv2d(embed_dims, embed_dims, side_dwconv, padding=side_dwconv // 2,
                              groups=embed_dims) if side_dwconv > 0 else None
        self.proj = nn.Linear(embed_dims, embed_dims)

    def to_heads_and_regions(self, x: Tensor, groups: int = 1) -> Tensor:
        """``(N, H, W, G * M * D)`` -> ``(G, N, M, n_win**2, H/n_win * W/n_win, D)``, one
        copy for all ``G`` channel groups."""
        n, h, w, c = x.shape
        s, m = self.n_win, self.num_heads
        x = x.reshape(n, s, h // s, s, w // s, groups, m, c // (groups * m))
        x = x.permute(5, 0, 6, 1, 3, 2, 4, 7)
        return x.reshape(groups, n, m, s * s, (h // s) * (w // s), c // (groups * m))

    def from_heads_and_regions(self, x: Tensor, h: int, w: int) -> Tensor:
        """Inverse of :meth:`to_heads_and_regions`."""
        n, m, _, _, d = x.shape
        s = self.n_win
        x = x.view(n, m, s, s, h // s, w // s, d).permute(0, 2, 4, 3, 5, 1, 6)
        return x.reshape(n, h, w, m * d)

    def route(self, qkv: Tensor) -> Tensor:
        """Indices ``(N, P, topk)`` of the key regions routed to each query region
        (regions row-major), from the padded map ``(N, H, W, C)`` whose first ``2 *
        qk_dims`` channels are the queries and keys (the qkv map, or a view of those
        channels): the scores of the detached region means of the queries and keys over
        all heads, which are read from the map as it is."""
        n, h, w, c = qkv.shape
        s, c_qk = self.n_win, self.qk_dims
        regions = qkv.detach().reshape(n, s, h // s, s, w // s, c)
        # Accumulated in float32 or wider, so low precision rounds each region mean once.
        means = regions.mean(4, dtype=torch.promote_types(qkv.dtype, torch.float32)).mean(2)
        q_win, k_win = means.reshape(n, s * s, c)[..., :2 * c_qk].split(c_qk, dim=-1)
        logits = (q_win * self.scale) @ k_win.transpose(-2, -1)
        return logits.topk(self.topk, dim=-1).indices

    def forward(self, x: Tensor) -> Tensor:
        """Channels-last map ``(N, H, W, C)`` to ``(N, H, W, C)``."""
        n, h, w, _ = x.shape
        s = self.n_win
        # As ceil(h / s) * s, so that torch.export knows the padded sizes divide by s.
        hp, wp = (h + s - 1) // s * s, (w + s - 1) // s * s
        exporting = is_exporting()
        if not self.auto_pad:
            if not exporting and (hp != h or wp != w):
                raise ValueError(
                    f'BiLevelRoutingAttention got a {h}x{w} map that does not divide by '
                    f'n_win={s}: set auto_pad=True, or give inputs whose stage maps are '
                    f'multiples of n_win.')
            hp, wp = h, w
        # Exported or compiled, h and w may be graph values: the pad is always recorded
        # (by zero where nothing is missing), so the graph computes it at its size; a
        # Python test would fix it at the example or recompile.
        padded = self.auto_pad and (exporting or is_compiling() or hp != h or wp != w)
        if padded:
            x = _pad(x, hp - h, wp - w)

        qkv = self.qkv(x)
        c_qk = self.qk_dims
        # Exported, the routing reads the whole map, as onnxruntime would copy the
        # query/key channels out of it first; eager reads them as a view.
        r_idx = self.route(qkv if exporting else qkv[..., :2 * c_qk])
        lepe = None
        if self.lepe is not None:
            v_map = qkv[..., 2 * c_qk:].permute(0, 3, 1, 2)
            v_map = v_map.contiguous(memory_format=torch.channels_last)
            lepe = self.lepe(v_map).permute(0, 2, 3, 1)
        if runs_map_kernel(self.attn_impl, qkv):
            # CPU inference: the C++ kernel reads the padded map as it is and computes
            # the h x w tokens kept.
            out = routed_attention_map(qkv, r_idx, s, self.num_heads, c_qk, self.scale, (h, w))
            return self.proj(out if lepe is None else out + _crop(lepe, h, w))
        if exporting:
            out = routed_attention_export_map(qkv, r_idx, s, self.num_heads, c_qk, self.scale,
                                              (hp, wp))
        else:
            out = self._routed_attention(qkv, r_idx, hp, wp)
        if lepe is not None:
            out = out + lepe
        if padded:
            out = _crop(out, h, w)
        return self.proj(out)

    def _routed_attention(self, qkv: Tensor, r_idx: Tensor, h: int, w: int) -> Tensor:
        """The routed attention of the padded ``h x w`` qkv map in the heads-first layout
        of ``attn_impl``'s kernels, laid out back as the map."""
        c_qk = self.qk_dims
        if c_qk == self.embed_dims:
            q, k, v = self.to_heads_and_regions(qkv, groups=3).unbind(0)
        else:
            q, k = self.to_heads_and_regions(qkv[..., :2 * c_qk], groups=2).unbind(0)
            v = self.to_heads_and_regions(qkv[..., 2 * c_qk:])[0]
        out = routed_attention(q, k, v, r_idx, self.scale, self.attn_impl)
        return self.from_heads_and_regions(out, h, w)
