from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from ...ops.export_path import is_exporting


class GlobalAttentionLePE(BaseModule):
    """Global multi-head self-attention with a locally-enhanced position encoding
    (BiFormer's last stage): a depthwise convolution of the input is added before the
    output projection.

    Args:
        embed_dims (int): Input and output channels.
        num_heads (int): Number of heads. Defaults to 8, as in the official model.
        side_dwconv (int): Kernel size of the LePE convolution; 0 disables it.
            Defaults to 5.
        qkv_bias (bool): Whether the qkv projection has a bias. Defaults to False.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int = 8,
                 side_dwconv: int = 5,
                 qkv_bias: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims={embed_dims} of the global-attention stage must be '
                             f'divisible by its num_heads={num_heads}.')
        self.num_heads = num_heads
        self.scale = (embed_dims // num_heads)**-0.5
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.lepe = nn.Conv2d(embed_dims, embed_dims, side_dwconv, padding=side_dwconv // 2,
                              groups=embed_dims) if side_dwconv > 0 else None
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x: Tensor) -> Tensor:
        """Channels-last map ``(N, H, W, C)`` to ``(N, H, W, C)``."""
        n, h, w, c = x.shape
        m = self.num_heads
        # (N, 3 * M, H * W, D) by moving one axis: onnxruntime's fast Transpose.
        qkv = self.qkv(x).view(n, h * w, 3 * m, c // m).transpose(1, 2)
        q, k, v = qkv.chunk(3, dim=1)
        if is_exporting():
            # Written out: SDPA has no ONNX form before opset 14, and mmdeploy 1.3.1's
            # rewrite of it divides by an explicit scale.
            out = torch.matmul(q * self.scale, k.transpose(-2, -1)).softmax(-1) @ v
        else:
            # SDPA's default scale, 1 / sqrt(head dim), is self.scale.
            out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(n, h, w, c)
        if self.lepe is not None:
            out = out + self.lepe(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.proj(out)
