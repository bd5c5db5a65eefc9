"""The routed attention as a PyTorch operator: ``torch.ops.biformer_mm.routed_attention``.

``torch.ops.biformer_mm.routed_attention(q, k, v, r_idx, scale) -> Tensor`` computes
:func:`~.routed_attention.routed_attention_gather`'s function on heads-first inputs (see
:mod:`.routed_attention` for the layouts). It is registered with
``torch.library.custom_op`` (torch >= 2.4; :data:`~.routed_attention.OPERATOR` says
whether it exists; older versions run the autograd Functions), so
``torch.compile``, ``torch.export`` and ``torch.library.opcheck`` see one opaque node
with a shape function (``register_fake``) instead of the chunk loop, which inductor
would otherwise unroll into thousands of ops. Its kernels:

- CPU: :func:`~.chunked_routed_attention.chunked_forward`. It writes into
  ``torch.empty`` buffers with ``out=``, which is fine inside an operator's kernel:
  tracing sees only the operator.
- CUDA: the fused Triton kernels where ``attn_impl='auto'`` would run them
  (:func:`~.routed_attention.resolve_attn_impl`: :func:`~.bra_triton.unsupported_reason`
  and the first-use self-check), the row selection + SDPA path
  (:func:`~.routed_attention.routed_attention_sdpa`) otherwise. The choice is logged
  once per device, dtype and outcome.

The backward is an operator too, ``torch.ops.biformer_mm.routed_attention_backward(
grad_out, q, k, v, r_idx, out, scale) -> (dq, dk, dv)``, connected with
``torch.library.register_autograd``. The forward has one output (no log-sum-exp), so the
backward recomputes the attention probabilities: on the CPU one softmax per chunk
(:func:`~.chunked_routed_attention.chunked_backward`); on CUDA the backward runs the
chosen implementation forward again under autograd and differentiates it, one extra
attention forward per step. Eager CUDA calls therefore keep the autograd Functions,
which save what their backward needs (see :func:`~.routed_attention.routed_attention`);
the operator serves ``torch.compile`` there.

Differentiable once: differentiating ``routed_attention_backward`` (a second-order
gradient) raises :data:`~.chunked_routed_attention.DOUBLE_BACKWARD_ERROR`, which names
``attn_impl='gather'`` for higher-order gradients.
"""
import logging
from typing import Any, Optional, Set, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor

from .bra_triton import routed_attention_triton_heads_first
from .chunked_routed_attention import (DOUBLE_BACKWARD_ERROR, chunked_backward,
                                       chunked_forward)
from .routed_attention import OPERATOR, resolve_attn_impl, routed_attention_sdpa

_logged: Set[Tuple[str, torch.dtype]] = set()


def _cuda_implementation(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor):
    """The function the CUDA kernels run: Triton where ``'auto'`` picks it, else SDPA."""
    if resolve_attn_impl('auto', q, k, v, r_idx) == 'triton':
        return routed_attention_triton_heads_first
    return routed_attention_sdpa


def _check(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor) -> None:
    """The shape contract every kernel and the fake share."""
    if q.dim() != 5 or k.shape != q.shape or v.shape[:-1] != q.shape[:-1]:
        raise ValueError('biformer_mm::routed_attention expects heads-first q, k '
                         '(N, M, P, W, Dqk) and v (N, M, P, W, Dv), got '
                         f'{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f'biformer_mm::routed_attention: q, k, v must share a dtype, got '
                         f'{q.dtype}, {k.dtype}, {v.dtype}')
    if r_idx.dim() != 3 or r_idx.is_floating_point():
        raise ValueError(f'biformer_mm::routed_attention expects an integer r_idx '
                         f'(N, P, K), got {tuple(r_idx.shape)} {r_idx.dtype}')


if OPERATOR:

    @torch.library.custom_op('biformer_mm::routed_attention', mutates_args=())
    def routed_attention_op(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                            scale: float) -> Tensor:
        """Routed attention; see the module docstring. Returns a contiguous
        ``(N, M, P, W, Dv)`` tensor in the dtype of ``q``."""
        _check(q, k, v, r_idx)
        if q.device.type == 'cpu':
            key = (str(q.device), q.dtype)
            if key not in _logged:
                _logged.add(key)
                print_log(f"routed attention on {q.device} ({q.dtype}): the 'chunked' "
                          f'algorithm (biformer_mm::routed_attention).', logger='current',
                          level=logging.INFO)
            return chunked_forward(q, k, v, r_idx, scale)
        out = _cuda_implementation(q, k, v, r_idx)(q, k, v, r_idx, scale)
        return out.contiguous().to(q.dtype)

    @routed_attention_op.register_fake
    def _routed_attention_fake(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                               scale: float) -> Tensor:
        _check(q, k, v, r_idx)
        return q.new_empty(q.shape[:-1] + v.shape[-1:])

    @torch.library.custom_op('biformer_mm::routed_attention_backward', mutates_args=())
    def routed_attention_backward_op(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                     r_idx: Tensor, out: Tensor, scale: float
                                     ) -> Tuple[Tensor, Tensor, Tensor]:
        """Gradients of ``biformer_mm::routed_attention`` (whose result on these inputs
        is ``out``) with respect to ``q``, ``k`` and ``v``: contiguous, shaped and typed
        like them."""
        _check(q, k, v, r_idx)
        if q.device.type == 'cpu':
            return chunked_backward(grad_out, q, k, v, r_idx, out, scale)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            out = _cuda_implementation(*leaves, r_idx)(*leaves, r_idx, scale)
            grads = torch.autograd.grad(out, leaves, grad_out)
        return tuple(g.contiguous().to(t.dtype) for g, t in zip(grads, (q, k, v)))

    @routed_attention_backward_op.register_fake
    def _routed_attention_backward_fake(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                        r_idx: Tensor, out: Tensor, scale: float
                                        ) -> Tuple[Tensor, Tensor, Tensor]:
        _check(q, k, v, r_idx)
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    def _setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
        q, k, v, r_idx, scale = inputs
        ctx.save_for_backward(q, k, v, r_idx, output)
        ctx.scale = scale

    def _backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        q, k, v, r_idx, out = ctx.saved_tensors
        dq, dk, dv = routed_attention_backward_op(grad_out, q, k, v, r_idx, out, ctx.scale)
        return dq, dk, dv, None, None

    def _refuse_double_backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError(f'biformer_mm::routed_attention: {DOUBLE_BACKWARD_ERROR}')

    routed_attention_op.register_autograd(_backward, setup_context=_setup_context)
    # Runs only when a gradient of the gradients is asked for (create_graph=True, then
    # a second grad): the refusal costs nothing in first-order training.
    routed_attention_backward_op.register_autograd(_refuse_double_backward)
