"""Specification of ``torch.compile`` on BiFormer: one graph, the eager result, few
recompiles, and mmengine's ``compile`` config option.

The routed attention is the operator ``torch.ops.biformer_mm.routed_attention``
(torch >= 2.4), so the compiled graph holds one node per block instead of the unrolled
chunk loop. These tests need that operator: torch 2.1 (the classic stack) compiles the
loop unrolled, which takes minutes even for a tiny backbone, so they are not marked
classic.
"""
import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend
from torch._inductor.utils import run_and_get_code

from _export_cases import routing_margin
from biformer_mm import BiFormer, BiLevelRoutingAttention
from biformer_mm.ops import OPERATOR
from biformer_mm.ops.export_path import is_torch_exporting
from conftest import DET_TOY

pytestmark = pytest.mark.skipif(
    not OPERATOR, reason='the routed attention operator needs torch.library.custom_op '
    '(torch >= 2.4)')

# Four stages of one block: three routed (top-k 1, 4, 8 of 16 regions), one global.
TINY = dict(depths=[1, 1, 1, 1], embed_dims=[16, 32, 64, 64], qk_dims=[16, 32, 64, 64],
            mlp_ratios=[2, 2, 2, 2], topks=[1, 4, 8, -2], head_dim=16)
ROUTING_MARGIN = 1e-4
"""Smallest routing margin (:func:`_export_cases.routing_margin`, relative to the largest
routing score) the comparisons accept. The scores of eager and compiled code differ by
float32 rounding of the projections, about 1e-7 of the largest score: with this margin
both route alike."""


def tiny_backbone(seed: int = 0) -> BiFormer:
    """:data:`TINY` in training mode with frozen BatchNorm statistics (``norm_eval``), as
    the detection configs train. (With batch statistics the stem convolution's bias has
    an exactly zero gradient, which eager and compiled code both return as rounding
    noise, not a value to compare.)"""
    torch.manual_seed(seed)
    return BiFormer(arch=TINY, n_win=4, norm_eval=True).train()


def outputs_and_gradients(model, x):
    x = x.clone().requires_grad_()
    outs = model(x)
    weights = [torch.linspace(-1, 1, o.numel(), device=o.device).view_as(o) for o in outs]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return list(outs) + [x.grad] + grads


def test_backbone_compiles_to_one_graph_equal_to_eager_forward_and_backward():
    """Inductor, ``fullgraph=True`` (a graph break raises); outputs, input gradient and
    every parameter gradient within 1e-4 of eager."""
    torch._dynamo.reset()
    model = tiny_backbone()
    # 128x128: every stage map divides by n_win, so no region is all padding (whose
    # identical keys would tie exactly).
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    assert routing_margin(model, x) > ROUTING_MARGIN, 'pick another seed: near tie'
    eager = outputs_and_gradients(model, x)
    compiled = outputs_and_gradients(torch.compile(model, fullgraph=True), x)
    for ours, expected in zip(compiled, eager):
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_gpu_backbone_compiles_to_one_graph_of_operators_equal_to_eager(monkeypatch):
    """On CUDA, ``attn_impl='auto'`` under ``torch.compile`` runs the operator (its CUDA
    kernel: Triton where its guards and self-check pass, SDPA otherwise), one node per
    routed block in one inductor graph; outputs and gradients within 1e-4 of eager, which
    runs the autograd Functions instead.

    In float32: cuDNN's convolutions default to TF32 (a 10-bit mantissa), whose rounding
    turns the compiled graph's last-bit differences into differences of about 1e-3 (seen
    on an H200), whatever the attention does."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    torch._dynamo.reset()
    model = tiny_backbone().cuda()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0)).cuda()
    assert routing_margin(model, x) > ROUTING_MARGIN, 'pick another seed: near tie'
    eager = outputs_and_gradients(model, x)
    backend = RecordingBackend('inductor')
    compiled = outputs_and_gradients(torch.compile(model, backend=backend, fullgraph=True), x)
    for ours, expected in zip(compiled, eager):
        torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    routed_blocks = sum(1 for m in model.modules() if isinstance(m, BiLevelRoutingAttention))
    assert len(backend.graphs) == 1
    assert operator_nodes(backend.graphs[0], 'routed_attention') == routed_blocks


# COCO-like inputs (mmdet pads to multiples of 32) at 1/8 scale: landscape, portrait,
# square and wide, which pad differently at every stage.
# Five aspect ratios as COCO's, scaled down. Every size has more than 10240 pixels: below
# that, torch's own fake convolution guards on the stem's output size (a branch inside
# torch, > 20480 elements) and recompiles, which real COCO inputs (800 px and more) never
# reach.
COCO_LIKE_SIZES = [(100, 152), (100, 136), (152, 100), (112, 112), (88, 168)]


def operator_nodes(targets, name: str) -> int:
    """How many of a graph's call targets are the operator ``biformer_mm::<name>``."""
    return sum(t.split('.')[:2] == ['biformer_mm', name] for t in targets)


class RecordingBackend:
    """A ``torch.compile`` backend that counts compilations and records the call
    targets of each captured graph, then hands it to ``inner`` (``aot_eager`` unless
    told)."""

    def __init__(self, inner: str = 'aot_eager') -> None:
        self.graphs = []
        self.inner = inner

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append([str(node.target) for node in gm.graph.nodes])
        return lookup_backend(self.inner)(gm, example_inputs)


def test_dynamic_shapes_compile_at_most_twice_over_five_coco_like_sizes():
    """With ``dynamic=True`` the backbone's forward and backward over five image sizes
    compile at most twice, and every routed block is one operator node in the graph
    (not an unrolled chunk loop)."""
    torch._dynamo.reset()
    model = tiny_backbone()
    backend = RecordingBackend()
    compiled = torch.compile(model, backend=backend, dynamic=True, fullgraph=True)
    for size in COCO_LIKE_SIZES:
        outs = compiled(torch.randn(1, 3, *size))
        sum(o.sum() for o in outs).backward()
    assert 1 <= len(backend.graphs) <= 2, f'{len(backend.graphs)} compilations'
    routed_blocks = sum(1 for m in model.modules() if isinstance(m, BiLevelRoutingAttention))
    for targets in backend.graphs:
        assert operator_nodes(targets, 'routed_attention') == routed_blocks


class ExportingProbe(torch.nn.Module):
    """Adds 1 where BiFormer would record its export path."""

    def forward(self, x):
        return x + 1 if is_torch_exporting() else x


@pytest.mark.parametrize('capture', ['eager', 'compile', 'export', 'export_non_strict'])
def test_only_torch_export_takes_the_export_path(capture):
    """BiFormer records its export path under ``torch.export`` (strict or not) and runs
    its kernels under ``torch.compile``. Before torch 2.14, dynamo answered
    ``torch.compiler.is_exporting()`` with True under ``torch.compile`` too
    (pytorch#176347): compiled BiFormer ran the export path (seen with torch 2.11)."""
    probe, x = ExportingProbe(), torch.zeros(1)
    if capture == 'eager':
        out = probe(x)
    elif capture == 'compile':
        torch._dynamo.reset()
        out = torch.compile(probe, fullgraph=True)(x)
    else:
        out = torch.export.export(probe, (x, ), strict=capture == 'export').module()(x)
    assert out.item() == capture.startswith('export')


@pytest.mark.parametrize('mode', ['static', 'frozen', 'dynamic'])
def test_cpu_inference_compiles_the_map_kernel_equal_to_eager(mode):
    """In CPU inference (no gradient) ``attn_impl='auto'`` compiles each routed block to
    one node of the C++ kernel's map entry, ``biformer_mm.routed_attention_map``, as
    eager inference runs it; outputs within 1e-4 of eager. Static: inductor, one graph.
    Frozen: the same with inductor's freezing (the weights become constants that it
    folds and prepacks; docs/deploy.md's CPU inference recipe). Dynamic: the five
    COCO-like sizes compile at most twice."""
    torch._dynamo.reset()
    model = tiny_backbone().eval()
    dynamic = mode == 'dynamic'
    # Input seeds whose routing has no near tie at each size.
    sizes, seeds = (COCO_LIKE_SIZES, (1, 2, 1, 1, 1)) if dynamic else ([(128, 128)], (0, ))
    inputs = [torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
              for size, seed in zip(sizes, seeds)]
    for x in inputs:
        assert routing_margin(model, x) > ROUTING_MARGIN, 'pick another seed: near tie'
    backend = RecordingBackend('aot_eager' if dynamic else 'inductor')
    compiled = torch.compile(model, backend=backend, dynamic=dynamic, fullgraph=True)
    code = []
    # Around the first call, where dynamo traces: docs/deploy.md's recipe.
    with torch.no_grad(), torch._inductor.config.patch(freezing=mode == 'frozen'):
        for x in inputs:
            # (run_and_get_code patches inductor's config: a recompilation per call)
            outs, generated = (compiled(x), []) if dynamic else run_and_get_code(compiled, x)
            code += generated
            for ours, expected in zip(outs, model(x)):
                torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)
    if not dynamic:  # frozen weights are constants of inductor's code, not its inputs
        assert any('_frozen_param' in c for c in code) == (mode == 'frozen')
    assert 1 <= len(backend.graphs) <= (2 if dynamic else 1), f'{len(backend.graphs)} graphs'
    routed_blocks = sum(1 for m in model.modules() if isinstance(m, BiLevelRoutingAttention))
    for targets in backend.graphs:
        assert operator_nodes(targets, 'routed_attention_map') == routed_blocks
        assert operator_nodes(targets, 'routed_attention') == 0


def test_mmengine_compile_option_trains_the_toy_mask_rcnn(toy_coco_workdir, tmp_path,
                                                          monkeypatch):
    """``compile=dict(backend=...)`` in the config: mmengine compiles the model's train
    step, optimizer step included, and trains the toy Mask R-CNN BiFormer-T one
    iteration with a finite loss, every routed block running as the operator in a
    captured graph. The backend is ``aot_eager`` (the same capture and autograd tracing
    as inductor; the inductor test above covers code generation on the backbone).

    The recipe's ``paramwise_cfg`` stays; ``CompilableOptimWrapperConstructor`` gives the
    optimizer plain-dict groups (mmengine's are ``ConfigDict``s, which torch 2.14's dynamo
    cannot read in ``optimizer.param_groups``)."""
    from mmengine.runner import Runner

    from biformer_mm.engine import load_config
    monkeypatch.chdir(toy_coco_workdir)
    torch._dynamo.reset()
    backend = RecordingBackend()
    # By name: the Runner dumps its config as text.
    name = f'recording_{id(backend)}'
    torch._dynamo.register_backend(backend, name=name)

    # One iteration of all 4 training images at 128x128, no validation.
    cfg = load_config(DET_TOY, {
        'train_cfg.max_epochs': 1, 'train_dataloader.batch_size': 4,
        'train_dataloader.dataset.pipeline.2.scale': (128, 128),
        'default_hooks.logger.interval': 1, 'default_hooks.checkpoint.interval': 2,
        'optim_wrapper.constructor': 'CompilableOptimWrapperConstructor',
    })
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    # BiFormer-T's stages with one block each: tracing time grows with the blocks, what
    # this test checks does not.
    cfg.model.backbone.arch = dict(BiFormer.arch_zoo['tiny'], depths=[1, 1, 1, 1])
    cfg.compile = dict(backend=name)
    cfg.work_dir = str(tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == 1
    groups = runner.optim_wrapper.optimizer.param_groups
    assert len(groups) > 1 and all(type(g) is dict for g in groups), \
        "the recipe's paramwise_cfg groups, as plain dicts"
    assert hasattr(runner.model.train_step, '_torchdynamo_orig_callable'), \
        'mmengine did not compile the train step'
    assert torch.isfinite(torch.tensor(runner.message_hub.get_scalar('train/loss').data[0]))
    routed_blocks = sum(1 for m in runner.model.modules()
                        if isinstance(m, BiLevelRoutingAttention))
    assert sum(operator_nodes(g, 'routed_attention') for g in backend.graphs) == routed_blocks
