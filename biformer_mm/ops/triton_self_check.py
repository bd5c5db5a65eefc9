"""A self-check of the fused Triton kernels on first use.

The first time ``attn_impl='auto'`` would run the kernels for a (device, dtype, head dims)
combination, :func:`triton_self_check` runs them forward and backward once on a small
routed problem and compares output and q/k/v gradients with the ``'torch'``
implementation, evaluated in float64 on the CPU from the same inputs. A compile error, a
launch error or a mismatch is warned about once, with the error, and ``'auto'`` uses
``'torch'`` for that combination from then on. The small problem has the real call's
region size ``W`` and top-k, so it runs the kernel configuration (and compilation) the
real call uses (see :func:`self_check_problem`).

Set the environment variable ``BIFORMER_MM_TRITON_SELF_CHECK=0`` to skip it.
"""
import os
import time
import warnings
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .bra_triton import TritonRoutedAttention, input_layout
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
    seconds: float
    max_errors: Dict[str, float]


_results: Dict[Tuple[str, torch.dtype, int, int], SelfCheckResult] = {}


def self_check_enabled() -> bool:
    """Whether :func:`triton_self_check` runs (``BIFORMER_MM_TRITON_SELF_CHECK`` is not
    ``0``)."""
    return os.environ.get(SELF_CHECK_ENV, '1') != '0'


def self_check_problem(dtype: torch.dtype, head_dq: int, head_dv: int, w: int, topk: int,
                       regions: int) -> Tuple[Tensor, ...]:
    """The self-check's inputs, on the CPU: heads-first ``q, k, v`` and an output
    gradient of 1 image, 2 heads and ``regions`` regions of ``w`` tokens in ``dtype``,
    and contiguous routing indices ``(1, regions, topk)`` (distinct regions per row).

    With the model call's ``regions``, ``w`` and ``topk`` every integer the kernels
    specialise on has the divisibility it has in the model, so the self-check compiles
    nothing that call would not (``tools/gpu_check.py --compile-only`` checks this for
    BiFormer-T/S/B).
    """
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, regions, w, head_dq, generator=gen) for _ in range(2))
    v = torch.randn(1, 2, regions, w, head_dv, generator=gen)
    r_idx = torch.rand(1, regions, regions, generator=gen).argsort(-1)[..., :topk]
    grad_out = torch.randn(1, 2, regions, w, head_dv, generator=gen)
    return tuple(t.to(dtype) for t in (q, k, v, grad_out)) + (r_idx.contiguous(),)


def _output_and_gradients(attention, q: Tensor, k: Tensor, v: Tensor, grad_out: Tensor
                          ) -> Dict[str, Tensor]:
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attention(*leaves)
    out.backward(grad_out)
    return {name: t.detach().cpu().double()
            for name, t in zip(('out', 'dq', 'dk', 'dv'), [out] + [t.grad for t in leaves])}


def run_self_check(device: torch.device, dtype: torch.dtype, head_dq: int, head_dv: int,
                   w: int = 20, topk: int = 4, regions: int = 16) -> SelfCheckResult:
    """Run the kernels forward and backward once on a small routed problem on ``device``
    and compare with the ``'torch'`` implementation in float64 on the CPU.

    Not cached: :func:`triton_self_check` is the cached entry point of ``'auto'``.

    Args:
        device (torch.device): Where the kernels run (CUDA, or CPU in the interpreter).
        dtype (torch.dtype): Input dtype.
        head_dq (int): Query/key channels per head.
        head_dv (int): Value channels per head.
        w (int): Tokens per region. Defaults to 20 (Mask R-CNN stage 3).
        topk (int): Routed regions per query region. Defaults to 4.
        regions (int): Regions per image. Defaults to 16.

    Returns:
        SelfCheckResult: The error (``None`` if the kernels agree), the time taken and the
        largest differences.
    """
    start = time.perf_counter()
    q, k, v, grad_out, r_idx = self_check_problem(dtype, head_dq, head_dv, w, topk, regions)
    scale = head_dq ** -0.5
    layout = input_layout(q, k, v, r_idx, None)
    try:
        # Gradients even when the model runs under no_grad / inference_mode, in the
        # inputs' dtype whatever autocast says.
        with torch.inference_mode(False), torch.enable_grad(), \
                torch.autocast(device.type, enabled=False):
            got = _output_and_gradients(
                lambda q_, k_, v_: TritonRoutedAttention.apply(q_, k_, v_, r_idx.to(device),
                                                               layout, scale),
                *(t.to(device) for t in (q, k, v, grad_out)))
            expected = _output_and_gradients(
                lambda q_, k_, v_: ChunkedRoutedAttention.apply(q_, k_, v_, r_idx, scale),
                *(t.double() for t in (q, k, v, grad_out)))
    except Exception as e:  # a compile or launch error is the finding itself
        message = f'{type(e).__name__}: {e}'.strip().splitlines()
        return SelfCheckResult(' / '.join(message[:3])[:500], time.perf_counter() - start, {})
    atol, rtol = TOLERANCES[dtype]
    max_errors, error = {}, None
    for name, ref in expected.items():
        diff = (got[name] - ref).abs()
        max_errors[name] = float(diff.max())
        bound = atol * max(1.0, float(ref.abs().max())) + rtol * ref.abs()
        if error is None and not bool((diff <= bound).all()):
            error = (f'{name} differs from the torch implementation by up to '
                     f'{max_errors[name]:.3g} (tolerance atol {atol}, rtol {rtol})')
    return SelfCheckResult(error, time.perf_counter() - start, max_errors)


def triton_self_check(device: torch.device, dtype: torch.dtype, head_dq: int, head_dv: int,
                      w: int, topk: int, regions: int) -> Optional[str]:
    """Why the kernels must not be used for this (device, dtype, head dims), or ``None``.

    Runs :func:`run_self_check` once per combination (with the first call's ``w``,
    ``topk`` and ``regions``) and remembers the outcome; a failure is warned about once. ``None`` without
    running anything when ``BIFORMER_MM_TRITON_SELF_CHECK=0``.

    Args:
        device (torch.device): The inputs' device.
        dtype (torch.dtype): The inputs' dtype.
        head_dq (int): Query/key channels per head.
        head_dv (int): Value channels per head.
        w (int): Tokens per region of the call.
        topk (int): Routed regions per query region of the call.
        regions (int): Regions per image of the call.

    Returns:
        Optional[str]: ``'the first-use self-check failed: ...'``, or ``None``.
    """
    if not self_check_enabled():
        return None
    key = (str(device), dtype, head_dq, head_dv)
    if key not in _results:
        result = _results[key] = run_self_check(device, dtype, head_dq, head_dv, w, topk,
                                                regions)
        if result.error is not None:
            warnings.warn(
                f'biformer_mm: the fused Triton routed attention failed its first-use '
                f'self-check on {device} ({dtype}, head dims {head_dq}/{head_dv}): '
                f"{result.error.rstrip('.')}. attn_impl='auto' uses 'torch' there from "
                f"now on. "
                f'Please report this with the output of tools/gpu_check.py.',
                RuntimeWarning, stacklevel=2)
    error = _results[key].error
    return None if error is None else f'the first-use self-check failed: {error}'
