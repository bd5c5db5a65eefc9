"""Tests of the fused Triton routed attention in ``biformer_mm/ops/bra_triton.py``.

Without a GPU the kernels run in Triton's CPU interpreter. ``TRITON_INTERPRET=1`` must be
set before Triton (and this package) is imported, so those checks run in one subprocess
that executes this file as a script: it runs every case of ``INTERP_CASES`` and saves the
outputs and gradients next to the oracle's, the self-check's outcome on the real kernels
and the error a double backward raises; the tests of this process read them. The pytest
process itself never sees ``TRITON_INTERPRET``.

The GPU tests are marked ``cuda`` (``pytest -m cuda``; ``tools/gpu_check.py`` runs them),
run at realistic sizes and only where CUDA is available.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, NamedTuple, Tuple

import pytest
import torch
from torch import Tensor

from biformer_mm.ops import bra_triton
from conftest import require_triton

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec('triton') is not None
HAS_CUDA_TRITON = HAS_TRITON and torch.cuda.is_available() and not bra_triton.INTERPRETER

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# (atol, rtol) against an fp32 (interpreter) or fp64 (GPU) oracle fed the same inputs.
TOLERANCES = {'float32': (1e-4, 0.0), 'float16': (2e-2, 1e-2), 'bfloat16': (5e-2, 5e-2)}


class Case(NamedTuple):
    """One routed attention problem.

    ``layout`` says how q, k, v are stored: channel-packed ``(N, P, W, heads * D)`` maps
    (``'kv'``: q contiguous, k and v slices of one packed kv tensor; ``'qkv'``: all three
    slices of one packed tensor; ``'separate'``: three contiguous tensors), passed to the
    kernels as heads-first views, or ``'heads_first'`` (``(N, heads, P, W, D)`` slices of
    one packed tensor).
    """
    n: int
    p: int
    w: int
    topk: int
    heads: int
    head_dq: int
    head_dv: int
    dtype: str = 'float32'
    layout: str = 'kv'
    index_dtype: str = 'int64'


INTERP_CASES: Dict[str, Case] = {
    'fp32-w1-k1': Case(2, 4, 1, 1, 2, 16, 16),
    'fp32-w6-k3': Case(2, 4, 6, 3, 2, 16, 16),
    'fp32-w20-kP-d32': Case(1, 4, 20, 4, 1, 32, 32),
    'fp32-w6-kP-dq32-dv64': Case(1, 4, 6, 4, 2, 32, 64),
    'fp32-w20-k3-qkv': Case(1, 4, 20, 3, 2, 16, 16, layout='qkv'),
    'fp32-w6-k1-separate': Case(2, 4, 6, 1, 2, 32, 32, layout='separate'),
    'fp32-w6-d12-d20-int32': Case(1, 4, 6, 2, 2, 12, 20, index_dtype='int32'),
    # W > BLOCK_M and K * W > BLOCK_N: several query and key blocks per program.
    'fp32-w70-k2-blocks': Case(1, 2, 70, 2, 1, 16, 16),
    'fp32-w6-k3-heads-first': Case(2, 4, 6, 3, 2, 16, 32, layout='heads_first'),
    'fp16-w6-k3': Case(2, 4, 6, 3, 2, 16, 16, dtype='float16'),
    'fp16-w20-kP-dq32-dv64': Case(1, 4, 20, 4, 2, 32, 64, dtype='float16'),
    'bf16-w6-k3': Case(2, 4, 6, 3, 2, 16, 16, dtype='bfloat16'),
    'bf16-w20-k1-d32': Case(1, 4, 20, 1, 2, 32, 32, dtype='bfloat16'),
    'bf16-w6-kP-heads-first': Case(1, 4, 6, 4, 2, 16, 16, dtype='bfloat16',
                                   layout='heads_first'),
}

GPU_CASES: Dict[str, Case] = {
    'w64-k4-d32': Case(2, 64, 64, 4, 4, 32, 32),
    'w49-k16-d32': Case(2, 64, 49, 16, 4, 32, 32),
    'w16-k8-d32': Case(4, 49, 16, 8, 8, 32, 32),
    'w4-k16-d32': Case(8, 49, 4, 16, 8, 32, 32, layout='qkv'),
    'w1-kP-d32': Case(16, 49, 1, 49, 16, 32, 32),
    'w256-k1-d64': Case(2, 64, 256, 1, 2, 64, 64),
    'w20-k4-dq32-dv64': Case(2, 16, 20, 4, 2, 32, 64, layout='separate'),
    'w64-k4-d16': Case(2, 16, 64, 4, 4, 16, 16),
    'w64-k4-d128': Case(1, 16, 64, 4, 2, 128, 128),
    'w64-k4-d32-heads-first': Case(2, 64, 64, 4, 4, 32, 32, layout='heads_first'),
    'w16-k8-dq32-dv64-heads-first': Case(4, 49, 16, 8, 4, 32, 64, layout='heads_first'),
}


def oracle(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, num_heads: int,
           scale: float) -> Tensor:
    """Pure PyTorch routed attention that materialises the gathered key/values.

    Args:
        q (Tensor): Queries ``(N, P, W, Cqk)``.
        k (Tensor): Keys ``(N, P, W, Cqk)``.
        v (Tensor): Values ``(N, P, W, Cv)``.
        r_idx (Tensor): Routed key regions ``(N, P, K)``.
        num_heads (int): Number of heads.
        scale (float): Logit scale.

    Returns:
        Tensor: ``(N, P, W, Cv)``.
    """
    n, p, w, c_qk = q.shape
    c_v = v.shape[-1]
    topk = r_idx.shape[-1]
    m = num_heads
    b = torch.arange(n, device=q.device)[:, None, None]
    r_idx = r_idx.long()
    ks = k[b, r_idx].reshape(n, p, topk * w, m, c_qk // m)
    vs = v[b, r_idx].reshape(n, p, topk * w, m, c_v // m)
    qh = q.reshape(n, p, w, m, c_qk // m)
    attn = torch.einsum('npimd,npjmd->npmij', qh * scale, ks).softmax(-1)
    return torch.einsum('npmij,npjmd->npimd', attn, vs).reshape(n, p, w, c_v)


def make_inputs(case: Case, device: str, seed: int = 0) -> Tuple[Tensor, ...]:
    """Random inputs for ``case`` in fp32: the packed storage and ``r_idx``, ``grad_out``.

    Returns:
        Tuple[Tensor, ...]: ``packed`` (``(N, P, W, C)`` holding q|k|v along the channels),
        ``r_idx`` (distinct indices per row) and ``grad_out``.
    """
    gen = torch.Generator().manual_seed(seed)
    c_qk, c_v = case.heads * case.head_dq, case.heads * case.head_dv
    packed = torch.randn(case.n, case.p, case.w, 2 * c_qk + c_v, generator=gen)
    r_idx = torch.rand(case.n, case.p, case.p, generator=gen).argsort(-1)[..., :case.topk]
    grad_out = torch.randn(case.n, case.p, case.w, c_v, generator=gen)
    return (packed.to(device), r_idx.to(device, getattr(torch, case.index_dtype)),
            grad_out.to(device))


def split_leaves(case: Case, packed: Tensor) -> Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]:
    """Leaf tensors laid out as ``case.layout`` requires, and the q, k, v views into them.

    Args:
        case (Case): The problem.
        packed (Tensor): ``(N, P, W, C)`` holding q|k|v along the channels.

    Returns:
        Tuple[Tuple[Tensor, ...], Tuple[Tensor, ...]]: The leaves (requiring grad) and
        ``(q, k, v)``.
    """
    c_qk = case.heads * case.head_dq
    bounds = (c_qk, 2 * c_qk)
    if case.layout == 'qkv':
        leaf = packed.clone().requires_grad_()
        return (leaf,), (leaf[..., :bounds[0]], leaf[..., bounds[0]:bounds[1]],
                         leaf[..., bounds[1]:])
    if case.layout == 'kv':
        q = packed[..., :bounds[0]].clone().requires_grad_()
        kv = packed[..., bounds[0]:].clone().requires_grad_()
        return (q, kv), (q, kv[..., :c_qk], kv[..., c_qk:])
    if case.layout == 'heads_first':
        # One (N, heads, P, W, 2 * Dqk + Dv) tensor holding q|k|v per head.
        parts = [t.unflatten(-1, (case.heads, -1)) for t in packed.tensor_split(bounds, -1)]
        leaf = torch.cat(parts, -1).permute(0, 3, 1, 2, 4).contiguous().requires_grad_()
        return (leaf,), (leaf[..., :case.head_dq], leaf[..., case.head_dq:2 * case.head_dq],
                         leaf[..., 2 * case.head_dq:])
    leaves = tuple(t.clone().requires_grad_() for t in packed.tensor_split(bounds, dim=-1))
    return leaves, leaves


def to_channels(x: Tensor) -> Tensor:
    """``(N, heads, P, W, D)`` -> channel-packed ``(N, P, W, heads * D)``."""
    return x.permute(0, 2, 3, 1, 4).flatten(-2)


def to_heads(x: Tensor, heads: int) -> Tensor:
    """Channel-packed ``(N, P, W, heads * D)`` -> a heads-first ``(N, heads, P, W, D)``
    view of the same memory."""
    return x.unflatten(-1, (heads, -1)).permute(0, 3, 1, 2, 4)


def run_case(case: Case, device: str,
             oracle_dtype: torch.dtype) -> Dict[str, Tuple[Tensor, Tensor]]:
    """Run the Triton kernels and the oracle on ``case``.

    The oracle gets the same (already rounded) inputs, upcast to ``oracle_dtype``.

    Returns:
        Dict[str, Tuple[Tensor, Tensor]]: For ``'out'`` (channel-packed) and the gradient
        of every leaf, ``(triton result in fp32, oracle result in fp32)`` on the CPU.
    """
    packed, r_idx, grad_out = make_inputs(case, device)
    dtype = DTYPES[case.dtype]
    packed, grad_out = packed.to(dtype), grad_out.to(dtype)
    scale = (case.heads * case.head_dq) ** -0.5
    heads_first = case.layout == 'heads_first'

    leaves, (q, k, v) = split_leaves(case, packed)
    if not heads_first:
        q, k, v = (to_heads(t, case.heads) for t in (q, k, v))
    assert bra_triton.unsupported_reason(q, k, v, r_idx, interpreter=True) is None
    out = bra_triton.routed_attention_triton_heads_first(q, k, v, r_idx, scale)
    assert out.shape == (case.n, case.heads, case.p, case.w, case.head_dv)
    out = to_channels(out)
    out.backward(grad_out)

    ref_leaves, ref_qkv = split_leaves(case, packed.to(oracle_dtype))
    if heads_first:
        ref_qkv = tuple(to_channels(t) for t in ref_qkv)
    ref = oracle(*ref_qkv, r_idx, case.heads, scale)
    ref.backward(grad_out.to(oracle_dtype))

    assert out.dtype == dtype and out.shape == ref.shape
    results = {'out': (out, ref)}
    for i, (leaf, ref_leaf) in enumerate(zip(leaves, ref_leaves)):
        assert leaf.grad.dtype == dtype
        results[f'grad{i}'] = (leaf.grad, ref_leaf.grad)
    return {name: (a.detach().float().cpu(), b.detach().float().cpu())
            for name, (a, b) in results.items()}


def assert_results_close(results: Dict[str, Tuple[Tensor, Tensor]], dtype: str,
                         relative_to_max: bool = False) -> None:
    """Compare every ``(got, expected)`` pair with the tolerances of ``dtype``.

    Args:
        results (Dict[str, Tuple[Tensor, Tensor]]): Output of :func:`run_case`.
        dtype (str): Key of :data:`TOLERANCES`.
        relative_to_max (bool): Scale ``atol`` by ``max(1, max |expected|)``, for large
            problems whose key/value gradients sum over many query regions.
    """
    atol, rtol = TOLERANCES[dtype]
    for name, (got, expected) in results.items():
        scale = max(1.0, expected.abs().max().item()) if relative_to_max else 1.0
        torch.testing.assert_close(got, expected, atol=atol * scale, rtol=rtol,
                                   msg=lambda m, name=name: f'{name}: {m}')


@pytest.fixture(scope='module')
def interpreter_results(tmp_path_factory) -> Dict[str, Any]:
    """Run :func:`_interpreter_worker` in one subprocess under ``TRITON_INTERPRET=1``."""
    require_triton()
    result_file = tmp_path_factory.mktemp('bra_triton') / 'results.pt'
    env = dict(os.environ, TRITON_INTERPRET='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (str(REPO_ROOT), env.get('PYTHONPATH'))))
    proc = subprocess.run([sys.executable, __file__, str(result_file)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f'interpreter subprocess failed:\n{proc.stdout[-4000:]}\n'
                    f'{proc.stderr[-4000:]}')
    return torch.load(result_file)


@pytest.mark.parametrize('name', list(INTERP_CASES))
def test_interpreter_matches_oracle(interpreter_results, name: str) -> None:
    """Outputs and q/k/v gradients match the oracle in the CPU interpreter."""
    assert_results_close(interpreter_results['cases'][name], INTERP_CASES[name].dtype)


def test_interpreter_self_check_passes_the_real_kernels(interpreter_results) -> None:
    """The self-check, run on the real kernels, finds them right in every dtype, once
    per kernel configuration: two stages with other tiles and top-k run two checks."""
    checks = interpreter_results['self_check']
    assert checks['errors'] == {'float32': None, 'float16': None, 'bfloat16': None}
    assert checks['runs'] == 2


def test_interpreter_double_backward_raises_naming_the_fix(interpreter_results) -> None:
    """loss = out.sum(): a backward with create_graph=True through the kernels raises,
    where second-order terms through them would silently be zero."""
    message = interpreter_results['double_backward']
    assert 'differentiable once' in message and "attn_impl='gather'" in message


def test_interpreter_triton_operator_passes_opcheck(interpreter_results) -> None:
    """``torch.library.opcheck`` (schema, fake against the kernel, autograd
    registration, AOT dispatch with dynamic shapes) passes on the fused kernels as an
    operator, forward with and without gradients, and backward."""
    assert interpreter_results['opcheck'] == 'passed'


def test_cpu_without_interpreter_is_unsupported() -> None:
    """Plain CPU tensors are rejected with a RuntimeError pointing at attn_impl='torch'."""
    if bra_triton.INTERPRETER:
        pytest.skip('TRITON_INTERPRET=1 was set for this process')
    q = torch.randn(1, 1, 4, 6, 32)
    r_idx = torch.zeros(1, 4, 1, dtype=torch.long)
    assert 'not a CUDA device' in bra_triton.unsupported_reason(q, q, q, r_idx)
    with pytest.raises(RuntimeError, match="attn_impl='torch'"):
        bra_triton.routed_attention_triton_heads_first(q, q, q, r_idx, 32 ** -0.5)


def test_unsupported_dtype() -> None:
    """float64 inputs are not supported on any device."""
    q = torch.randn(1, 1, 4, 6, 32, dtype=torch.float64)
    r_idx = torch.zeros(1, 4, 1, dtype=torch.long)
    assert 'float64' in bra_triton.unsupported_reason(q, q, q, r_idx)
    with pytest.raises(RuntimeError, match='float64'):
        bra_triton.routed_attention_triton_heads_first(q, q, q, r_idx, 1.0)


def test_import_without_triton(monkeypatch) -> None:
    """The module imports without Triton and reports it as unsupported."""
    monkeypatch.setitem(sys.modules, 'triton', None)
    spec = importlib.util.spec_from_file_location('biformer_mm.ops._bra_triton_without_triton',
                                                  bra_triton.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    q = torch.randn(1, 1, 4, 6, 32)
    r_idx = torch.zeros(1, 4, 1, dtype=torch.long)
    assert module.TRITON_AVAILABLE is False
    assert module.unsupported_reason(q, q, q, r_idx) == 'Triton is not installed'
    with pytest.raises(RuntimeError, match='Triton is not installed'):
        module.routed_attention_triton_heads_first(q, q, q, r_idx, 1.0)


def test_validates_shapes(monkeypatch) -> None:
    """Inconsistent shapes and dtypes raise ValueError before any launch."""
    monkeypatch.setattr(bra_triton, 'unsupported_reason', lambda *args, **kwargs: None)
    q = torch.randn(1, 1, 4, 6, 32)
    r_idx = torch.zeros(1, 4, 1, dtype=torch.long)
    attn = bra_triton.routed_attention_triton_heads_first
    with pytest.raises(ValueError, match='r_idx'):
        attn(q, q, q, r_idx[0], 1.0)
    with pytest.raises(ValueError, match='r_idx'):
        attn(q, q, q, r_idx.float(), 1.0)
    with pytest.raises(ValueError, match='share a dtype'):
        attn(q, q.half(), q, r_idx, 1.0)
    with pytest.raises(ValueError, match=r'\(N, heads, P, W, D\)'):
        attn(q, q[:, :, :, :5], q, r_idx, 1.0)
    with pytest.raises(ValueError, match=r'\(N, heads, P, W, D\)'):
        attn(q[0], q[0], q[0], r_idx, 1.0)


def cuda(test):
    """Mark a test ``cuda`` and skip it without CUDA (or under the interpreter)."""
    return pytest.mark.cuda(pytest.mark.skipif(
        not HAS_CUDA_TRITON, reason='needs CUDA and Triton (not interpreted)')(test))


@cuda
@pytest.mark.parametrize('dtype', ['float32', 'float16', 'bfloat16'])
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_gpu_matches_oracle(name: str, dtype: str) -> None:
    """Outputs and gradients match an fp64 oracle at realistic sizes."""
    case = GPU_CASES[name]._replace(dtype=dtype)
    assert_results_close(run_case(case, 'cuda', torch.float64), dtype, relative_to_max=True)


@cuda
def test_gpu_does_not_materialise_gathered_kv() -> None:
    """Forward and backward peak at the kernels' own buffers: the output and its softmax
    statistics (float32, one per query and head), the q/k/v gradients and float32
    accumulators of the k/v gradients (the backward adds them with atomics). None grows
    with top-k, where the gathered key/values of the original algorithm are top-k (here
    16) times the key/values: 16 MiB here against 64 MiB for the gathered ones alone."""
    case = Case(2, 64, 64, 16, 4, 32, 32, dtype='float16')
    packed, r_idx, grad_out = make_inputs(case, 'cuda')
    packed, grad_out = packed.half(), grad_out.half()
    leaves, (q, k, v) = split_leaves(case, packed)
    q, k, v = (to_heads(t, case.heads) for t in (q, k, v))
    gathered_bytes = 2 * case.n * case.p * case.topk * case.w * case.heads * (
        case.head_dq + case.head_dv)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = bra_triton.routed_attention_triton_heads_first(q, k, v, r_idx, case.head_dq ** -0.5)
    out.backward(to_heads(grad_out, case.heads))
    torch.cuda.synchronize()
    buffers = (sum(t.numel() * t.element_size() for t in (out, q, k, v))  # out, dq, dk, dv
               + out.numel() // case.head_dv * 4  # softmax statistics
               + (k.numel() + v.numel()) * 4)  # float32 dk, dv accumulators
    assert torch.cuda.max_memory_allocated() - base <= buffers < gathered_bytes / 3


MASKRCNN_STAGES = {'stage1': (2, 256, 247, 1), 'stage2': (4, 256, 70, 4),
                   'stage3': (8, 256, 20, 16)}
"""(heads, regions, tokens per region, top-k) of BiFormer-T's routed stages at the Mask
R-CNN input 2x3x800x1216 (n_win 16)."""


def stage_call(heads: int, regions: int, tokens: int, topk: int, dtype: torch.dtype,
               head_dim: int = 32) -> Tuple[Tensor, ...]:
    """q, k, v slices of one (3, 2, heads, P, W, D) CUDA tensor, as BiFormer passes them,
    and routing indices."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(3, 2, heads, regions, tokens, head_dim, generator=g)
    r_idx = torch.rand(2, regions, regions, generator=g).argsort(-1)[..., :topk]
    return tuple(qkv.to('cuda', dtype).unbind(0)) + (r_idx.cuda(), )


@cuda
@pytest.mark.parametrize('dtype', ['float32', 'float16', 'bfloat16'])
@pytest.mark.parametrize('stage', list(MASKRCNN_STAGES))
def test_gpu_self_check_passes_at_every_stage(stage: str, dtype: str) -> None:
    from biformer_mm.ops.triton_self_check import run_self_check
    result = run_self_check(*stage_call(*MASKRCNN_STAGES[stage], DTYPES[dtype]))
    assert result.error is None, result


@cuda
def test_gpu_operator_passes_opcheck_with_the_fused_kernels() -> None:
    """``torch.library.opcheck`` of the registered ``biformer_mm::routed_attention`` and
    its backward operator with ``attn_impl='triton'`` on CUDA tensors, forward with and
    without gradients (the interpreter test checks a copy registered for CPU tensors)."""
    from biformer_mm.ops import OPERATOR
    if not OPERATOR:
        pytest.skip('torch.library.custom_op needs torch >= 2.4')
    q, k, v, r_idx = stage_call(2, 16, 20, 4, torch.float32)
    ops = torch.ops.biformer_mm
    for requires_grad in (False, True):
        torch.library.opcheck(ops.routed_attention.default,
                              (*(t.clone().requires_grad_(requires_grad) for t in (q, k, v)),
                               r_idx, 0.25, 'triton'))
    out = ops.routed_attention(q, k, v, r_idx, 0.25, 'triton')
    torch.library.opcheck(ops.routed_attention_backward.default,
                          (torch.randn_like(out), q, k, v, r_idx, out, 0.25, 'triton'))


@cuda
def test_gpu_self_check_compiles_exactly_the_kernels_the_call_uses(monkeypatch) -> None:
    """After the self-check of a call, the call itself compiles nothing: the check ran
    the very kernels Triton selects for it (head dim 24: compiled by no other test)."""
    import triton

    from biformer_mm.ops import triton_self_check
    compiled = []
    monkeypatch.setattr(triton.knobs.runtime, 'jit_post_compile_hook',
                        lambda **kwargs: compiled.append(kwargs['key']))
    monkeypatch.setattr(triton_self_check, '_results', {})
    monkeypatch.delenv(triton_self_check.SELF_CHECK_ENV, raising=False)
    q, k, v, r_idx = stage_call(4, 64, 70, 4, torch.bfloat16, head_dim=24)
    assert triton_self_check.triton_self_check(q, k, v, r_idx) is None
    assert len(compiled) == 2  # forward and backward
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = bra_triton.routed_attention_triton_heads_first(*leaves, r_idx, 0.2)
    out.backward(torch.randn_like(out))  # contiguous, as BiFormer's blocks pass it
    torch.cuda.synchronize()
    assert len(compiled) == 2


@cuda
def test_gpu_backbone_trains_with_triton_as_with_gather() -> None:
    """Ten AdamW steps of a one-block-per-stage BiFormer-T under bf16 autocast from one
    seed: the losses agree with the original algorithm's at every step."""
    import torch.nn.functional as F

    from biformer_mm import BiFormer
    losses = {}
    for impl in ('gather', 'triton'):
        torch.manual_seed(0)
        model = BiFormer(arch=dict(BiFormer.arch_zoo['tiny'], depths=[1, 1, 1, 1]), n_win=8,
                         attn_impl=impl)
        model.init_weights()
        model.cuda().train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(2, 3, 256, 384, generator=gen).cuda()
        targets = None
        losses[impl] = []
        for _ in range(10):
            with torch.autocast('cuda', dtype=torch.bfloat16):
                outs = model(x)
            if targets is None:
                targets = [torch.randn(o.shape, generator=gen).cuda() for o in outs]
            loss = sum(F.mse_loss(o.float(), t) for o, t in zip(outs, targets))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[impl].append(loss.item())
    torch.testing.assert_close(losses['triton'], losses['gather'], rtol=0.02, atol=0)


def _interpreter_worker(result_file: str) -> None:
    """Subprocess entry point: run ``INTERP_CASES``, the self-check and a double
    backward in the interpreter, and save the results."""
    from biformer_mm.ops import triton_self_check
    if not bra_triton.INTERPRETER:
        raise SystemExit('TRITON_INTERPRET=1 must be set before biformer_mm is imported')
    results = {'cases': {name: run_case(case, 'cpu', torch.float32)
                         for name, case in INTERP_CASES.items()}}
    gen = torch.Generator().manual_seed(0)

    def call(tokens, topk, dtype=torch.float32):
        qkv = torch.randn(3, 1, 2, 4, tokens, 16, generator=gen).to(dtype)
        return tuple(qkv.unbind(0)) + (torch.rand(1, 4, 4, generator=gen).argsort(-1)[
            ..., :topk], )

    results['self_check'] = dict(errors={
        str(dtype).split('.')[1]: triton_self_check.run_self_check(*call(6, 2, dtype)).error
        for dtype in DTYPES.values()})
    triton_self_check._results.clear()
    run_self_check, runs = triton_self_check.run_self_check, []

    def counted_run(*args):
        runs.append(args)
        return run_self_check(*args)

    triton_self_check.run_self_check = counted_run
    for tokens, topk in ((6, 2), (20, 1), (6, 2), (7, 2)):  # 16x16, 32x32, same, same tiles
        assert triton_self_check.triton_self_check(*call(tokens, topk)) is None
    triton_self_check.run_self_check = run_self_check
    results['self_check']['runs'] = len(runs)

    q, k, v, r_idx = (t.requires_grad_(t.is_floating_point()) for t in call(6, 2))
    out = bra_triton.routed_attention_triton_heads_first(q, k, v, r_idx, 0.25)
    try:
        torch.autograd.grad(out.sum(), q, create_graph=True)
        results['double_backward'] = 'no error'
    except RuntimeError as e:
        results['double_backward'] = str(e)
    results['opcheck'] = _opcheck_triton_operator(call(6, 2))
    torch.save(results, result_file)


def _opcheck_triton_operator(inputs) -> str:
    """``torch.library.opcheck`` of the fused kernels as the operator runs them on CUDA
    (``routed_attention_op``: forward kernel, backward by differentiating it), registered
    here for the interpreter's CPU tensors. Returns ``'passed'`` or the error."""
    lib = 'biformer_mm_interpreter'

    @torch.library.custom_op(f'{lib}::routed_attention', mutates_args=())
    def forward(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float) -> Tensor:
        return bra_triton.routed_attention_triton_heads_first(q, k, v, r_idx,
                                                              scale).contiguous()

    @torch.library.custom_op(f'{lib}::routed_attention_backward', mutates_args=())
    def backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                 scale: float) -> Tuple[Tensor, Tensor, Tensor]:
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            out = bra_triton.routed_attention_triton_heads_first(*leaves, r_idx, scale)
            return tuple(g.contiguous() for g in torch.autograd.grad(out, leaves, grad_out))

    forward.register_fake(lambda q, k, v, r_idx, scale: q.new_empty(q.shape[:-1] + v.shape[-1:]))
    backward.register_fake(lambda g, q, k, v, r_idx, scale: (
        torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)))

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:4])
        ctx.scale = inputs[4]

    forward.register_autograd(
        lambda ctx, grad: (*backward(grad, *ctx.saved_tensors, ctx.scale), None, None),
        setup_context=setup_context)
    q, k, v, r_idx = inputs
    try:
        for requires_grad in (False, True):
            torch.library.opcheck(forward, (*(t.clone().requires_grad_(requires_grad)
                                              for t in (q, k, v)), r_idx, 0.25))
        torch.library.opcheck(backward, (torch.randn_like(v), q, k, v, r_idx, 0.25))
    except Exception as e:  # noqa: BLE001  reported to the test, which names it
        return f'{type(e).__name__}: {e}'
    return 'passed'


if __name__ == '__main__':
    _interpreter_worker(sys.argv[1])
