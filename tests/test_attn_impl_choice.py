"""Specification of where the fused Triton kernels run: the guards of ``attn_impl='auto'``
and of an explicit ``'triton'``, the self-check before each compiled kernel's first use,
the logged choice, launches on the inputs' device, and once-differentiable autograd
Functions.

There is no GPU here: a GPU is simulated by monkeypatching the conditions (meta tensors
that say they are CUDA tensors, a compute capability, a ROCm build, ...), and the kernels
by torch computations. The real kernels run in Triton's CPU interpreter in
test_bra_triton.py (the self-check too), and on a GPU in its tests marked ``cuda``.
"""
import contextlib
import importlib
import importlib.util
import sys
import types
import warnings

import pytest
import torch

from biformer_mm.ops import (ChunkedRoutedAttention, bra_triton, resolve_attn_impl,
                             routed_attention, routed_attention_gather, triton_self_check)
from conftest import require_triton

routed_attention_module = importlib.import_module('biformer_mm.ops.routed_attention')

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def problem(dtype=torch.float32, device='cpu', head_dq=32, head_dv=32, requires_grad=False):
    """Heads-first q, k, v of 1 image, 2 heads, 4 regions of 6 tokens, top-2 routing."""
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 4, 6, head_dq, generator=g) for _ in range(2))
    v = torch.randn(1, 2, 4, 6, head_dv, generator=g)
    q, k, v = (t.to(device, dtype).requires_grad_(requires_grad) for t in (q, k, v))
    r_idx = torch.rand(1, 4, 4, generator=g).argsort(-1)[..., :2].to(device)
    return q, k, v, r_idx


@pytest.fixture
def gpu(monkeypatch):
    """Meta tensors stand for tensors on an NVIDIA GPU; set ``gpu['capability']``."""
    state = dict(capability=(9, 0))
    monkeypatch.setattr(torch.Tensor, 'is_cuda', property(lambda self: True))
    monkeypatch.setattr(torch.cuda, 'get_device_capability',
                        lambda device=None: state['capability'])
    monkeypatch.setattr(torch.version, 'hip', None)
    monkeypatch.setattr(bra_triton, 'INTERPRETER', False)
    return state


@pytest.fixture
def log(monkeypatch):
    """Messages of routed_attention's print_log, and a fresh memory of logged choices."""
    messages = []
    monkeypatch.setattr(routed_attention_module, 'print_log',
                        lambda msg, logger=None, level=None: messages.append((msg, level)))
    monkeypatch.setattr(routed_attention_module, '_logged_choices', set())
    return messages


@contextlib.contextmanager
def deterministic_algorithms():
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(False)


# ------------------------------------------------------------------------ the guards


@pytest.mark.parametrize('dtype', DTYPES)
def test_kernels_may_run_on_a_recent_nvidia_gpu(gpu, dtype):
    assert bra_triton.unsupported_reason(*problem(dtype, 'meta')) is None


def test_cpu_tensors_are_not_for_the_kernels():
    reason = bra_triton.unsupported_reason(*problem())
    assert 'not a CUDA device' in reason


def test_tensors_on_several_devices_are_rejected():
    q, k, v, r_idx = problem()
    reason = bra_triton.unsupported_reason(q, k.to('meta'), v, r_idx)
    assert 'several devices' in reason and 'meta' in reason and 'cpu' in reason


@pytest.mark.parametrize('capability,usable', [
    ((7, 5), {torch.float32}),
    ((8, 0), set(DTYPES)),
    ((9, 0), set(DTYPES)),
])
def test_compute_capability_decides_per_dtype(gpu, capability, usable):
    """bf16 and fp16 dots get tensor-core code from sm_80 on; fp32 dots run on FMA units."""
    gpu['capability'] = capability
    for dtype in DTYPES:
        reason = bra_triton.unsupported_reason(*problem(dtype, 'meta'))
        if dtype in usable:
            assert reason is None
        else:
            assert f'compute capability {capability[0]}.{capability[1]}' in reason
            assert '8.0 or newer' in reason


def test_rocm_builds_are_not_verified(gpu, monkeypatch):
    monkeypatch.setattr(torch.version, 'hip', '6.2')
    assert 'ROCm' in bra_triton.unsupported_reason(*problem(torch.float16, 'meta'))


@pytest.mark.parametrize('head_dq,head_dv,ok', [(128, 128, True), (32, 160, False),
                                                (192, 64, False), (12, 20, True)])
def test_head_dims_beyond_the_launch_configuration_are_rejected(gpu, head_dq, head_dv, ok):
    reason = bra_triton.unsupported_reason(*problem(torch.bfloat16, 'meta', head_dq, head_dv))
    assert (reason is None) == ok
    if not ok:
        assert f'{head_dq} (qk) / {head_dv} (v) exceed 128' in reason


def test_deterministic_mode_rules_out_the_atomic_backward(gpu):
    """The backward adds key/value gradients with atomics; the forward is deterministic."""
    inputs = problem(torch.float16, 'meta', requires_grad=True)
    with deterministic_algorithms():
        assert 'use_deterministic_algorithms' in bra_triton.unsupported_reason(*inputs)
        with torch.no_grad():
            assert bra_triton.unsupported_reason(*inputs) is None
    assert bra_triton.unsupported_reason(*inputs) is None


def load_bra_triton_with(monkeypatch, fake_triton):
    """A fresh copy of bra_triton imported with ``sys.modules['triton'] = fake_triton``."""
    monkeypatch.setitem(sys.modules, 'triton', fake_triton)
    spec = importlib.util.spec_from_file_location('biformer_mm.ops._bra_triton_copy',
                                                  bra_triton.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_triton_older_than_3_is_not_used(monkeypatch):
    module = load_bra_triton_with(monkeypatch, types.SimpleNamespace(__version__='2.3.1'))
    assert not module.TRITON_AVAILABLE
    reason = module.unsupported_reason(*problem())
    assert 'Triton 2.3.1 is older than 3.0' in reason
    with pytest.raises(RuntimeError, match='older than 3.0'):
        module.routed_attention_triton_heads_first(*problem(), 0.1)


# ----------------------------------------------------------------- 'auto' and its log


def test_auto_picks_triton_where_the_guards_and_the_self_check_pass(gpu, log, monkeypatch):
    checked = []
    monkeypatch.setattr(routed_attention_module, 'triton_self_check',
                        lambda *call: checked.append(call))
    q, k, v, r_idx = problem(torch.bfloat16, 'meta')
    assert resolve_attn_impl('auto', q, k, v, r_idx) == 'triton'
    assert len(checked) == 1 and all(a is b for a, b in zip(checked[0], (q, k, v, r_idx)))
    assert log == [("routed attention on meta (torch.bfloat16): attn_impl='auto' uses "
                    "'triton': the fused Triton kernels.", 20)]


def test_auto_falls_back_to_torch_and_says_why_once_per_device_and_dtype(gpu, log):
    gpu['capability'] = (7, 5)
    for _ in range(3):
        assert resolve_attn_impl('auto', *problem(torch.bfloat16, 'meta')) == 'torch'
        assert resolve_attn_impl('auto', *problem(torch.float16, 'meta')) == 'torch'
    assert len(log) == 2
    assert all(level == 20 for _, level in log)  # logging.INFO
    assert "uses 'torch', because meta has compute capability 7.5" in log[0][0]
    assert 'torch.bfloat16' in log[0][0] and 'torch.float16' in log[1][0]


def test_auto_never_picks_the_triton_interpreter(gpu, log, monkeypatch):
    """TRITON_INTERPRET=1 lets the kernels run on any tensors, orders of magnitude
    slower: only an explicit attn_impl='triton' (as tests make) runs them there."""
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    interpreted = load_bra_triton_with(monkeypatch, require_triton())
    assert interpreted.INTERPRETER
    monkeypatch.setattr(routed_attention_module, 'unsupported_reason',
                        interpreted.unsupported_reason)
    monkeypatch.setattr(routed_attention_module, 'triton_self_check', lambda *call: None)
    assert resolve_attn_impl('auto', *problem(device='meta')) == 'torch'
    assert resolve_attn_impl('auto', *problem()) != 'triton'  # CPU tensors
    assert "because TRITON_INTERPRET=1 is set" in log[0][0]
    assert "attn_impl='auto' never picks it" in log[0][0]
    assert interpreted.unsupported_reason(*problem(), interpreter=True) is None


def test_auto_uses_torch_where_the_self_check_failed(gpu, log, monkeypatch):
    monkeypatch.setattr(routed_attention_module, 'triton_self_check',
                        lambda *key: 'the first-use self-check failed: out differs')
    assert resolve_attn_impl('auto', *problem(torch.float16, 'meta')) == 'torch'
    assert 'because the first-use self-check failed: out differs' in log[0][0]


def test_explicit_triton_where_it_cannot_work_raises_with_the_reason(gpu):
    gpu['capability'] = (7, 5)
    with pytest.raises(RuntimeError, match=r"compute capability 7\.5.*attn_impl='torch'"):
        routed_attention(*problem(torch.bfloat16, 'meta'), 0.1, attn_impl='triton')
    gpu['capability'] = (9, 0)
    with deterministic_algorithms(), \
            pytest.raises(RuntimeError, match='use_deterministic_algorithms'):
        routed_attention(*problem(torch.bfloat16, 'meta', requires_grad=True), 0.1,
                         attn_impl='triton')


def test_auto_in_deterministic_mode_trains_with_torch(gpu, log, monkeypatch):
    monkeypatch.setattr(routed_attention_module, 'triton_self_check', lambda *key: None)
    with deterministic_algorithms():
        impl = resolve_attn_impl('auto', *problem(torch.bfloat16, 'meta', requires_grad=True))
    assert impl == 'torch' and 'use_deterministic_algorithms' in log[0][0]


# ------------------------------------------------------------------- the self-check


class CorrectKernels(torch.autograd.Function):
    """Stands in for TritonRoutedAttention with the right results (the torch path);
    records the strides of the q it ran on."""
    calls = []

    @staticmethod
    def forward(ctx, q, k, v, r_idx, layout, scale):
        CorrectKernels.calls.append(q.stride())
        with torch.enable_grad():
            q_, k_, v_ = (t.detach().requires_grad_() for t in (q, k, v))
            out = ChunkedRoutedAttention.apply(q_, k_, v_, r_idx, scale)
        ctx.saved = (q_, k_, v_, out)
        return out.detach()

    @staticmethod
    def backward(ctx, grad_out):
        q_, k_, v_, out = ctx.saved
        grads = torch.autograd.grad(out, (q_, k_, v_), grad_out)
        return grads + (None, None, None)


class WrongGradients(CorrectKernels):
    """Right output, a wrong key gradient (as a race in the atomics would give)."""

    @staticmethod
    def backward(ctx, grad_out):
        dq, dk, dv, *rest = CorrectKernels.backward(ctx, grad_out)
        return (dq, dk * 1.5, dv, *rest)


class CompileError(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *args):
        raise RuntimeError('triton.runtime.errors.OutOfResources: out of resource: '
                           'shared memory, Required: 262144')


@pytest.fixture
def kernels(monkeypatch):
    """Replace the kernels the self-check runs; a fresh memory of self-check results."""
    require_triton()  # the kernel configuration comes from Triton's rules
    monkeypatch.setattr(triton_self_check, '_results', {})
    monkeypatch.delenv(triton_self_check.SELF_CHECK_ENV, raising=False)
    CorrectKernels.calls = []

    def use(function):
        monkeypatch.setattr(triton_self_check, 'TritonRoutedAttention', function)
    return use


def stage(images, heads, regions, tokens, topk, dtype=torch.float16, head_dim=32):
    """Inputs of one BRA call as BiFormer's blocks make them: q, k, v slices of one
    contiguous (3, N, heads, P, W, D) tensor, routing indices (N, P, topk)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, images, heads, regions, tokens, head_dim, generator=g).to(
        dtype).unbind(0)
    r_idx = torch.rand(images, regions, regions, generator=g).argsort(-1)[..., :topk]
    return q, k, v, r_idx


def test_self_check_runs_once_before_each_compiled_kernel_configuration(kernels):
    """Each BiFormer stage has its own region size and top-k, hence kernels compiled
    with other block sizes: each is checked before its first use, and only once."""
    kernels(CorrectKernels)
    stage_1 = stage(2, 2, 16, 49, 1)   # 64x64 tiles
    stage_3 = stage(2, 8, 16, 6, 4)    # 16x32 tiles, other heads
    for call in (stage_1, stage_3, stage_1, stage_3):
        assert triton_self_check.triton_self_check(*call) is None
    assert len(CorrectKernels.calls) == 2
    # Another batch size, and another region size with the same tiles: the same kernels.
    assert triton_self_check.triton_self_check(*stage(1, 2, 16, 49, 1)) is None
    assert triton_self_check.triton_self_check(*stage(2, 2, 16, 40, 1)) is None
    assert len(CorrectKernels.calls) == 2
    # Other head dims, another dtype, a top-k of 1 where it was 4 (an argument Triton
    # specialises on), a q not aligned to 16 bytes: other kernels, checked again.
    q, k, v, r_idx = stage_3
    for call in (stage(2, 8, 16, 6, 4, head_dim=16), stage(2, 8, 16, 6, 4, torch.bfloat16),
                 stage(2, 8, 16, 6, 1), (torch.randn(1 + q.numel()).half()[1:].view_as(q),
                                         k, v, r_idx)):
        assert triton_self_check.triton_self_check(*call) is None
    assert len(CorrectKernels.calls) == 6


def test_self_check_runs_the_kernels_the_call_selects():
    """Its one image of random values is laid out as the call's inputs: same strides,
    same alignment, same sizes but the batch, so Triton selects the same kernels."""
    require_triton()
    # Heads-first views of a channel-packed (N, P, W, 3 * heads * D) map, misaligned.
    packed = torch.randn(2, 4, 7, 3 * 2 * 16 + 1).half()[..., 1:]
    q, k, v = packed.unflatten(-1, (3, 2, 16)).permute(3, 0, 4, 1, 2, 5).unbind(0)
    r_idx = torch.rand(2, 4, 4).argsort(-1)[..., :2].int()
    for call in ((q, k, v, r_idx), stage(2, 8, 16, 6, 4)):
        *problem_qkv, problem_r_idx, grad_out = triton_self_check.self_check_problem(*call)
        assert bra_triton.kernel_key(*problem_qkv, problem_r_idx) == \
            bra_triton.kernel_key(*call)
        assert [t.stride() for t in problem_qkv] == [t.stride() for t in call[:3]]
        assert problem_qkv[0].shape == (1, ) + call[0].shape[1:]


def test_self_check_catches_wrong_gradients_and_warns_once(kernels):
    kernels(WrongGradients)
    call = stage(1, 2, 16, 20, 4)
    with pytest.warns(RuntimeWarning, match=r"self-check on cpu .*top-4.*dk differs.*uses "
                                            r"'torch' for calls with these kernels"):
        reason = triton_self_check.triton_self_check(*call)
    assert reason.startswith('the first-use self-check failed: dk differs')
    with warnings_as_errors():
        assert triton_self_check.triton_self_check(*call) == reason


def test_self_check_turns_a_compile_error_into_a_warning_with_the_error(kernels):
    kernels(CompileError)
    with pytest.warns(RuntimeWarning, match='OutOfResources: out of resource: shared memory'):
        reason = triton_self_check.triton_self_check(*stage(1, 2, 16, 20, 16, torch.bfloat16))
    assert 'OutOfResources' in reason


def test_self_check_can_be_turned_off(kernels, monkeypatch):
    kernels(CompileError)
    monkeypatch.setenv('BIFORMER_MM_TRITON_SELF_CHECK', '0')
    assert triton_self_check.triton_self_check(*stage(1, 2, 16, 20, 4)) is None


def test_self_check_runs_forward_and_backward_under_inference_mode_and_autocast(kernels):
    kernels(CorrectKernels)
    call = stage(2, 2, 16, 7, 3, torch.float32)
    with torch.inference_mode(), torch.autocast('cpu', dtype=torch.bfloat16):
        result = triton_self_check.run_self_check(*(t.clone() for t in call))
    assert result.error is None
    assert set(result.max_errors) == {'out', 'dq', 'dk', 'dv'}
    assert max(result.max_errors.values()) < 1e-5
    assert CorrectKernels.calls == [call[0].stride()]


@contextlib.contextmanager
def warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        yield


# ------------------------------------------- launch device and once-differentiability


class RecordingLaunch:
    """Stands in for a KernelLaunch: computes with torch and records the current device
    when launched."""

    def __init__(self, seen, name, compute):
        self.seen, self.name, self.compute = seen, name, compute

    def __call__(self):
        self.seen.append((self.name, current_device[0]))
        self.compute()


current_device = [None]


@pytest.fixture
def torch_computed_kernels(monkeypatch):
    """TritonRoutedAttention with its launches replaced by torch computations and
    on_device by a recorder; returns the list of (launch, device it ran under)."""
    seen = []

    @contextlib.contextmanager
    def on_device(device):
        current_device[0] = device
        try:
            yield
        finally:
            current_device[0] = None

    def forward_launch(q, k, v, r_idx, out, lse, layout, scale):
        def compute():
            out.copy_(ChunkedRoutedAttention.apply(q, k, v, r_idx, scale))
        return RecordingLaunch(seen, 'forward', compute)

    def backward_launch(q, k, v, r_idx, out, lse, grad_out, dq, dk, dv, layout, scale):
        def compute():
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_() for t in (q, k, v)]
                again = ChunkedRoutedAttention.apply(*leaves, r_idx, scale)
                for buffer, grad in zip((dq, dk, dv),
                                        torch.autograd.grad(again, leaves, grad_out)):
                    buffer.copy_(grad)
        return RecordingLaunch(seen, 'backward', compute)

    monkeypatch.setattr(bra_triton, 'on_device', on_device)
    monkeypatch.setattr(bra_triton, 'forward_launch', forward_launch)
    monkeypatch.setattr(bra_triton, 'backward_launch', backward_launch)
    return seen


def triton_function(q, k, v, r_idx, scale=0.1):
    layout = bra_triton.input_layout(q, k, v, r_idx)
    return bra_triton.TritonRoutedAttention.apply(q, k, v, r_idx, layout, scale)


def test_every_launch_runs_under_the_inputs_device(torch_computed_kernels):
    q, k, v, r_idx = problem(requires_grad=True)
    triton_function(q, k, v, r_idx).sum().backward()
    assert torch_computed_kernels == [('forward', q.device), ('backward', q.device)]


def test_triton_function_gives_the_gradients_of_the_torch_path(torch_computed_kernels):
    """The stand-in launches compute with the torch path, so this checks the Function's
    plumbing: outputs and gradients in the inputs' layout and dtype."""
    inputs = problem(requires_grad=True)
    grad_out = torch.randn(1, 2, 4, 6, 32)
    ours = torch.autograd.grad(triton_function(*inputs), inputs[:3], grad_out)
    theirs = torch.autograd.grad(routed_attention_gather(*inputs, 0.1), inputs[:3], grad_out)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)


def test_on_device_selects_the_tensors_cuda_device():
    guard = bra_triton.on_device(torch.device('cuda', 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1


def double_backward(function, loss=lambda out: out.square().sum()):
    q, k, v, r_idx = problem(requires_grad=True)
    out = function(q, k, v, r_idx)
    (grad_q,) = torch.autograd.grad(loss(out), q, create_graph=True)
    grad_q.sum().backward()


@pytest.mark.parametrize('loss', [lambda out: out.square().sum(), lambda out: out.sum()],
                         ids=['square', 'sum'])
def test_triton_attention_refuses_double_backward_naming_the_fix(torch_computed_kernels,
                                                                 loss):
    """With out.sum() the output gradient needs no grad, where once_differentiable let
    the second-order terms through it silently be zero."""
    with pytest.raises(RuntimeError, match=r"differentiable once.*attn_impl='gather'"):
        double_backward(triton_function, loss)
