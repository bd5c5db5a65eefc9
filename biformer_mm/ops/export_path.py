"""The routed attention as standard operators, for graphs recorded for other runtimes.

``torch.onnx.export`` (both exporters) and ``torch.export`` record the operators a
forward runs. The CPU kernel of ``attn_impl='torch'`` writes into preallocated buffers
(``out=``), which the legacy ONNX exporter's tracing does not record (it produced a graph
disconnected from its inputs); the Triton kernels and a registered custom operator mean
nothing to onnxruntime; and the original expand-and-gather becomes a real ``P``-fold copy
in ONNX. While :func:`is_exporting`, every ``attn_impl`` therefore records
:func:`routed_attention_export` (the BRA module :func:`routed_attention_export_map`, from
its qkv map): the same function as plain ``index_select`` (ONNX ``Gather`` of the routed
key/value rows), ``matmul`` and ``softmax``, which onnxruntime, TensorRT and
``torch.export``'s consumers run without this package.

A plain ``torch.jit.trace`` is not exporting: FLOP counters (mmengine's
``FlopAnalyzer``, fvcore) trace with it and count the routed attention by its own
operator, which a TorchScript trace records and runs as it is.
"""
import logging
import operator
from typing import Set, Tuple

import torch
from mmengine.logging import print_log
from mmengine.utils import digit_version
from torch import Tensor


def is_torch_exporting() -> bool:
    """Whether ``torch.export`` (the dynamo ONNX exporter's too) is recording the
    forward; torch < 2.5 cannot say, and is taken as not.

    Read from the flag that ``torch.compiler.is_exporting()`` returns, not from a call of
    it: before torch 2.14, dynamo replaced that call by ``True`` under ``torch.compile``
    too (pytorch#176347), so compiled BiFormer ran the export path instead of its kernels.
    torch 2.14 reads the same flag while tracing (pytorch#176499).
    """
    flag = getattr(torch.compiler, '_is_exporting_flag', None)
    if flag is not None:
        return bool(flag)
    exporting = getattr(torch.compiler, 'is_exporting', None)
    return exporting is not None and exporting()


def is_exporting() -> bool:
    """Whether the forward is being recorded for another runtime: ``torch.onnx.export``
    (legacy or dynamo exporter) or ``torch.export`` (torch >= 2.5 says so).

    While it is, input sizes may be graph values rather than Python ints, and the model
    records operators that compute the same function for every size the graph may get.
    """
    return torch.onnx.is_in_onnx_export() or is_torch_exporting()


def is_compiling() -> bool:
    """Whether ``torch.compile`` (or ``torch.export``) is capturing the forward: sizes
    may then be symbolic, and a Python test of them becomes a guard that recompiles the
    graph wherever the test comes out differently."""
    return bool(getattr(torch.compiler, 'is_compiling', lambda: False)())


def is_tracing_for_onnx() -> bool:
    """Whether the legacy (TorchScript) ONNX exporter is tracing the forward: it infers
    the graph's shapes as it converts each operator, so shape-dependent conversions
    downstream (e.g. adaptive pooling in a head) need sizes it can infer."""
    return torch.onnx.is_in_onnx_export() and not is_torch_exporting()


EXPORT_SLICE_REGIONS = 16
"""Query regions per slice of the exported routed attention."""

SLICED_EXPORT = digit_version(torch.__version__) >= digit_version('2.4.0')
"""Whether the routed attention is exported in slices: torch's legacy ONNX exporter takes
time quadratic in the graph's nodes before 2.4 (pytorch#121422), which then gets one
slice."""

_logged_one_slice: Set[int] = set()


def slice_regions(num_regions: int) -> int:
    """Query regions per slice of the exported routed attention of ``num_regions``:
    :data:`EXPORT_SLICE_REGIONS`, or all of them (one slice, logged once per count) where
    not :data:`SLICED_EXPORT`: torch 2.1's legacy exporter took over 15 min for
    mmdeploy's BiFormer-S Mask R-CNN in slices (``docs/deploy.md``)."""
    if SLICED_EXPORT:
        return EXPORT_SLICE_REGIONS
    if num_regions > EXPORT_SLICE_REGIONS and num_regions not in _logged_one_slice:
        _logged_one_slice.add(num_regions)
        print_log(f'routed attention export: torch {torch.__version__}\'s ONNX exporter '
                  f"takes time quadratic in the graph's nodes (pytorch#121422, fixed in "
                  f'torch 2.4), so the {num_regions} query regions are '
                  f'exported in one slice, not in slices of {EXPORT_SLICE_REGIONS}: the '
                  f'graph is the same function, about 1.1x slower in onnxruntime '
                  f'(docs/deploy.md).', logger='current', level=logging.INFO)
    return num_regions


def routed_attention_export(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                            scale: float) -> Tensor:
    """Routed attention as ``index_select`` of the routed key/value rows, ``matmul`` and
    ``softmax``: no ``P``-fold expand, no SDPA (whose ONNX form needs opset 14, and which
    mmdeploy 1.3.1 rewrites with the scale inverted), no in-place writes, and no size
    used as a Python int but the number of regions, which ``n_win`` fixes; so the
    recorded graph is right at every input size.

    The query regions go in static slices (:func:`slice_regions`), concatenated: a
    slice's routed key/values stay small enough for the cache, which made onnxruntime
    about 1.1x faster on BiFormer-S with the detection configs' 16x16 regions than one
    gather for all of them (``docs/benchmarks.md``). The BRA module records
    :func:`routed_attention_export_map`, which computes the same from its qkv map.

    Args and result as :func:`~.routed_attention.routed_attention_gather`.
    """
    # The rows of routed_attention_export_map's tables: (head, image, region).
    n, m = q.shape[:2]
    num_regions = operator.index(q.shape[2])  # an int also where tracing gives tensors
    table = torch.stack([q, k]).transpose(1, 2).flatten(0, 3)
    v_table = v.transpose(0, 1).flatten(0, 2)
    out = _routed_slices(table, v_table, m * n * num_regions, 0, r_idx, m, num_regions, scale)
    return out.transpose(0, 1)


def routed_attention_export_map(qkv: Tensor, r_idx: Tensor, n_win: int, num_heads: int,
                                qk_dims: int, scale: float, size: Tuple[int, int]) -> Tensor:
    """:func:`routed_attention_export` of the BRA module's padded qkv map ``(N, H, W,
    2 * qk_dims + Cv)`` of ``size`` ``(H, W)``, multiples of ``n_win``: ``(N, H, W, Cv)``.

    Laid out for onnxruntime, which copies every tensor an operator produces and runs a
    ``Transpose`` that moves one axis as a strided copy, any other one element block at a
    time on one thread: the map goes to its regions and back in two one-axis transposes
    each, and where values have the queries' and keys' width, queries, keys and values stay
    one tensor whose rows each slice of query regions gathers instead of being split
    (otherwise queries and keys are one table, values another; ``docs/benchmarks.md``).
    """
    group = num_heads * qkv.shape[0] * n_win**2  # rows per group of the tables
    if operator.index(qkv.shape[-1]) == 3 * qk_dims:  # an int where tracing gives tensors
        table = v_table = _to_regions(qkv, n_win, 3 * num_heads)
        v_offset = 2 * group
    else:
        table = _to_regions(qkv[..., :2 * qk_dims], n_win, 2 * num_heads)
        v_table = _to_regions(qkv[..., 2 * qk_dims:], n_win, num_heads)
        v_offset = 0
    out = _routed_slices(table, v_table, group, v_offset, r_idx, num_heads, n_win**2, scale)
    return _from_regions(out, n_win, *size)


def _to_regions(x: Tensor, n_win: int, heads: int) -> Tensor:
    """``(N, H, W, heads * D)`` to rows ``(heads * N * n_win ** 2, H * W / n_win ** 2, D)``
    in the order (head, image, region), in two transposes that each move one axis."""
    n, h, w, c = x.shape
    s, d = n_win, c // heads
    x = x.reshape(n * h * w, heads, d).transpose(0, 1)  # (heads, N * H * W, D)
    x = x.reshape(heads * n * s, h // s, s, (w // s) * d).transpose(1, 2)
    return x.reshape(heads * n * s * s, (h // s) * (w // s), d)


def _from_regions(x: Tensor, n_win: int, h: int, w: int) -> Tensor:
    """``(M, N, n_win ** 2, H * W / n_win ** 2, D)`` to ``(N, H, W, M * D)``, in two
    transposes that each move one axis."""
    m, n = x.shape[:2]
    s, d = n_win, x.shape[-1]
    x = x.reshape(m * n * s, s, h // s, (w // s) * d).transpose(1, 2)  # (M, N, H, W, D)
    return x.reshape(m, n * h * w, d).transpose(0, 1).reshape(n, h, w, m * d)


def _routed_slices(table: Tensor, v_table: Tensor, k_offset, v_offset, r_idx: Tensor,
                   num_heads: int, num_regions: int, scale: float) -> Tensor:
    """The routed attention of ``num_heads`` heads ``M`` over ``num_regions`` regions
    ``P`` whose queries are the first ``M * N * P`` rows of ``table`` ``(rows, W, D)``,
    in the order (head, image, region), and whose key and value regions are the rows
    ``k_offset`` and ``v_offset`` on of ``table`` and ``v_table``, laid out alike:
    ``(M, N, P, W, Dv)``, computed in slices of query regions (:func:`slice_regions`)."""
    n = r_idx.shape[0]
    size = slice_regions(num_regions)
    heads_images = torch.arange(num_heads * n, device=r_idx.device).view(
        num_heads, n, 1) * num_regions
    outs = []
    for start in range(0, num_regions, size):
        stop = min(start + size, num_regions)
        # Row (head * N + image) * P + region of each group, for every routed region.
        rows = (heads_images + r_idx[:, start:stop].reshape(1, n, -1)).flatten()
        q_rows = (heads_images + torch.arange(start, stop, device=r_idx.device)).flatten()
        q = table.index_select(0, q_rows)  # (M * N * S, W, D)
        k_sel = table.index_select(0, rows + k_offset).reshape(q.shape[0], -1, q.shape[2])
        v_sel = v_table.index_select(0, rows + v_offset)
        v_sel = v_sel.reshape(q.shape[0], -1, v_table.shape[2])
        attn = torch.matmul(q * scale, k_sel.transpose(1, 2)).softmax(dim=-1)
        outs.append(torch.matmul(attn, v_sel).reshape(num_heads, n, stop - start, q.shape[1],
                                                      v_table.shape[2]))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
