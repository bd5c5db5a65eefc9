"""The routed attention as a PyTorch operator: ``torch.ops.biformer_mm.routed_attention``.

``torch.ops.biformer_mm.routed_attention(q, k, v, r_idx, scale) -> Tensor`` computes
:func:`~.routed_attention.routed_attention_gather`'s function on heads-first inputs. It is
a ``torch.library.custom_op`` (torch >= 2.4, :data:`~.routed_attention.OPERATOR`; older
versions run the autograd Functions), so ``torch.compile`` and ``torch.export`` see one
node with a shape function (``register_fake``) instead of the chunk loop, which inductor
would unroll into thousands of ops. Its kernels: on the CPU
:func:`~.chunked_routed_attention.chunked_forward` (its ``out=`` writes are invisible
to tracing inside an operator); on CUDA the fused Triton kernels where ``attn_impl='auto'``
would run them (:func:`~.routed_attention.resolve_attn_impl`, logged), the row selection
+ SDPA path (:func:`~.routed_attention.routed_attention_sdpa`) otherwise.

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
from .chunked_routed_attention import (DOUBLE_BACKWARD_ERROR, check_inputs,
                                       chunked_backward, chunked_forward)
from .routed_attention import OPERATOR, resolve_attn_impl, routed_attention_sdpa

_logged: Set[Tuple[str, torch.dtype]] = set()


def _cuda_implementation(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor):
    """The function the CUDA kernels run: Triton where ``'auto'`` picks it, else SDPA."""
    if resolve_attn_impl('auto', q, k, v, r_idx) == 'triton':
        return routed_attention_triton_heads_first
    return routed_attention_sdpa


if OPERATOR:

    @torch.library.custom_op('biformer_mm::routed_attention', mutates_args=())
    def routed_attention_op(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                            scale: float) -> Tensor:
        """Routed attention; see the module docstring. Returns a contiguous
        ``(N, M, P, W, Dv)`` tensor in the dtype of ``q``."""
        check_inputs(q, k, v, r_idx)
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
        check_inputs(q, k, v, r_idx)
        return q.new_empty(q.shape[:-1] + v.shape[-1:])

    @torch.library.custom_op('biformer_mm::routed_attention_backward', mutates_args=())
    def routed_attention_backward_op(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                     r_idx: Tensor, out: Tensor, scale: float
                                     ) -> Tuple[Tensor, Tensor, Tensor]:
        """Gradients of ``biformer_mm::routed_attention`` (whose result on these inputs
        is ``out``) with respect to ``q``, ``k`` and ``v``: contiguous, shaped and typed
        like them."""
        check_inputs(q, k, v, r_idx)
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
        check_inputs(q, k, v, r_idx)
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
