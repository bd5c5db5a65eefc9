"""Run by test_flops.py in a subprocess with TRITON_INTERPRET=1: the FLOPs mmengine counts
for the Triton kernel's autograd Function, next to those of the original algorithm on the
same problem. Prints one JSON line."""
import json
import os

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'

import biformer_mm  # noqa: E402,F401  (registers the FLOP handles)
from biformer_mm.models.layers import BiLevelRoutingAttention  # noqa: E402
from biformer_mm.ops import routed_attention_gather  # noqa: E402
from biformer_mm.ops.bra_triton import routed_attention_triton_heads_first  # noqa: E402


def flops(module: nn.Module, *inputs) -> int:
    analyzer = FlopAnalyzer(module, inputs)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        return analyzer.total()


class ChannelPacked(nn.Module):
    """Routed attention on heads-first views of ``(N, P, W, heads * D)`` maps, by the
    Triton kernels or by the original algorithm."""

    def __init__(self, impl: str, heads: int) -> None:
        super().__init__()
        self.impl, self.heads = impl, heads

    def forward(self, q, k, v, r_idx):
        q, k, v = (t.unflatten(-1, (self.heads, -1)).permute(0, 3, 1, 2, 4) for t in (q, k, v))
        if self.impl == 'triton':
            return routed_attention_triton_heads_first(q, k, v, r_idx, 0.25)
        return routed_attention_gather(q, k, v, r_idx, 0.25)


counts = {'bra': {}}
# An odd 13x10 map: auto_pad pads it to 15x12 for 3x3 regions of 5x4 tokens.
x = torch.randn(1, 13, 10, 64)
for impl in ('gather', 'triton'):
    counts['bra'][impl] = flops(BiLevelRoutingAttention(64, num_heads=2, n_win=3, topk=4,
                                                        attn_impl=impl), x)
n, p, w, heads, topk = 2, 4, 6, 2, 3
q, k = torch.randn(2, n, p, w, heads * 16).unbind(0)
v = torch.randn(n, p, w, heads * 32)
r_idx = torch.stack([torch.randperm(p)[:topk] for _ in range(n * p)]).view(n, p, topk)
counts['channel_packed'] = {impl: flops(ChannelPacked(impl, heads), q, k, v, r_idx)
                            for impl in ('gather', 'triton')}
print(json.dumps(counts))
