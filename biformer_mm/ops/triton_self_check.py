"""A self-check of the fused Triton kernels before each compiled kernel's first use.

Triton compiles one kernel per combination of constexprs (block sizes, head dims, warps)
and of the properties it specialises the other arguments on (dtypes, 16-byte alignment,
integers equal to 1 or divisible by 16); BiFormer's stages differ in region size and
top-k, so each stage runs kernels of its own. Before ``attn_impl='auto'`` first runs a
call whose kernels (:func:`~.bra_triton.kernel_key`) have not been checked,
:func:`triton_self_check` runs them forward and backward once on one image of random
values laid out exactly as the call's inputs (so Triton selects the same compiled
kernels), and compares output and q/k/v gradients with the ``'chunked'`` algorithm,
evaluated in float64 on the CPU from the same inputs. A compile error, a launch error or
a mismatch is warned about once, with the error, and ``'auto'`` uses ``'torch'`` for
calls with that kernel configuration from then on.

Set the environment variable ``BIFORMER_MM_TRITON_SELF_CHECK=0`` to skip it.
"""
import os
import warnings
from typing import Dict, Hashable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .bra_triton import (TritonRoutedAttention, alignment, input_layout, kernel_key,
                         strided_empty)
from .chunked_routed_attention import ChunkedRoutedAttention

SELF_CHECK_ENV = 'BIFORMER_MM_TRITON_SELF_CHECK'
"""Environment variable; ``0`` turns the self-check off."""

TOLERANCES = {torch.float32: (1e-4, 1e-4), torch.float16: (2e-2, 1e-2),
              torch.bfloat16: (6e-2, 5e-2)}
"""``(atol, rtol)`` per input dtype against the float64 reference. ``atol`` is relative
to the largest reference magnitude of each compared tensor (at least 1)."""


class SelfCheckResult(NamedTuple):
    """Outcome of one self-check.

    ``error`` is ``None`` when the kernels agreed with the reference; otherwise it says
    what failed. ``max_errors`` holds the largest absolute difference of the output and
    of each gradient (empty when the kernels raised).
    """
    error: Optional[str]
    max_errors: Dict[str, float]


_results: Dict[Hashable, SelfCheckResult] = {}


def _laid_out_like(t: Tensor, values: Tensor) -> Tensor:
    """``values`` (one image of ``t``) in a new tensor on ``t``'s device with ``t``'s
    dtype, strides and :func:`~.bra_triton.alignment`."""
    return strided_empty(t.dtype, (1, *t.shape[1:]), t.stride(), alignment(t),
                         t.device).copy_(values)


def self_check_problem(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor) -> Tuple[Tensor, ...]:
    """The self-check's inputs for a call on ``q, k, v, r_idx``: one image of random
    ``q, k, v`` laid out as the call's (:func:`~.bra_triton.kernel_key` is the same),
    distinct random routing indices per row and a contiguous output gradient, all on
    the call's device."""
    gen = torch.Generator().manual_seed(0)
    n, heads, p, w, _ = q.shape
    qkv = tuple(_laid_out_like(t, torch.randn(1, *t.shape[1:], generator=gen))
                for t in (q, k, v))
    routes = torch.rand(1, p, p, generator=gen).argsort(-1)[..., :r_idx.shape[-1]]
    grad_out = torch.randn(1, *v.shape[1:], generator=gen).to(v.device, v.dtype)
    return qkv + (_laid_out_like(r_idx, routes), grad_out)


def _output_and_gradients(attention, q: Tensor, k: Tensor, v: Tensor, grad_out: Tensor
                          ) -> Dict[str, Tensor]:
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]  # keeps the strides
    out = attention(*leaves)
    out.backward(grad_out)
    return {name: t.detach().cpu().double()
            for name, t in zip(('out', 'dq', 'dk', 'dv'), [out] + [t.grad for t in leaves])}


def run_self_check(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor) -> SelfCheckResult:
    """Run the kernels a call on ``q, k, v, r_idx`` uses forward and backward once on
    :func:`self_check_problem` and compare with the ``'chunked'`` algorithm in
    float64 on the CPU.

    Not cached: :func:`triton_self_check` is the cached entry point of ``'auto'``.

    Returns:
        SelfCheckResult: The error (``None`` if the kernels agree) and the largest
        differences.
    """
    try:
        # Gradients even when the model runs under no_grad / inference_mode, in the
        # inputs' dtype whatever autocast says.
        with torch.inference_mode(False), torch.enable_grad(), \
                torch.autocast(q.device.type, enabled=False):
            q, k, v, r_idx, grad_out = self_check_problem(q, k, v, r_idx)
            scale = q.shape[-1]**-0.5
            layout = input_layout(q, k, v, r_idx)
            got = _output_and_gradients(
                lambda *qkv: TritonRoutedAttention.apply(*qkv, r_idx, layout, scale),
                q, k, v, grad_out)
            r_idx = r_idx.cpu()
            expected = _output_and_gradients(
                lambda *qkv: ChunkedRoutedAttention.apply(*qkv, r_idx, scale),
                *(t.detach().cpu().double() for t in (q, k, v, grad_out)))
    except Exception as e:  # a compile or launch error is the finding itself
        message = f'{type(e).__name__}: {e}'.strip().splitlines()
        return SelfCheckResult(' / '.join(message[:3])[:500], {})
    atol, rtol = TOLERANCES[q.dtype]
    max_errors, error = {}, None
    for name, ref in expected.items():
        diff = (got[name] - ref).abs()
        max_errors[name] = float(diff.max())
        bound = atol * max(1.0, float(ref.abs().max())) + rtol * ref.abs()
        if error is None and not bool((diff <= bound).all()):
            error = (f'{name} differs from the torch implementation by up to '
                     f'{max_errors[name]:.3g} (tolerance atol {atol}, rtol {rtol})')
    return SelfCheckResult(error, max_errors)


def triton_self_check(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor) -> Optional[str]:
    """Why the kernels must not be used for a call on these inputs, or ``None``.

    Runs :func:`run_self_check` once per compiled kernel configuration
    (:func:`~.bra_triton.kernel_key`: device, dtype, block sizes, head dims, warps and
    the argument specialisation of the forward and backward kernels) and remembers the
    outcome; a failure is warned about once. ``None`` without running anything when
    ``BIFORMER_MM_TRITON_SELF_CHECK=0``.

    Args:
        q (Tensor): Queries ``(N, heads, P, W, Dqk)`` of the call.
        k (Tensor): Keys ``(N, heads, P, W, Dqk)`` of the call.
        v (Tensor): Values ``(N, heads, P, W, Dv)`` of the call.
        r_idx (Tensor): Routed key regions ``(N, P, K)`` of the call.

    Returns:
        Optional[str]: ``'the first-use self-check failed: ...'``, or ``None``.
    """
    if os.environ.get(SELF_CHECK_ENV, '1') == '0':
        return None
    key = kernel_key(q, k, v, r_idx)
    if key not in _results:
        result = _results[key] = run_self_check(q, k, v, r_idx)
        if result.error is not None:
            warnings.warn(
                f'biformer_mm: the fused Triton routed attention failed its first-use '
                f'self-check on {q.device} ({q.dtype}, head dims {q.shape[-1]}/'
                f'{v.shape[-1]}, {q.shape[-2]} tokens per region, top-{r_idx.shape[-1]}): '
                f"{result.error.rstrip('.')}. attn_impl='auto' uses 'torch' for calls "
                f"with these kernels from now on. Please report this with the output "
                f"of tools/gpu_check.py.", RuntimeWarning, stacklevel=2)
    error = _results[key].error
    return None if error is None else f'the first-use self-check failed: {error}'
