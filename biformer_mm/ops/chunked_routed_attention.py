"""Routed attention in cache-sized chunks: the CPU algorithm (``attn_impl='chunked'``,
which ``'torch'`` runs on the CPU, and ``'auto'`` where the fused C++ kernel cannot).

Routing makes each key region serve many query regions, so gathering the routed
key/values for every query region at once writes a ``topk``-fold copy of the key/value
map (16x at BiFormer's third stage), and its gradient another. On a CPU that traffic,
and the page faults of allocating it afresh at every block, cost more than the
attention itself. Here the ``(image, head, region)`` query rows are processed in
contiguous chunks whose gathered key/values fit in a few MiB of cache, writing into
preallocated buffers. The backward recomputes each chunk's probabilities (one softmax of
the chunk's logits) and adds the key/value gradients into map-sized buffers with
``index_add_``: no ``topk``-fold tensor ever exists, and the backward needs only the
inputs and the output. Arithmetic runs in float32 (float64 for float64 inputs), whatever the
input dtype.

:func:`chunked_forward` and :func:`chunked_backward` are the two kernels; the operator
``torch.ops.biformer_mm.routed_attention`` (:mod:`.routed_attention_op`, torch >= 2.4)
runs them on the CPU, and :class:`ChunkedRoutedAttention` is their autograd Function:
for torch versions without ``torch.library.custom_op``, for ``'chunked'`` off the CPU,
and as the Triton self-check's reference.
"""
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

from .export_path import is_compiling

CHUNK_BYTES = 4 * 2**20
"""Bytes of gathered keys and values per chunk."""

DOUBLE_BACKWARD_ERROR = (
    "the routed attention operator and kernels ('auto', 'torch', 'chunked', 'cpp', "
    "'triton') are differentiable once, so they cannot differentiate twice (their "
    "backward writes into preallocated buffers); for higher-order gradients use "
    "attn_impl='gather', the plain-PyTorch algorithm.")
"""The error of every attempt to differentiate the operator or the ``'chunked'``,
``'cpp'`` and ``'triton'`` kernels twice (``'auto'`` and ``'torch'`` where they run
these); eager ``'sdpa'`` raises torch's own SDPA error instead."""


def check_inputs(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor) -> None:
    """Raise ``ValueError`` unless ``q``, ``k``, ``v`` are heads-first ``(N, heads, P, W,
    D)`` tensors of one dtype (``v`` may differ in ``D``) and ``r_idx`` is an int32 or
    int64 ``(N, P, K)`` with ``K >= 1``: the contract of every kernel and of the
    operator's fake. The index values are checked where they are read
    (:func:`routed_rows`)."""
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f'q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}')
    if q.dim() != 5 or k.shape != q.shape or v.dim() != 5 or v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f'expected q, k, v of shape (N, heads, P, W, D) (v may differ in '
                         f'the last dim), got {tuple(q.shape)}, {tuple(k.shape)}, '
                         f'{tuple(v.shape)}')
    n, p = q.shape[0], q.shape[2]
    if (r_idx.dim() != 3 or tuple(r_idx.shape[:2]) != (n, p) or r_idx.shape[2] < 1
            or r_idx.dtype not in (torch.int32, torch.int64)):
        raise ValueError(f'expected an int32 or int64 r_idx of shape (N, P, K) = ({n}, {p}, '
                         f'K >= 1), got {tuple(r_idx.shape)} {r_idx.dtype}')


def routed_rows(r_idx: Tensor, num_heads: int) -> Tensor:
    """Rows of a ``(N * M * P, ...)`` heads-first map that each query row reads.

    Row ``(n * M + h) * P + p`` holds region ``p`` of head ``h`` of image ``n``. The
    result lists, for every query row in that order, the ``K`` rows routed to it:
    ``(N * M * P * K,)``. Every head routes alike.

    Args:
        r_idx (Tensor): Routed key regions ``(N, P, K)``.
        num_heads (int): Heads ``M``.

    Raises:
        ValueError: On the CPU, outside ``torch.compile``, where an index is not a region
            (``0 <= r_idx < P``): it would read another head's or image's region. CUDA
            indices are not read back (a synchronisation per call), nor traced ones; the
            module's routing makes only valid ones.
    """
    n, p, topk = r_idx.shape
    traced = is_compiling() or torch.jit.is_tracing()
    if r_idx.device.type == 'cpu' and r_idx.numel() and not traced:
        low, high = int(r_idx.min()), int(r_idx.max())
        if low < 0 or high >= p:
            raise ValueError(f'r_idx must index the {p} regions (0 to {p - 1}), got '
                             f'values from {low} to {high}')
    blocks = torch.arange(n * num_heads, device=r_idx.device).view(n, num_heads, 1)
    return (blocks * p + r_idx.reshape(n, 1, p * topk)).reshape(-1)


def _accumulator(q: Tensor) -> torch.dtype:
    return torch.promote_types(q.dtype, torch.float32)


def _rows_per_chunk(q: Tensor, v: Tensor, topk: int) -> int:
    w, d_qk, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
    item_bytes = torch.finfo(_accumulator(q)).bits // 8
    return max(1, CHUNK_BYTES // (topk * w * (d_qk + d_v) * item_bytes))


def _chunks(num_rows: int, rows_per_chunk: int) -> Iterator[Tuple[int, int]]:
    for start in range(0, num_rows, rows_per_chunk):
        yield start, min(start + rows_per_chunk, num_rows)


def select_routed(t: Tensor, rows: Tensor, num_rows: int, topk: int) -> Tensor:
    """The regions ``rows`` (:func:`routed_rows`, or a slice of them) of a heads-first
    ``(N, M, P, W, D)`` map (or its ``(N * M * P, W, D)`` view), grouped per query row:
    ``(num_rows, K * W, D)``."""
    return t.flatten(0, -3).index_select(0, rows).reshape(
        num_rows, topk * t.shape[-2], t.shape[-1])


def chunked_forward(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float) -> Tensor:
    """Routed attention over heads-first inputs, in chunks of :data:`CHUNK_BYTES` of
    gathered keys and values.

    Args:
        q, k, v, r_idx, scale: As in :func:`~.routed_attention.routed_attention_gather`.

    Returns:
        Tensor: Contiguous ``(N, M, P, W, Dv)`` in the dtype of ``q``.
    """
    n, m, p, w, _ = q.shape
    d_v = v.shape[-1]
    topk = r_idx.shape[-1]
    acc = _accumulator(q)
    rows = routed_rows(r_idx, m)
    q2, k2, v2 = (t.reshape(-1, w, t.shape[-1]) for t in (q, k, v))
    out = torch.empty(n * m * p, w, d_v, dtype=acc, device=q.device)
    logits = torch.empty(_rows_per_chunk(q, v, topk), w, topk * w, dtype=acc,
                         device=q.device)
    # The arithmetic dtype is chosen here: autocast must not lower it.
    with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
        for r0, r1 in _chunks(n * m * p, logits.shape[0]):
            k_sel, v_sel = (select_routed(t, rows[r0 * topk:r1 * topk], r1 - r0, topk)
                            .to(acc)
                            for t in (k2, v2))
            # The scale in the product (alpha) and the softmax written over its input: no
            # scaled copy of q, no new logits or probabilities per chunk. torch does not
            # document out= aliasing the input; its softmax reads each row before writing
            # it, and the tests compare this kernel with 'gather' on both stacks.
            chunk = logits[:r1 - r0].baddbmm_(q2[r0:r1].to(acc), k_sel.transpose(1, 2),
                                              beta=0, alpha=scale)
            torch.bmm(torch.softmax(chunk, dim=-1, out=chunk), v_sel, out=out[r0:r1])
    return out.to(q.dtype).view(n, m, p, w, d_v)


def chunked_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                     out: Tensor, scale: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`chunked_forward` with respect to ``q``, ``k`` and ``v``.

    Each chunk's probabilities are recomputed (one softmax of its logits: the forward
    keeps no log-sum-exp, so that the output is the operator's only result); the softmax
    backward's row term ``sum_j p_ij dp_ij`` is ``grad_out . out`` per query token.

    Args:
        grad_out (Tensor): Gradient of the output ``(N, M, P, W, Dv)``.
        out (Tensor): The output of :func:`chunked_forward` on these inputs.
        q, k, v, r_idx, scale: As :func:`chunked_forward`.

    Returns:
        Tuple[Tensor, Tensor, Tensor]: Contiguous gradients shaped and typed like
        ``q``, ``k`` and ``v``.
    """
    w, d_qk, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
    topk = r_idx.shape[-1]
    acc = _accumulator(q)
    rows = routed_rows(r_idx, q.shape[1])
    q2, k2, v2 = (t.reshape(-1, w, t.shape[-1]) for t in (q, k, v))
    grad_out = grad_out.reshape(-1, w, d_v).to(acc)
    delta = (grad_out * out.reshape(-1, w, d_v).to(acc)).sum(-1, keepdim=True)
    grad_q = torch.empty(q2.shape, dtype=acc, device=q.device)
    grad_k = torch.zeros(k2.shape, dtype=acc, device=k.device)
    grad_v = torch.zeros(v2.shape, dtype=acc, device=v.device)
    with torch.no_grad(), torch.autocast(q.device.type, enabled=False):
        for r0, r1 in _chunks(q2.shape[0], _rows_per_chunk(q, v, topk)):
            sel = rows[r0 * topk:r1 * topk]
            k_sel, v_sel = (select_routed(t, sel, r1 - r0, topk).to(acc) for t in (k2, v2))
            q_scaled = q2[r0:r1].to(acc) * scale
            dout = grad_out[r0:r1]
            probs = torch.bmm(q_scaled, k_sel.transpose(1, 2)).softmax(dim=-1)
            grad_v.index_add_(0, sel, torch.bmm(probs.transpose(1, 2), dout).view(-1, w, d_v))
            # d softmax: dlogits = probs * (dprobs - rowsum(probs * dprobs)).
            grad_logits = torch.bmm(dout, v_sel.transpose(1, 2))
            grad_logits.sub_(delta[r0:r1]).mul_(probs)
            torch.bmm(grad_logits, k_sel, out=grad_q[r0:r1]).mul_(scale)
            grad_k.index_add_(
                0, sel, torch.bmm(grad_logits.transpose(1, 2), q_scaled).view(-1, w, d_qk))
    return (grad_q.to(q.dtype).view(q.shape), grad_k.to(k.dtype).view(k.shape),
            grad_v.to(v.dtype).view(v.shape))


class ChunkedRoutedAttention(torch.autograd.Function):
    """:func:`chunked_forward` and :func:`chunked_backward` as an autograd Function.

    Forward arguments: ``q``, ``k``, ``v``, ``r_idx`` ``(N, P, K)`` and ``scale``.
    Differentiable once:
    a backward that is asked to build a graph (``create_graph=True``, for higher-order
    gradients) raises :data:`DOUBLE_BACKWARD_ERROR` instead of returning gradients whose
    own derivatives would silently be zero.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float) -> Tensor:
        check_inputs(q, k, v, r_idx)
        out = chunked_forward(q, k, v, r_idx, scale)
        ctx.save_for_backward(q, k, v, out)
        ctx.r_idx, ctx.scale = r_idx, scale  # r_idx receives no gradient
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(f'ChunkedRoutedAttention: {DOUBLE_BACKWARD_ERROR}')
        q, k, v, out = ctx.saved_tensors
        grads = chunked_backward(grad_out, q, k, v, ctx.r_idx, out, ctx.scale)
        return grads + (None, None)
