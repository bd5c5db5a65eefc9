"""Specification of FLOP counting (biformer_mm/analysis/flop_handles.py): once biformer_mm
is imported, mmengine's FlopAnalyzer (and so mmdet's and mmseg's get_flops.py) counts
BiFormer by fvcore's convention whatever implementation runs, and agrees with what fvcore
counts on the official code.

One BiFormer-S is traced per input shape, with the routed-attention implementations
mixed block by block: the blocks of a stage see the same shapes, so each implementation
must count exactly what the original algorithm ('gather', explicit matrix products)
counts in the block next to it. Tracing runs the model: the 800x1216 shape takes most of
this file's time.
"""
import json
import math
import os
import subprocess
import sys
from typing import NamedTuple, Tuple

import pytest
import torch
from mmengine.analysis import FlopAnalyzer

import biformer_mm.models.layers.bi_level_routing_attention as bra_layer
from _reference import REFERENCE_DIR
from biformer_mm import BiFormer
from biformer_mm.analysis import FLOP_HANDLES
from biformer_mm.ops import (ChunkedRoutedAttention, bra_triton, routed_attention_gather,
                             routed_attention_sdpa)
from conftest import REPO_ROOT



def triton_function_stand_in() -> type:
    """An autograd Function named like the Triton kernel's and called with the same
    arguments, computing with the original algorithm: its traced node is the one the
    kernel's call leaves. The kernel itself runs on the CPU only in Triton's interpreter,
    too slowly for these shapes; the last test traces it there on a small problem."""

    def forward(ctx, q, k, v, r_idx, layout, scale):
        return routed_attention_gather(q, k, v, r_idx, scale)

    return type(bra_triton.TritonRoutedAttention.__name__, (torch.autograd.Function, ),
                dict(forward=staticmethod(forward)))


TRITON_STAND_IN = triton_function_stand_in()
# Every strategy of every implementation: the original algorithm, 'torch' on the CPU,
# 'torch' on GPUs (called directly here) and the Triton Function's node.
STRATEGIES = {
    'gather': routed_attention_gather,
    'torch-cpu-chunked': ChunkedRoutedAttention.apply,
    'torch-gpu-sdpa': routed_attention_sdpa,
    'triton-node': lambda q, k, v, r_idx, scale: TRITON_STAND_IN.apply(q, k, v, r_idx, None,
                                                                         scale),
}


class Shape(NamedTuple):
    """An input of BiFormer-S and fvcore's count on the official code at it."""
    size: Tuple[int, int]
    n_win: int
    official_flops: float


def official_classifier_flops() -> float:
    recipes = json.loads((REFERENCE_DIR / 'official_recipes.json').read_text())
    return recipes['classification']['fvcore_flops_of_official_code']['biformer_small']


# Dense shapes: fvcore on the official detection/segmentation backbones (issue 10);
# 224x224: the official classifier, head included.
SHAPES = {
    'maskrcnn-800x1216': Shape((800, 1216), 16, 120.9e9),
    'upernet-512x512': Shape((512, 512), 8, 27.9e9),
    'imagenet-224x224': Shape((224, 224), 7, official_classifier_flops()),
}
DIMS, DEPTHS = BiFormer.arch_zoo['small']['embed_dims'], BiFormer.arch_zoo['small']['depths']


def stage_sizes(size: Tuple[int, int]):
    """(H, W) of each stage's map: the stem divides by 4, each downsampling by 2."""
    return [tuple(math.ceil(s / 2**(i + 2)) for s in size) for i in range(4)]


def global_attention_flops(size) -> int:
    """Stage 4's q @ k^T and attn @ v over all L tokens: 2 * L^2 * C per block."""
    h, w = stage_sizes(size)[3]
    return DEPTHS[3] * 2 * (h * w)**2 * DIMS[3]


def official_only_flops(shape: Shape) -> int:
    """Work in fvcore's count of the official code that our backbone does not do.

    - Dense inputs: the official BRA applies its output projection to the padded map and
      crops afterwards; ours crops first, so it projects ``Hp * Wp - H * W`` fewer
      tokens (C x C each) per block where a stage map is not a multiple of n_win.
    - 224x224: the official count is the classifier's: a final BatchNorm (2 FLOPs per
      element) and the 1000-way head instead of our four output LayerNorms (5 each).
    """
    if shape.size == (224, 224):
        maps = stage_sizes(shape.size)
        out_norms = sum(5 * h * w * c for (h, w), c in zip(maps, DIMS))
        h, w = maps[3]
        return 2 * h * w * DIMS[3] + DIMS[3] * 1000 - out_norms
    extra = 0
    for (h, w), c, depth in zip(stage_sizes(shape.size)[:3], DIMS, DEPTHS):
        padded = math.ceil(h / shape.n_win) * shape.n_win * math.ceil(w / shape.n_win) * shape.n_win
        extra += depth * (padded - h * w) * c * c
    return extra


def strategy_of_block(j: int) -> str:
    return list(STRATEGIES)[j % len(STRATEGIES)]


@pytest.fixture(scope='module', params=list(SHAPES), ids=list(SHAPES))
def counted(request):
    """BiFormer-S traced once at a shape, block j of every routed stage running
    ``strategy_of_block(j)``: ``(shape, analyzer)``."""
    shape = SHAPES[request.param]
    model = BiFormer('small', n_win=shape.n_win).eval()
    for stage in model.stages[:3]:
        for j, block in enumerate(stage):
            block.attn.attn_impl = strategy_of_block(j)

    def routed_attention(q, k, v, r_idx, scale, attn_impl):
        return STRATEGIES[attn_impl](q, k, v, r_idx, scale)

    analyzer = FlopAnalyzer(model, (torch.randn(1, 3, *shape.size), ))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(bra_layer, 'routed_attention', routed_attention)
        analyzer.total()  # traces and caches every statistic
    return shape, analyzer


def test_every_implementation_counts_what_the_original_algorithm_counts(counted):
    shape, analyzer = counted
    by_module = analyzer.by_module()
    for i in range(3):
        counts = {(j, strategy_of_block(j)): by_module[f'stages.{i}.{j}.attn']
                  for j in range(DEPTHS[i])}
        assert len(set(counts.values())) == 1, f'stage {i + 1}: {counts}'
    uncounted = set(analyzer.unsupported_ops())
    assert not uncounted & set(FLOP_HANDLES), uncounted


def test_global_attention_is_counted_as_explicit_products(counted):
    shape, analyzer = counted
    stage4 = analyzer.by_module_and_operator()['stages.3']
    assert stage4['scaled_dot_product_attention'] == global_attention_flops(shape.size)


def test_count_is_fvcores_count_of_the_official_code(counted):
    shape, analyzer = counted
    ours = analyzer.total()
    # The official numbers are given to 0.1 GFLOPs (27.9: +-0.18%).
    assert ours + official_only_flops(shape) == pytest.approx(shape.official_flops, rel=2e-3), \
        (ours, official_only_flops(shape))


def test_triton_kernel_can_be_traced_and_counts_what_the_original_algorithm_counts():
    # TRITON_INTERPRET=1 must be set before Triton is imported: a fresh interpreter.
    script = os.path.join(REPO_ROOT, 'tests', '_triton_flops_check.py')
    proc = subprocess.run([sys.executable, script], capture_output=True, text=True,
                          env=dict(os.environ, TRITON_INTERPRET='1',
                                   PYTHONPATH=os.pathsep.join(
                                       filter(None, [REPO_ROOT, os.environ.get('PYTHONPATH')]))),
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts['bra']['triton'] == counts['bra']['gather'] > 0, counts
    assert counts['channel_packed']['triton'] == counts['channel_packed']['gather'] > 0, counts
