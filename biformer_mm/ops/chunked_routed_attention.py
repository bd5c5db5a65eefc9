"""Routed attention in cache-sized chunks: the CPU strategy of ``attn_impl='torch'``.

Routing makes each key region serve many query regions, so gathering the routed
key/values for every query region at once writes a ``topk``-fold copy of the key/value
map (16x at BiFormer's third stage), and its gradient another. On a CPU that traffic,
and the page faults of allocating it afresh at every block, cost more than the
attention itself. Here the ``(image, head, region)`` query rows are processed in
contiguous chunks whose gathered key/values fit in a few MiB of cache. The forward keeps
only the per-token log-sum-exp, the backward recomputes the probabilities chunk by chunk
and adds the key/value gradients into map-sized buffers with ``index_add_``: no
``topk``-fold tensor ever exists. Arithmetic runs in float32 (float64 for float64
inputs), whatever the input dtype.
"""
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

CHUNK_BYTES = 4 * 2**20
"""Bytes of gathered keys and values per chunk."""


def routed_rows(r_idx: Tensor, num_heads: int) -> Tensor:
    """Rows of a ``(N * M * P, ...)`` heads-first map that each query row reads.

    Row ``(n * M + h) * P + p`` holds region ``p`` of head ``h`` of image ``n``. The
    result lists, for every query row in that order, the ``K`` rows routed to it:
    ``(N * M * P * K,)``. Every head routes alike.

    Args:
        r_idx (Tensor): Routed key regions ``(N, P, K)``.
        num_heads (int): Heads ``M``.
    """
    n, p, topk = r_idx.shape
    blocks = torch.arange(n * num_heads, device=r_idx.device).view(n, num_heads, 1)
    return (blocks * p + r_idx.reshape(n, 1, p * topk)).reshape(-1)


def _chunks(num_rows: int, rows_per_chunk: int) -> Iterator[Tuple[int, int]]:
    for start in range(0, num_rows, rows_per_chunk):
        yield start, min(start + rows_per_chunk, num_rows)


def _routed_kv(k: Tensor, v: Tensor, sel: Tensor, num_rows: int,
               dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """Keys and values of the rows ``sel`` of ``(N * M * P, W, D)`` maps, routed to
    ``num_rows`` query rows: ``(num_rows, K * W, D)`` each, in ``dtype``."""
    k_sel, v_sel = (t.index_select(0, sel).view(num_rows, -1, t.shape[-1]).to(dtype)
                    for t in (k, v))
    return k_sel, v_sel


class ChunkedRoutedAttention(torch.autograd.Function):
    """Routed attention over heads-first ``(N, M, P, W, D)`` inputs, chunk by chunk.

    Forward arguments: ``q``, ``k``, ``v``, ``r_idx`` ``(N, P, K)``, ``scale`` and
    ``chunk_bytes`` (bytes of gathered keys and values per chunk). Differentiable once:
    the backward writes into preallocated buffers, which autograd cannot differentiate.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float,
                chunk_bytes: int = CHUNK_BYTES) -> Tensor:
        n, m, p, w, d_qk = q.shape
        d_v = v.shape[-1]
        topk = r_idx.shape[-1]
        acc = torch.promote_types(q.dtype, torch.float32)
        rows = routed_rows(r_idx, m)
        q2, k2, v2 = (t.reshape(-1, w, t.shape[-1]) for t in (q, k, v))
        out = torch.empty(n * m * p, w, d_v, dtype=acc, device=q.device)
        lse = torch.empty(n * m * p, w, 1, dtype=acc, device=q.device)
        step = max(1, chunk_bytes // (topk * w * (d_qk + d_v) * (torch.finfo(acc).bits // 8)))
        # The arithmetic dtype is chosen here: autocast must not lower it.
        with torch.autocast(q.device.type, enabled=False):
            for r0, r1 in _chunks(n * m * p, step):
                k_sel, v_sel = _routed_kv(k2, v2, rows[r0 * topk:r1 * topk], r1 - r0, acc)
                logits = torch.bmm(q2[r0:r1].to(acc) * scale, k_sel.transpose(1, 2))
                torch.logsumexp(logits, dim=-1, keepdim=True, out=lse[r0:r1])
                torch.bmm(logits.sub_(lse[r0:r1]).exp_(), v_sel, out=out[r0:r1])
        ctx.save_for_backward(q, k, v, rows, out, lse)
        ctx.scale, ctx.step, ctx.topk = scale, step, topk
        return out.to(v.dtype).view(n, m, p, w, d_v)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        q, k, v, rows, out, lse = ctx.saved_tensors
        scale, step, topk = ctx.scale, ctx.step, ctx.topk
        w, d_qk, d_v = q.shape[-2], q.shape[-1], v.shape[-1]
        acc = out.dtype
        q2, k2, v2 = (t.reshape(-1, w, t.shape[-1]) for t in (q, k, v))
        grad_out = grad_out.reshape(out.shape).to(acc)
        # d softmax: dlogits = probs * (dprobs - rowsum(dout * out)).
        delta = (grad_out * out).sum(-1, keepdim=True)
        grad_q = torch.empty(q2.shape, dtype=acc, device=q.device)
        grad_k = torch.zeros(k2.shape, dtype=acc, device=k.device)
        grad_v = torch.zeros(v2.shape, dtype=acc, device=v.device)
        with torch.autocast(q.device.type, enabled=False):
            for r0, r1 in _chunks(q2.shape[0], step):
                sel = rows[r0 * topk:r1 * topk]
                k_sel, v_sel = _routed_kv(k2, v2, sel, r1 - r0, acc)
                q_scaled = q2[r0:r1].to(acc) * scale
                dout = grad_out[r0:r1]
                probs = torch.bmm(q_scaled, k_sel.transpose(1, 2)).sub_(lse[r0:r1]).exp_()
                grad_v.index_add_(0, sel, torch.bmm(probs.transpose(1, 2), dout).view(-1, w, d_v))
                grad_logits = torch.bmm(dout, v_sel.transpose(1, 2))
                grad_logits.sub_(delta[r0:r1]).mul_(probs)
                torch.bmm(grad_logits, k_sel, out=grad_q[r0:r1]).mul_(scale)
                grad_k.index_add_(
                    0, sel, torch.bmm(grad_logits.transpose(1, 2), q_scaled).view(-1, w, d_qk))
        return (grad_q.to(q.dtype).view_as(q), grad_k.to(k.dtype).view_as(k),
                grad_v.to(v.dtype).view_as(v), None, None, None)
