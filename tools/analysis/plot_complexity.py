"""Draw attention FLOPs against input size: Bi-Level Routing Attention (fixed and scaled
region count), global attention and Swin's 7x7 window attention, counted by
``biformer_mm.analysis.count_complexity`` (the counter of get_flops.py).

    python tools/analysis/plot_complexity.py [--stage 3] [--fixed-n-win 7] [--out PNG]

One attention layer of a BiFormer-S stage on square images of 224 to 1344 pixels, without
the linear projections and LePE every method shares. The scaled region count ``S`` is the
integer minimising routing (``S^4 C``) plus token attention (``2 k S^2 w^2 C`` for ``w``
tokens per region as ``auto_pad`` pads the map); the dashed line is the paper's optimum
``3 C k^(2/3) (HW)^(4/3)``; the legend gives each curve's fitted exponent of HW. The
numbers are printed as a table too. Reference: docs/analysis.md.
"""
import argparse
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence

import matplotlib
import numpy as np
import torch
import torch.nn as nn

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from biformer_mm import BiFormer  # noqa: E402
from biformer_mm.analysis import count_complexity  # noqa: E402
from biformer_mm.models.layers import (BiLevelRoutingAttention,  # noqa: E402
                                      GlobalAttentionLePE)

SIZES = list(range(224, 1345, 112))
"""Multiples of 112: stage-3 maps (stride 16) are multiples of 7, so neither the 7x7
regions of the fixed-S BRA nor Swin's 7x7 windows need padding."""
SHARED_OPS = ('linear', 'conv')
"""Operators of the projections and LePE, left out of the attention FLOPs."""


class SwinWindowAttention(nn.Module):
    """mmdet's Swin (shifted) window attention on a channels-last ``(N, H, W, C)`` map."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int = 7) -> None:
        super().__init__()
        from mmdet.models.backbones.swin import ShiftWindowMSA
        self.msa = ShiftWindowMSA(embed_dims, num_heads, window_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        return self.msa(x.reshape(n, h * w, c), (int(h), int(w)))


def paper_n_win(side: int, topk: int) -> int:
    """Regions per side minimising routing plus token-attention FLOPs on a ``side x side``
    map padded to a multiple of them."""

    def cost(s: int) -> int:
        tokens_per_region = math.ceil(side / s)**2
        return s**4 + 2 * topk * s**2 * tokens_per_region**2

    return min(range(math.ceil(math.sqrt(topk)), side + 1), key=cost)


def attention_flops(module: nn.Module, side: int, channels: int) -> int:
    """Counted FLOPs of ``module`` on a ``side x side`` map, projections left out."""
    counted = count_complexity(module.eval(), (torch.randn(1, side, side, channels), ))
    return sum(n for op, n in counted['by_operator'].items() if op not in SHARED_OPS)


def measure(stage: int, fixed_n_win: int, sizes: Sequence[int] = SIZES) -> Dict[str, List]:
    """Attention FLOPs of each method at each input size, and the paper's ``S``."""
    arch = BiFormer.arch_zoo['small']
    channels, topk = arch['embed_dims'][stage - 1], arch['topks'][stage - 1]
    heads = arch['qk_dims'][stage - 1] // arch['head_dim']
    stride = 2**(stage + 1)
    curves = {f'BRA, S = {fixed_n_win} fixed': [], 'BRA, S as the paper suggests': [],
              'global attention': [], 'Swin 7x7 window attention': []}
    paper_s = []
    for size in sizes:
        side = math.ceil(size / stride)
        s = paper_n_win(side, topk)
        paper_s.append(s)
        modules = [BiLevelRoutingAttention(channels, heads, fixed_n_win, topk),
                   BiLevelRoutingAttention(channels, heads, s, topk),
                   GlobalAttentionLePE(channels, num_heads=heads),
                   SwinWindowAttention(channels, heads)]
        for name, module in zip(curves, modules):
            curves[name].append(attention_flops(module, side, channels))
    return dict(curves=curves, paper_s=paper_s, sizes=list(sizes), channels=channels,
                topk=topk, heads=heads, stride=stride)


def fitted_exponent(sizes: Sequence[int], flops: Sequence[int]) -> float:
    """Slope of log(FLOPs) against log(HW)."""
    hw = np.log(np.asarray(sizes, dtype=float)**2)
    return float(np.polyfit(hw, np.log(np.asarray(flops, dtype=float)), 1)[0])


def plot(result: dict, stage: int, out: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.8), dpi=120)
    sizes = result['sizes']
    for (name, flops), marker in zip(result['curves'].items(), 'osD^'):
        slope = fitted_exponent(sizes, flops)
        ax.plot(sizes, np.asarray(flops) / 1e9, marker=marker, markersize=4,
                label=f'{name}  (~(HW)^{slope:.2f})')
    tokens = (np.ceil(np.asarray(sizes) / result['stride']))**2
    bound = 3 * result['channels'] * result['topk']**(2 / 3) * tokens**(4 / 3)
    ax.plot(sizes, bound / 1e9, 'k--', linewidth=1,
            label='3 C k^(2/3) (HW)^(4/3): the analysis\' optimum')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xticks([224, 384, 512, 768, 1024, 1344])
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel('input image side (pixels), square images')
    ax.set_ylabel('attention GFLOPs of one layer\n(projections and LePE excluded)')
    ax.set_title(f'BiFormer-S stage {stage}: stride {result["stride"]}, '
                 f'{result["channels"]} channels, {result["heads"]} heads, '
                 f'top-k {result["topk"]}', fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--stage', type=int, choices=(1, 2, 3), default=3,
                        help='BiFormer-S routing stage whose layer is measured')
    parser.add_argument('--fixed-n-win', type=int, default=7,
                        help='regions per side of the fixed-S BRA curve')
    parser.add_argument('--out', default='docs/images/complexity.png', help='PNG path')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    result = measure(args.stage, args.fixed_n_win)
    names = list(result['curves'])
    print('| input | map | paper S | ' + ' | '.join(names) + ' |')
    print('| ---: | ---: | ---: | ' + ' | '.join('---:' for _ in names) + ' |')
    for i, size in enumerate(result['sizes']):
        side = math.ceil(size / result['stride'])
        print(f'| {size} | {side}x{side} | {result["paper_s"][i]} | ' +
              ' | '.join(f'{result["curves"][n][i] / 1e9:.3f} G' for n in names) + ' |')
    plot(result, args.stage, args.out)
    print(f'wrote {osp.abspath(args.out)}')
    return result


if __name__ == '__main__':
    main()
