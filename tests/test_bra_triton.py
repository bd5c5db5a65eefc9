"""Tests of the fused Triton routed attention in ``biformer_mm/ops/bra_triton.py``.

Without a GPU the kernels run in Triton's CPU interpreter. ``TRITON_INTERPRET=1`` must be
set before Triton (and this package) is imported, so those checks run in one subprocess
that executes this file as a script: it runs every case of ``INTERP_CASES`` and saves the
outputs and gradients next to the oracle's; the tests of this process compare them. The
pytest process itself never sees ``TRITON_INTERPRET``.

The GPU tests run at realistic sizes and only where CUDA is available.
"""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, NamedTuple, Tuple

import pytest
import torch
from torch import Tensor

from biformer_mm.ops import bra_triton

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_TRITON = importlib.util.find_spec('triton') is not None
HAS_CUDA_TRITON = HAS_TRITON and torch.cuda.is_available() and not bra_triton.INTERPRETER

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# (atol, rtol) against an fp32 (interpreter) or fp64 (GPU) oracle fed the same inputs.
TOLERANCES = {'float32': (1e-4, 0.0), 'float16': (2e-2, 1e-2), 'bfloat16': (5e-2, 5e-2)}


class Case(NamedTuple):
    """One routed attention problem.

    ``layout`` says how q, k, v are stored: ``'kv'`` (q contiguous, k and v slices of one
    packed kv tensor, as in BiFormer), ``'qkv'`` (all three slices of one packed tensor),
    ``'separate'`` (three contiguous tensors) or ``'heads_first'`` (``(N, heads, P, W, D)``
    slices of one packed tensor, run through ``routed_attention_triton_heads_first``).
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
    assert bra_triton.unsupported_reason(q, k, v, r_idx, None if heads_first else case.heads) \
        is None
    if heads_first:
        out = bra_triton.routed_attention_triton_heads_first(q, k, v, r_idx, scale)
        assert out.shape == (case.n, case.heads, case.p, case.w, case.head_dv)
        out = to_channels(out)
    else:
        out = bra_triton.routed_attention_triton(q, k, v, r_idx, case.heads, scale)
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
def interpreter_results(tmp_path_factory) -> Dict[str, Dict[str, Tuple[Tensor, Tensor]]]:
    """Run all ``INTERP_CASES`` in one subprocess under ``TRITON_INTERPRET=1``."""
    if not HAS_TRITON:
        pytest.skip('Triton is not installed')
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
    assert_results_close(interpreter_results[name], INTERP_CASES[name].dtype)


def test_cpu_without_interpreter_is_unsupported() -> None:
    """Plain CPU tensors are rejected with a RuntimeError pointing at attn_impl='torch'."""
    if bra_triton.INTERPRETER:
        pytest.skip('TRITON_INTERPRET=1 was set for this process')
    q = torch.randn(1, 4, 6, 32)
    r_idx = torch.zeros(1, 4, 1, dtype=torch.long)
    assert 'not a CUDA device' in bra_triton.unsupported_reason(q, q, q, r_idx, 1)
    with pytest.raises(RuntimeError, match="attn_impl='torch'"):
        bra_triton.routed_attention_triton(q, q, q, r_idx, 1, 32 ** -0.5)


def test_unsupported_dtype() -> None:
    """float64 inputs are not supported on any device."""
    q = torch.randn(1, 4, 6, 32, dtype=torch.float64)
    r_idx = torch.zeros(1, 4, 1, dtype=torch.long)
    assert 'float64' in bra_triton.unsupported_reason(q, q, q, r_idx, 1)
    with pytest.raises(RuntimeError, match='float64'):
        bra_triton.routed_attention_triton(q, q, q, torch.zeros(1, 4, 1, dtype=torch.long),
                                           1, 1.0)


def test_import_without_triton(monkeypatch) -> None:
    """The module imports without Triton and reports it as unsupported."""
    monkeypatch.setitem(sys.modules, 'triton', None)
    spec = importlib.util.spec_from_file_location('_bra_triton_without_triton',
                                                  bra_triton.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    q = torch.randn(1, 4, 6, 32)
    assert module.TRITON_AVAILABLE is False
    assert module.unsupported_reason(q, q, q, torch.zeros(1, 4, 1, dtype=torch.long), 1) == \
        'Triton is not installed'
    with pytest.raises(RuntimeError, match='Triton is not installed'):
        module.routed_attention_triton(q, q, q, torch.zeros(1, 4, 1, dtype=torch.long), 1, 1.0)


gpu = pytest.mark.skipif(not HAS_CUDA_TRITON, reason='needs CUDA and Triton (not interpreted)')


@gpu
@pytest.mark.parametrize('dtype', ['float32', 'float16', 'bfloat16'])
@pytest.mark.parametrize('name', list(GPU_CASES))
def test_gpu_matches_oracle(name: str, dtype: str) -> None:
    """Outputs and gradients match an fp64 oracle at realistic sizes."""
    case = GPU_CASES[name]._replace(dtype=dtype)
    assert_results_close(run_case(case, 'cuda', torch.float64), dtype, relative_to_max=True)


def test_validates_shapes(monkeypatch) -> None:
    """Inconsistent shapes, dtypes and head counts raise ValueError before any launch."""
    monkeypatch.setattr(bra_triton, 'unsupported_reason', lambda *args: None)
    q = torch.randn(1, 4, 6, 32)
    r_idx = torch.zeros(1, 4, 1, dtype=torch.long)
    attn = bra_triton.routed_attention_triton
    with pytest.raises(ValueError, match='num_heads'):
        attn(q, q, q, r_idx, 3, 1.0)
    with pytest.raises(ValueError, match='r_idx'):
        attn(q, q, q, r_idx[0], 1, 1.0)
    with pytest.raises(ValueError, match='r_idx'):
        attn(q, q, q, r_idx.float(), 1, 1.0)
    with pytest.raises(ValueError, match='share a dtype'):
        attn(q, q.half(), q, r_idx, 1, 1.0)
    with pytest.raises(ValueError, match=r'\(N, P, W, C\)'):
        attn(q, q[:, :, :5], q, r_idx, 1, 1.0)
    with pytest.raises(ValueError, match=r'\(N, heads, P, W, D\)'):
        bra_triton.routed_attention_triton_heads_first(q, q, q, r_idx, 1.0)


@gpu
def test_gpu_does_not_materialise_gathered_kv() -> None:
    """Forward and backward peak memory stay far below the gathered key/values."""
    case = Case(2, 64, 64, 16, 4, 32, 32, dtype='float16')
    packed, r_idx, grad_out = make_inputs(case, 'cuda')
    packed, grad_out = packed.half(), grad_out.half()
    leaves, (q, k, v) = split_leaves(case, packed)
    gathered_bytes = 2 * case.n * case.p * case.topk * case.w * (k.shape[-1] + v.shape[-1])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = bra_triton.routed_attention_triton(q, k, v, r_idx, case.heads, case.head_dq ** -0.5)
    out.backward(grad_out)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - base < gathered_bytes / 4


def _interpreter_worker(result_file: str) -> None:
    """Subprocess entry point: run ``INTERP_CASES`` in the interpreter, save the results."""
    if not bra_triton.INTERPRETER:
        raise SystemExit('TRITON_INTERPRET=1 must be set before biformer_mm is imported')
    torch.save({name: run_case(case, 'cpu', torch.float32)
                for name, case in INTERP_CASES.items()}, result_file)


if __name__ == '__main__':
    _interpreter_worker(sys.argv[1])
