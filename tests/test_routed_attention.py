"""Specification of the routed-attention implementations: they compute one function."""
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from biformer_mm.models.layers import BiLevelRoutingAttention
from biformer_mm.ops import (OPERATOR, ChunkedRoutedAttention, chunked_routed_attention,
                             resolve_algorithm, resolve_attn_impl, routed_attention,
                             routed_attention_chunked, routed_attention_cpp,
                             routed_attention_gather, routed_attention_sdpa)

pytestmark = pytest.mark.classic

needs_operator = pytest.mark.skipif(
    not OPERATOR, reason='torch.library.custom_op needs torch >= 2.4; older torch runs '
    'the autograd Function, tested here too')


def operator(q, k, v, r_idx, scale):
    return torch.ops.biformer_mm.routed_attention(q, k, v, r_idx, scale)


def chunked_operator(q, k, v, r_idx, scale):
    return torch.ops.biformer_mm.routed_attention(q, k, v, r_idx, scale, 'chunked')


PURE_TORCH = [routed_attention_chunked, routed_attention_sdpa]
# The operator where this torch has it: 'auto' (the fused C++ kernel in float32, built on
# first use), its chunked kernel, and attn_impl='cpp'.
OPERATOR_CALLS = [pytest.param(fn, marks=needs_operator, id=fn.__name__)
                  for fn in (operator, chunked_operator, routed_attention_cpp)]
FAST = PURE_TORCH + OPERATOR_CALLS
CPU_FUSED = 'cpp' if OPERATOR else 'chunked'
"""What attn_impl='auto' runs on the CPU in float32: the fused C++ kernel where torch has
custom_op (and a compiler builds the kernel, as on every machine the suite runs on)."""
TRITON_MAJOR = (int(importlib.metadata.version('triton').split('.')[0])
                if importlib.util.find_spec('triton') else None)


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


@pytest.mark.parametrize('fn', [routed_attention_gather] + FAST)
def test_implementation_matches_the_definition(fn):
    q, k, v, r_idx = random_problem(p=6, w=5, topk=3)
    torch.testing.assert_close(fn(q, k, v, r_idx, 0.125), oracle(q, k, v, r_idx, 0.125),
                               atol=1e-5, rtol=1e-4)


def outputs_and_gradients(fn, inputs, scale=0.1):
    """``fn``'s output on ``inputs`` (q, k, v, r_idx) and the q, k, v gradients of a fixed
    weighted sum of it."""
    q, k, v = (t.clone().requires_grad_() for t in inputs[:3])
    out = fn(q, k, v, inputs[3], scale)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out, q.grad, k.grad, v.grad


def assert_matches_original(fn, inputs):
    for ours, original in zip(outputs_and_gradients(fn, inputs),
                              outputs_and_gradients(routed_attention_gather, inputs)):
        torch.testing.assert_close(ours, original, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('m,p,w,topk', [(2, 9, 7, 4), (1, 4, 1, 4), (2, 16, 20, 1),
                                         (4, 25, 6, 16)])
@pytest.mark.parametrize('ours', FAST)
def test_torch_matches_original_gather_in_outputs_and_gradients(ours, m, p, w, topk):
    assert_matches_original(ours, random_problem(m=m, p=p, w=w, topk=topk))


@pytest.mark.parametrize('fn', PURE_TORCH + [routed_attention_gather] + OPERATOR_CALLS)
def test_every_algorithm_takes_an_empty_batch(fn):
    q, k, v, r_idx = (t[:0] for t in random_problem())
    assert fn(q, k, v, r_idx, 0.1).shape == (0, ) + q.shape[1:-1] + v.shape[-1:]


@pytest.mark.parametrize('fn', FAST + [routed_attention_gather])
def test_an_index_that_is_no_region_is_refused(fn):
    """An index >= P would read a region of another head or image: every CPU algorithm
    refuses it, as does one below 0 (ours name the regions; 'gather' is torch's own
    bounds check)."""
    q, k, v, r_idx = random_problem()
    message = ('out of bounds' if fn is routed_attention_gather else
               'r_idx must index the 9 regions')
    for bad in (r_idx.shape[1], -1):
        wrong = r_idx.clone()
        wrong[0, 0, 0] = bad
        with pytest.raises((ValueError, RuntimeError), match=message):
            fn(q, k, v, wrong, 0.1)


@pytest.mark.parametrize('r_idx', [torch.zeros(2, 16, 0, dtype=torch.long),
                                   torch.zeros(2, 16, 4, dtype=torch.bool)],
                         ids=['no-routed-region', 'bool'])
def test_the_operator_refuses_routing_that_is_no_region_index_naming_it(r_idx):
    q, k, v, _ = random_problem(p=16)
    with pytest.raises(ValueError, match='int32 or int64 r_idx of shape'):
        routed_attention(q, k, v, r_idx, 0.1, 'chunked')


@pytest.mark.parametrize('ours', FAST)
def test_widely_spread_logits_give_the_original_probabilities(ours):
    """Logits spread over hundreds (a large scale): the softmax's exponentials underflow
    for most keys and must neither overflow nor lose the largest ones."""
    q, k, v, r_idx = random_problem(m=2, p=9, w=7, topk=4)
    torch.testing.assert_close(ours(q, k, v, r_idx, 8.0),
                               routed_attention_gather(q, k, v, r_idx, 8.0),
                               atol=1e-5, rtol=1e-4)


def gathered_bytes(q, v, r_idx):
    """Bytes of the routed keys and values of one query row (one region of one head)."""
    return r_idx.shape[-1] * q.shape[-2] * (q.shape[-1] + v.shape[-1]) * q.element_size()


@pytest.mark.parametrize('rows_per_chunk', [1, 3, 7])
def test_chunk_boundaries_do_not_change_outputs_or_gradients(rows_per_chunk, monkeypatch):
    """2 images x 2 heads x 9 regions = 36 query rows: chunks of 1, 3 (even) and 7 rows
    (a ragged last chunk) agree with the original algorithm."""
    inputs = random_problem(p=9, w=7, topk=4)
    monkeypatch.setattr(chunked_routed_attention, 'CHUNK_BYTES',
                        rows_per_chunk * gathered_bytes(inputs[0], inputs[2], inputs[3]))
    assert_matches_original(ChunkedRoutedAttention.apply, inputs)


def test_chunked_gradients_pass_gradcheck_in_float64(monkeypatch):
    q, k, v, r_idx = (t.double() if t.is_floating_point() else t
                      for t in random_problem(n=1, m=2, p=4, w=3, d_qk=4, d_v=5, topk=2))
    inputs = tuple(t.requires_grad_() for t in (q, k, v))
    # 8 query rows: chunks of 3, 3 and 2
    monkeypatch.setattr(chunked_routed_attention, 'CHUNK_BYTES',
                        3 * gathered_bytes(q, v, r_idx))

    def fn(q, k, v):
        return ChunkedRoutedAttention.apply(q, k, v, r_idx, 0.3)

    assert torch.autograd.gradcheck(fn, inputs)


def test_chunked_attention_saves_no_topk_fold_tensor_for_backward():
    """Routing 16 regions to every region must not keep 16 copies of the key/values
    alive until the backward: what autograd saves is at most map-sized."""
    q, k, v, r_idx = random_problem(p=16, w=4, topk=16)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = routed_attention_chunked(q, k, v, r_idx, 0.1)
    assert saved and max(t.numel() for t in saved) <= max(k.numel(), v.numel())
    out.sum().backward()
    assert k.grad.shape == k.shape


def test_chunked_in_bfloat16_stays_close_to_float32():
    q, k, v, r_idx = random_problem()
    ref = routed_attention_gather(q, k, v, r_idx, 0.1)
    out = routed_attention_chunked(q.bfloat16(), k.bfloat16(), v.bfloat16(), r_idx, 0.1)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize('size', [(23, 37), (16, 16), (5, 3)])
def test_bra_module_is_identical_across_implementations(size):
    torch.manual_seed(0)
    impls = ('gather', 'torch', 'auto', 'chunked', 'sdpa') + (('cpp',) if OPERATOR else ())
    modules = {impl: BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=5, attn_impl=impl)
               for impl in impls}
    for module in modules.values():
        module.load_state_dict(modules['gather'].state_dict())
    x = torch.randn(2, *size, 64)
    results = {}
    for impl, module in modules.items():
        x_ = x.clone().requires_grad_()
        out = module(x_)
        out.square().sum().backward()
        results[impl] = [out, x_.grad] + [p.grad for p in module.parameters()]
    for impl in impls[1:]:
        for ours, original in zip(results[impl], results['gather']):
            torch.testing.assert_close(ours, original, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('impl', ['torch', 'gather'])
def test_bra_module_trains_under_cpu_bfloat16_autocast(impl, monkeypatch):
    """Under ``torch.autocast('cpu', dtype=torch.bfloat16)`` the module gives the float32
    result within bfloat16 error, in the output and the input gradient. Both passes route
    alike (the float32 pass's routing, reused): bfloat16 region means may break a near
    tie the other way."""
    torch.manual_seed(0)
    module = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=4, attn_impl=impl)
    x = torch.randn(2, 13, 11, 64)
    route, routes = module.route, []

    def first_routing(qkv):
        if not routes:
            routes.append(route(qkv))
        return routes[0]

    monkeypatch.setattr(module, 'route', first_routing)
    results = []
    for enabled in (False, True):
        x_ = x.clone().requires_grad_()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=enabled):
            out = module(x_)
        out.float().square().sum().backward()
        results.append((out.float(), x_.grad))
    # bfloat16 keeps 8 significant bits (4e-3 relative); outputs and gradients here are
    # at most about 0.9, and differed by at most 4.8e-3.
    for mixed, full in zip(results[1], results[0]):
        torch.testing.assert_close(mixed, full, atol=2e-2, rtol=2e-2)


def test_auto_uses_the_fused_cpu_kernel_in_float32_and_torch_otherwise_on_cpu():
    q, k, v, r_idx = random_problem()
    assert resolve_attn_impl('auto', q, k, v, r_idx) == ('cpp' if OPERATOR else 'torch')
    assert resolve_attn_impl('auto', q.double(), k.double(), v.double(), r_idx) == 'torch'
    assert resolve_attn_impl('gather', q, k, v, r_idx) == 'gather'


def test_every_setting_names_the_algorithm_that_runs_on_the_cpu():
    """'torch' and 'auto' are policies; logs and benchmark rows name the algorithm."""
    problem = random_problem()
    names = {impl: resolve_algorithm(impl, *problem)
             for impl in ('auto', 'torch', 'chunked', 'cpp', 'sdpa', 'gather')}
    assert names == dict(auto=CPU_FUSED, torch='chunked', chunked='chunked', cpp='cpp',
                         sdpa='sdpa', gather='gather')


@pytest.mark.skipif(OPERATOR, reason='the classic stack (torch < 2.4) has no operator')
def test_cpp_without_the_operator_says_what_it_needs():
    with pytest.raises(RuntimeError, match=r"attn_impl='cpp' cannot run.*torch >= 2\.4"):
        routed_attention(*random_problem(), 0.1, attn_impl='cpp')


@needs_operator
def test_cpp_in_another_dtype_says_why_and_what_to_use():
    q, k, v, r_idx = random_problem()
    with pytest.raises(RuntimeError, match="float32, not torch.float64.*attn_impl='auto'"):
        routed_attention(q.double(), k.double(), v.double(), r_idx, 0.1, attn_impl='cpp')


@needs_operator
def test_auto_runs_chunked_and_warns_with_the_fix_where_the_cpp_kernel_cannot_build(
        tmp_path):
    """No working compiler (CXX fails) and an empty extension cache: 'auto' still gives
    the right result, with the 'chunked' algorithm, and says why and what to do; an
    explicit 'cpp' raises with the reason."""
    script = """
import torch
from mmengine.logging import MMLogger
from biformer_mm.ops import resolve_algorithm, routed_attention, routed_attention_gather
MMLogger.get_instance('check', log_level='INFO')
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(1, 2, 4, 5, 8, generator=g) for _ in range(3))
r_idx = torch.tensor([[[0, 1], [1, 2], [2, 3], [3, 0]]])
assert resolve_algorithm('auto', q, k, v, r_idx) == 'chunked'
torch.testing.assert_close(routed_attention(q, k, v, r_idx, 0.3),
                           routed_attention_gather(q, k, v, r_idx, 0.3))
try:
    routed_attention(q, k, v, r_idx, 0.3, attn_impl='cpp')
except RuntimeError as e:
    print('RAISED', e)
"""
    env = dict(os.environ, CXX=str(Path('/bin/false')),
               TORCH_EXTENSIONS_DIR=str(tmp_path / 'extensions'))
    result = subprocess.run([sys.executable, '-c', script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"WARNING - routed attention: the fused C\+\+ CPU kernel cannot run: "
                     r"it could not be built or loaded.*attn_impl='auto' runs 'chunked'.*"
                     r'Install a C\+\+ compiler and ninja', out), out
    assert re.search(r"attn_impl='auto' uses 'torch', because it could not be built.*the "
                     r"'chunked' algorithm", out), out
    assert re.search(r"RAISED attn_impl='cpp' cannot run: it could not be built", out), out
    assert out.count('WARNING') == 1, out


@needs_operator
@pytest.mark.parametrize('impl', ['auto', 'torch', 'chunked', 'cpp'])
def test_bra_module_calls_the_operator_on_cpu(impl):
    """Tracing sees one operator node, not the chunk loop."""
    from torch.fx.experimental.proxy_tensor import make_fx
    module = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=5, attn_impl=impl)
    graph = str(make_fx(module)(torch.randn(1, 16, 16, 64)).graph)
    assert graph.count('biformer_mm.routed_attention.default') == 1
    assert 'index_add' not in graph and 'logsumexp' not in graph


def kernels_called(module, x):
    """The output of ``module(x)`` and the routed-attention operators it dispatched."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if 'biformer_mm' in str(func):
                self.names.append(str(func).rsplit('.', 1)[0])
            return func(*args, **(kwargs or {}))

    with Record() as record:
        out = module(x)
    return out, record.names


MAP_KERNEL = 'biformer_mm.routed_attention_map'
"""The operator whose kernel is the C++ kernel's map entry."""


@needs_operator
@pytest.mark.parametrize('impl', ['auto', 'cpp'])
@pytest.mark.parametrize('size,qk_dims', [((23, 37), None), ((16, 16), 32), ((5, 3), 96)])
def test_bra_module_in_cpu_inference_reads_the_qkv_map_with_the_fused_kernel(
        impl, size, qk_dims):
    """Eager inference: one call of the C++ kernel's map entry, no heads-first operator,
    and the original algorithm's output, padded or not, with qk_dims other than the
    value channels too."""
    torch.manual_seed(0)
    module = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=5, qk_dims=qk_dims,
                                     attn_impl=impl).eval()
    original = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=5, qk_dims=qk_dims,
                                       attn_impl='gather').eval()
    original.load_state_dict(module.state_dict())
    x = torch.randn(2, *size, 64)
    with torch.no_grad():
        out, called = kernels_called(module, x)
        torch.testing.assert_close(out, original(x))
    assert called == [MAP_KERNEL]
    with torch.inference_mode():
        assert kernels_called(module, x)[1] == [MAP_KERNEL]
        assert kernels_called(module, x[:0])[0].shape == (0, *size, 64)


@needs_operator
def test_bra_module_keeps_the_operator_where_the_map_kernel_does_not_apply():
    """With gradients, under the 'torch' policy and in float64 'auto' the module calls
    the heads-first operator; an explicit 'cpp' in float64 raises naming what to use."""
    module = BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=5)
    x = torch.randn(1, 16, 16, 64)
    assert kernels_called(module, x)[1] == ['biformer_mm.routed_attention']
    with torch.no_grad():
        assert kernels_called(module.double(), x.double())[1] == ['biformer_mm.routed_attention']
        module.attn_impl = 'torch'
        assert kernels_called(module.float(), x)[1] == ['biformer_mm.routed_attention']
        module.attn_impl = 'cpp'
        with pytest.raises(RuntimeError, match="float32, not torch.float64.*attn_impl='auto'"):
            module.double()(x.double())


@needs_operator
@pytest.mark.parametrize('dtype,attn_impl', [(torch.float32, 'cpp'),
                                             (torch.float32, 'chunked'),
                                             (torch.float64, 'auto')])
@pytest.mark.parametrize('requires_grad', [False, True], ids=['no-grad', 'grad'])
def test_operator_passes_opcheck(dtype, attn_impl, requires_grad):
    """Schema, autograd registration, fake (meta) implementation against each CPU
    kernel, and AOT dispatch with dynamic shapes, forward and backward."""
    q, k, v, r_idx = random_problem(n=1, p=6, w=5, d_qk=8, d_v=6, topk=3)
    q, k, v = (t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v))
    torch.library.opcheck(torch.ops.biformer_mm.routed_attention.default,
                          (q, k, v, r_idx, 0.3, attn_impl))


@needs_operator
def test_map_operator_passes_opcheck_and_refuses_a_backward():
    """Schema, fake implementation against the kernel's map entry (padded map, an output
    smaller than it) and AOT dispatch with dynamic shapes; it is forward only, and a
    gradient through it raises naming the operator to differentiate."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, 8, 12, 2 * 16 + 24, generator=g)
    r_idx = torch.stack([torch.randperm(16, generator=g)[:3] for _ in range(2 * 16)])
    args = (qkv, r_idx.view(2, 16, 3), 4, 2, 16, 0.3, 7, 10)
    torch.library.opcheck(torch.ops.biformer_mm.routed_attention_map.default, args)
    out = torch.ops.biformer_mm.routed_attention_map(qkv.requires_grad_(), *args[1:])
    assert out.shape == (2, 7, 10, 24)
    with pytest.raises(RuntimeError, match='forward only.*biformer_mm::routed_attention,'):
        out.sum().backward()


@needs_operator
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_backward_operator_passes_opcheck(dtype):
    q, k, v, r_idx = (t.to(dtype) if t.is_floating_point() else t
                      for t in random_problem(n=1, p=6, w=5, d_qk=8, d_v=6, topk=3))
    out = operator(q, k, v, r_idx, 0.3)
    grad_out = torch.randn(out.shape, dtype=dtype)
    torch.library.opcheck(torch.ops.biformer_mm.routed_attention_backward.default,
                          (grad_out, q, k, v, r_idx, out, 0.3))


def second_order_input_gradient(module, x):
    """d/dx of |d(out.sum())/dx|^2: the gradient outputs do not require grad, the case in
    which the chunked Function used to return zero second-order terms silently."""
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(module(x).sum(), x, create_graph=True)
    return torch.autograd.grad(grad.square().sum(), x)[0]


def bra_pair(impl):
    """The issue 17 reproduction in float64 (1x14x14x32, n_win 7, top-k 3): a BRA with
    ``attn_impl=impl``, the same weights with 'gather', and an input."""
    torch.manual_seed(0)
    ours, reference = (BiLevelRoutingAttention(32, num_heads=2, n_win=7, topk=3,
                                               attn_impl=name).double()
                       for name in (impl, 'gather'))
    ours.load_state_dict(reference.state_dict())
    return ours, reference, torch.randn(1, 14, 14, 32, dtype=torch.float64)


@pytest.mark.parametrize('impl,dtype', [
    ('auto', torch.float64), ('torch', torch.float64), ('chunked', torch.float64),
    pytest.param('cpp', torch.float32, marks=needs_operator)])
def test_chunked_second_order_gradients_raise_naming_gather(impl, dtype):
    """They used to be silently wrong by up to 11 (first order is right)."""
    module, _, x = bra_pair(impl)
    with pytest.raises(RuntimeError, match="differentiate twice.*attn_impl='gather'"):
        second_order_input_gradient(module.to(dtype), x.to(dtype))


def test_sdpa_second_order_gradients_are_right_or_raise():
    """Where torch runs SDPA's fused CPU kernel it raises its own error (no second
    derivative); where it runs the math kernel (torch 2.1) the result is right."""
    module, reference, x = bra_pair('sdpa')
    try:
        got = second_order_input_gradient(module, x)
    except RuntimeError as e:
        assert re.search('derivative for aten::_scaled_dot_product.*is not implemented',
                         str(e)), e
    else:
        torch.testing.assert_close(got, second_order_input_gradient(reference, x))


def test_gather_gives_second_order_gradients():
    q, k, v, r_idx = random_problem(n=1, m=1, p=4, w=2, d_qk=3, d_v=2, topk=2)
    assert torch.autograd.gradgradcheck(
        lambda q, k, v: routed_attention_gather(q, k, v, r_idx, 0.3),
        tuple(t.double().requires_grad_() for t in (q, k, v)))


def test_asking_for_triton_on_cpu_says_why_and_what_to_use():
    q, k, v, r_idx = random_problem()
    with pytest.raises(RuntimeError, match="attn_impl='torch'"):
        routed_attention(q, k, v, r_idx, 0.1, attn_impl='triton')


def test_unknown_implementation_is_rejected():
    with pytest.raises(ValueError, match="attn_impl must be one of"):
        BiLevelRoutingAttention(64, num_heads=2, n_win=4, topk=4, attn_impl='flash')


@pytest.mark.skipif(TRITON_MAJOR is None or TRITON_MAJOR < 3,
                    reason='the fused kernel needs Triton >= 3 (torch 2.1 ships Triton 2.1)')
def test_triton_path_reproduces_official_outputs_and_gather_gradients_in_interpreter():
    """The fused kernel, run in Triton's CPU interpreter (a subprocess, so this process
    never sees TRITON_INTERPRET), inside the real backbone and BRA module."""
    script = Path(__file__).with_name('_triton_interpreter_check.py')
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'triton interpreter checks passed' in proc.stdout
