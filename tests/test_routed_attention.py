"""Specification of the routed-attention implementations: they compute one function."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from biformer_mm.models.layers import BiLevelRoutingAttention
from biformer_mm.ops import (resolve_attn_impl, routed_attention, routed_attention_gather,
                             routed_attention_torch)


def random_problem(n=2, m=2, p=9, w=7, d_qk=32, d_v=48, topk=4, seed=0):
    """Heads-first queries, keys, values and distinct routed regions per query region."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, m, p, w, d_qk, generator=g)
    k = torch.randn(n, m, p, w, d_qk, generator=g)
    v = torch.randn(n, m, p, w, d_v, generator=g)
    r_idx = torch.stack([torch.stack([torch.randperm(p, generator=g)[:topk] for _ in range(p)])
                         for _ in range(n)])
    return q, k, v, r_idx


def oracle(q, k, v, r_idx, scale):
    """The definition, written with explicit per-region loops of dense attention."""
    n, m, p, w, _ = q.shape
    out = torch.empty(n, m, p, w, v.shape[-1])
    for b in range(n):
        for region in range(p):
            keys = k[b][:, r_idx[b, region]].flatten(1, 2)  # (M, K*W, D)
            values = v[b][:, r_idx[b, region]].flatten(1, 2)
            attn = (q[b, :, region] @ keys.transpose(1, 2) * scale).softmax(-1)
            out[b, :, region] = attn @ values
    return out


@pytest.mark.parametrize('fn', [routed_attention_gather, routed_attention_torch])
def test_implementation_matches_the_definition(fn):
    q, k, v, r_idx = random_problem(p=6, w=5, topk=3)
    torch.testing.assert_close(fn(q, k, v, r_idx, 0.125), oracle(q, k, v, r_idx, 0.125),
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('m,p,w,topk', [(2, 9, 7, 4), (1, 4, 1, 4), (2, 16, 20, 1),
                                         (4, 25, 6, 16)])
def test_torch_matches_original_gather_in_outputs_and_gradients(m, p, w, topk):
    inputs = random_problem(m=m, p=p, w=w, topk=topk)
    results = []
    for fn in (routed_attention_gather, routed_attention_torch):
        q, k, v = (t.clone().requires_grad_() for t in inputs[:3])
        out = fn(q, k, v, inputs[3], 0.1)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out, q.grad, k.grad, v.grad))
    for ours, original in zip(results[1], results[0]):
        torch.testing.assert_close(ours, original, atol=1e-5, rtol=1e-4)


def test_torch_in_bfloat16_stays_close_to_float32():
    q, k, v, r_idx = random_problem()
    ref = routed_attention_gather(q, k, v, r_idx, 0.1)
    out = routed_attention_torch(q.bfloat16(), k.bfloat16(), v.bfloat16(), r_idx, 0.1)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize('size', [(23, 37), (16, 16), (5, 3)])
def test_bra_module_is_identical_across_implementations(size):
    torch.manual_seed(0)
    modules = {impl: BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=5, attn_impl=impl)
               for impl in ('gather', 'torch', 'auto')}
    for module in modules.values():
        module.load_state_dict(modules['gather'].state_dict())
    x = torch.randn(2, *size, 64)
    results = {}
    for impl, module in modules.items():
        x_ = x.clone().requires_grad_()
        out = module(x_)
        out.square().sum().backward()
        results[impl] = [out, x_.grad] + [p.grad for p in module.parameters()]
    for impl in ('torch', 'auto'):
        for ours, original in zip(results[impl], results['gather']):
            torch.testing.assert_close(ours, original, atol=1e-4, rtol=1e-4)


def test_auto_uses_torch_on_cpu_and_never_triton_without_cuda():
    q, k, v, _ = random_problem()
    assert resolve_attn_impl('auto', q, k, v) == 'torch'
    assert resolve_attn_impl('gather', q, k, v) == 'gather'


def test_asking_for_triton_on_cpu_says_why_and_what_to_use():
    q, k, v, r_idx = random_problem()
    with pytest.raises(RuntimeError, match="attn_impl='torch'"):
        routed_attention(q, k, v, r_idx, 0.1, attn_impl='triton')


def test_unknown_implementation_is_rejected():
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=4, attn_impl='flash')


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='Triton not installed')
def test_triton_path_reproduces_official_outputs_and_gather_gradients_in_interpreter():
    """The fused kernel, run in Triton's CPU interpreter (a subprocess, so this process
    never sees TRITON_INTERPRET), inside the real backbone and BRA module."""
    script = Path(__file__).with_name('_triton_interpreter_check.py')
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'triton interpreter checks passed' in proc.stdout
