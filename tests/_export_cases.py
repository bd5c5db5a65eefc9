"""The backbone and inputs that the export tests (torch.export, both ONNX exporters) check
exported graphs on, and the routing margin that makes the comparison meaningful.

The tiny backbone has a global-attention last stage and ``n_win=4``. At the export size
112x160 the routed stages are 28x40, 14x20 and 7x10 tokens; at 160x176 they are 40x44,
20x22 and 10x11, and at 176x208 44x52, 22x26 and 11x13: the second stage pads its
height at the export size and its width at the others, the third pads by other amounts,
so a graph whose padding was fixed at the export size fails or is wrong there.
"""
import contextlib
from typing import Iterator, List, Tuple

import pytest
import torch
import torch.nn as nn
from torch import Tensor

from biformer_mm import BiFormer, BiLevelRoutingAttention

ARCH = dict(depths=[1, 1, 1, 1], embed_dims=[32, 64, 128, 256], qk_dims=[32, 64, 128, 256],
            mlp_ratios=[2, 2, 2, 2], topks=[1, 4, 8, -2], head_dim=16)
N_WIN = 4
EXPORT_SIZE = (112, 160)
OTHER_SIZES = ((160, 176), (176, 208))
SEED = 0
MIN_MARGIN = 1e-3
"""Smallest gap between the k-th and (k+1)-th routing logit of a region, relative to
the largest logit of its image: float32 rounding moves logits by about 1e-6 of that, so
every correct implementation routes these inputs alike."""


def tiny_backbone(attn_impl: str = 'auto') -> BiFormer:
    """The tiny BiFormer of :data:`ARCH` with the weights of :data:`SEED`, in eval mode."""
    torch.manual_seed(SEED)
    model = BiFormer(arch=ARCH, n_win=N_WIN, attn_impl=attn_impl)
    model.init_weights()
    return model.eval()


def image(size: Tuple[int, int]) -> Tensor:
    """A random ``(1, 3, H, W)`` input of :data:`SEED`."""
    return torch.rand((1, 3) + tuple(size), generator=torch.Generator().manual_seed(SEED))


@contextlib.contextmanager
def recorded_routing_margins() -> Iterator[List[float]]:
    """While open, record the routing margin of every :class:`BiLevelRoutingAttention`
    call with ``topk`` < regions: the smallest gap, relative to the image's largest
    routing logit, between the logit of a region's k-th routed region and the best one it
    did not route to (logits as :meth:`BiLevelRoutingAttention.route` computes them).

    Regions that are padding only have equal keys and values, so an unrouted one equal
    to a routed one does not count; their own outputs are cropped, so their routing
    does not count either.
    """
    margins: List[float] = []
    route, forward = BiLevelRoutingAttention.route, BiLevelRoutingAttention.forward
    map_sizes = {}

    def recording_forward(attn: BiLevelRoutingAttention, x: Tensor) -> Tensor:
        map_sizes[attn] = x.shape[1:3]
        return forward(attn, x)

    def recording_route(attn: BiLevelRoutingAttention, qkv: Tensor) -> Tensor:
        n, h_pad, w_pad, _ = qkv.shape
        s, c, p = attn.n_win, attn.qk_dims, attn.n_win**2
        means = qkv[..., :2 * c].reshape(n, s, h_pad // s, s, w_pad // s, 2 * c).mean((2, 4))
        q_win, k_win = means.reshape(n, p, 2 * c).split(c, dim=-1)
        logits = (q_win * attn.scale) @ k_win.transpose(-2, -1)
        if attn.topk < p:
            # Each region's group: the first region with the same key.
            group = (k_win[:, :, None] == k_win[:, None]).all(-1).int().argmax(-1)
            values, order = logits.sort(dim=-1, descending=True)
            ranked = group.gather(1, order.flatten(1)).view(n, p, p)
            routed, rest = ranked[..., :attn.topk], ranked[..., attn.topk:]
            new = (rest[..., :, None] != routed[..., None, :]).all(-1)
            best_rest = values[..., attn.topk:].masked_fill(~new, float('-inf')).amax(-1)
            gap = (values[..., attn.topk - 1] - best_rest) / logits.abs().amax((1, 2))[:, None]
            (h, w), s = map_sizes[attn], attn.n_win
            rows, cols = -(-h // s), -(-w // s)  # tokens per region
            real = [(r // s) * rows < h and (r % s) * cols < w for r in range(p)]
            margins.append(float(gap[:, real].min()))
        return route(attn, qkv)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BiLevelRoutingAttention, 'route', recording_route)
        patch.setattr(BiLevelRoutingAttention, 'forward', recording_forward)
        yield margins


def routing_margin(model: nn.Module, x: Tensor) -> float:
    """The smallest routing margin (:func:`recorded_routing_margins`) of the BiFormer
    ``model`` (or a model with a BiFormer backbone) on ``x``."""
    with recorded_routing_margins() as margins, torch.no_grad():
        model(x)
    assert margins, 'the model has no routed stage with topk < regions'
    return min(margins)


def check_no_near_ties(model: BiFormer, sizes) -> None:
    """Fail (the test's precondition, not its subject) if ``model`` routes an input of
    one of ``sizes`` with a near tie: then choose another :data:`SEED`."""
    for size in sizes:
        margin = routing_margin(model, image(size))
        assert margin >= MIN_MARGIN, (
            f'routing near tie at {size}: relative margin {margin:.2e} < {MIN_MARGIN}; '
            f'pick another SEED in tests/_export_cases.py')


def max_errors(expected, actual) -> List[float]:
    """Largest absolute difference of each output pair (tensors or numpy arrays)."""
    return [float((torch.as_tensor(a) - e).abs().max()) for e, a in zip(expected, actual)]
