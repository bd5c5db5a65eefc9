"""The routed attention as a PyTorch operator: ``torch.ops.biformer_mm.routed_attention``.

``torch.ops.biformer_mm.routed_attention(q, k, v, r_idx, scale, attn_impl='auto') ->
Tensor`` computes :func:`~.routed_attention.routed_attention_gather`'s function on
heads-first inputs. It is a ``torch.library.custom_op`` (torch >= 2.4,
:data:`~.routed_attention.OPERATOR`; older versions run the autograd Functions), so
``torch.compile`` and ``torch.export`` see one node with a shape function
(``register_fake``) instead of the chunk loop, which inductor would unroll into thousands
of ops. Its kernel runs the algorithm ``attn_impl`` resolves to
(:func:`~.routed_attention.resolve_algorithm`, ``'auto'``'s choice logged): on the CPU
:func:`~.cpp_routed_attention.cpp_forward` (``'cpp'``) or
:func:`~.chunked_routed_attention.chunked_forward` (``'chunked'``; its ``out=`` writes
are invisible to tracing inside an operator); on CUDA the fused Triton kernels
(``'triton'``) or the row selection + SDPA path (``'sdpa'``).

The backward is an operator too, ``torch.ops.biformer_mm.routed_attention_backward(
grad_out, q, k, v, r_idx, out, scale, attn_impl='auto') -> (dq, dk, dv)``, connected with
``torch.library.register_autograd``. The forward has one output (no log-sum-exp), so the
backward recomputes the attention probabilities: on the CPU one softmax per chunk
(:func:`~.chunked_routed_attention.chunked_backward`, for both CPU forwards); on CUDA the
backward runs the chosen implementation forward again under autograd and differentiates
it, one extra attention forward per step. Eager CUDA calls therefore keep the autograd
Functions, which save what their backward needs (see
:func:`~.routed_attention.routed_attention`); the operator serves ``attn_impl='auto'``
under ``torch.compile`` there.

Differentiable once: differentiating ``routed_attention_backward`` (a second-order
gradient) raises :data:`~.chunked_routed_attention.DOUBLE_BACKWARD_ERROR`, which names
``attn_impl='gather'`` for higher-order gradients.

A third operator serves CPU inference, eager and compiled:
``torch.ops.biformer_mm.routed_attention_map(qkv, r_idx, n_win, num_heads, qk_dims, scale,
h, w) -> Tensor`` runs the C++ kernel's map entry
(:func:`~.cpp_routed_attention.cpp_map_forward`) on the BRA module's padded qkv map and
returns the ``(N, h, w, Cv)`` output map. It has a fake implementation and no gradient:
differentiating it raises, and the module calls it only where no gradient is asked for
(:func:`~.routed_attention.runs_map_kernel`).
"""
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor

from .bra_triton import routed_attention_triton_heads_first
from .chunked_routed_attention import (DOUBLE_BACKWARD_ERROR, check_inputs,
                                       chunked_backward, chunked_forward)
from .cpp_routed_attention import cpp_forward, cpp_map_forward
from .routed_attention import OPERATOR, resolve_algorithm, routed_attention_sdpa

_CPU_KERNELS = {'cpp': cpp_forward, 'chunked': chunked_forward}
_DEVICE_KERNELS = {'triton': routed_attention_triton_heads_first,
                   'sdpa': routed_attention_sdpa}


def _forward(attn_impl: str, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor
             ) -> Callable[..., Tensor]:
    """The forward function the operator runs for ``attn_impl`` on these inputs: one of
    :data:`_CPU_KERNELS` on the CPU, of :data:`_DEVICE_KERNELS` elsewhere; ``ValueError``
    for any other algorithm."""
    algorithm = resolve_algorithm(attn_impl, q, k, v, r_idx)
    kernels = _CPU_KERNELS if q.device.type == 'cpu' else _DEVICE_KERNELS
    if algorithm not in kernels:
        raise ValueError(f'biformer_mm::routed_attention runs {tuple(kernels)} on '
                         f"{q.device.type}, not attn_impl={attn_impl!r} ('{algorithm}')")
    return kernels[algorithm]


if OPERATOR:

    @torch.library.custom_op('biformer_mm::routed_attention', mutates_args=())
    def routed_attention_op(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float,
                            attn_impl: str = 'auto') -> Tensor:
        """Routed attention; see the module docstring. Returns a contiguous
        ``(N, M, P, W, Dv)`` tensor in the dtype of ``q``."""
        check_inputs(q, k, v, r_idx)
        out = _forward(attn_impl, q, k, v, r_idx)(q, k, v, r_idx, scale)
        return out.contiguous().to(q.dtype)

    @routed_attention_op.register_fake
    def _routed_attention_fake(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float,
                               attn_impl: str = 'auto') -> Tensor:
        check_inputs(q, k, v, r_idx)
        return q.new_empty(q.shape[:-1] + v.shape[-1:])

    @torch.library.custom_op('biformer_mm::routed_attention_backward', mutates_args=())
    def routed_attention_backward_op(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                     r_idx: Tensor, out: Tensor, scale: float,
                                     attn_impl: str = 'auto'
                                     ) -> Tuple[Tensor, Tensor, Tensor]:
        """Gradients of ``biformer_mm::routed_attention`` (whose result on these inputs
        is ``out``) with respect to ``q``, ``k`` and ``v``: contiguous, shaped and typed
        like them."""
        check_inputs(q, k, v, r_idx)
        if q.device.type == 'cpu':
            return chunked_backward(grad_out, q, k, v, r_idx, out, scale)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            out = _forward(attn_impl, *leaves, r_idx)(*leaves, r_idx, scale)
            grads = torch.autograd.grad(out, leaves, grad_out)
        return tuple(g.contiguous().to(t.dtype) for g, t in zip(grads, (q, k, v)))

    @routed_attention_backward_op.register_fake
    def _routed_attention_backward_fake(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor,
                                        r_idx: Tensor, out: Tensor, scale: float,
                                        attn_impl: str = 'auto'
                                        ) -> Tuple[Tensor, Tensor, Tensor]:
        check_inputs(q, k, v, r_idx)
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    def _setup_context(ctx: Any, inputs: Tuple[Any, ...], output: Tensor) -> None:
        q, k, v, r_idx, scale, attn_impl = inputs
        ctx.save_for_backward(q, k, v, r_idx, output)
        ctx.scale, ctx.attn_impl = scale, attn_impl

    def _backward(ctx: Any, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        q, k, v, r_idx, out = ctx.saved_tensors
        dq, dk, dv = routed_attention_backward_op(grad_out, q, k, v, r_idx, out, ctx.scale,
                                                  ctx.attn_impl)
        return dq, dk, dv, None, None, None

    def _refuse_double_backward(ctx: Any, *grads: Tensor) -> None:
        raise RuntimeError(f'biformer_mm::routed_attention: {DOUBLE_BACKWARD_ERROR}')

    routed_attention_op.register_autograd(_backward, setup_context=_setup_context)
    # Runs only when a gradient of the gradients is asked for (create_graph=True, then
    # a second grad): the refusal costs nothing in first-order training.
    routed_attention_backward_op.register_autograd(_refuse_double_backward)

    @torch.library.custom_op('biformer_mm::routed_attention_map', mutates_args=())
    def routed_attention_map_op(qkv: Tensor, r_idx: Tensor, n_win: int, num_heads: int,
                                qk_dims: int, scale: float, h: int, w: int) -> Tensor:
        """The C++ kernel's map entry; see the module docstring."""
        return cpp_map_forward(qkv, r_idx, n_win, num_heads, qk_dims, scale, (h, w))

    @routed_attention_map_op.register_fake
    def _routed_attention_map_fake(qkv: Tensor, r_idx: Tensor, n_win: int, num_heads: int,
                                   qk_dims: int, scale: float, h: int, w: int) -> Tensor:
        return qkv.new_empty(qkv.shape[0], h, w, qkv.shape[-1] - 2 * qk_dims)

    def _refuse_backward(ctx: Any, grad_out: Tensor) -> None:
        raise RuntimeError('biformer_mm::routed_attention_map is forward only (inference); '
                           'differentiate biformer_mm::routed_attention, which the BRA '
                           'module calls when a gradient is asked for.')

    routed_attention_map_op.register_autograd(_refuse_backward)
