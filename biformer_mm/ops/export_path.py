"""The routed attention as standard operators, for graphs recorded for other runtimes.

``torch.onnx.export`` (both exporters) and ``torch.export`` record the operators a
forward runs. The CPU kernel of ``attn_impl='torch'`` writes into preallocated buffers
(``out=``), which the legacy ONNX exporter's tracing does not record (it produced a graph
disconnected from its inputs); the Triton kernels and a registered custom operator mean
nothing to onnxruntime; and the original expand-and-gather becomes a real ``P``-fold copy
in ONNX. While :func:`is_exporting`, every ``attn_impl`` therefore records
:func:`routed_attention_export`: the same function as plain ``index_select`` (ONNX
``Gather`` of the routed key/value rows), ``matmul`` and ``softmax``, which onnxruntime,
TensorRT and ``torch.export``'s consumers run without this package.

A plain ``torch.jit.trace`` is not exporting: FLOP counters (mmengine's
``FlopAnalyzer``, fvcore) trace with it and count the routed attention by its own
operator, which a TorchScript trace records and runs as it is.
"""
import logging
import operator
from typing import Set

import torch
from mmengine.logging import print_log
from mmengine.utils import digit_version
from torch import Tensor

from .chunked_routed_attention import routed_rows, select_routed


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
    gather for all of them (``docs/benchmarks.md``).

    Args and result as :func:`~.routed_attention.routed_attention_gather`.
    """
    # A Python int also where legacy tracing gives sizes as tensors: n_win fixes it.
    num_regions = operator.index(q.shape[2])
    size = slice_regions(num_regions)
    slices = [
        _routed_slice(q[:, :, start:start + size], k, v, r_idx[:, start:start + size], scale)
        for start in range(0, num_regions, size)
    ]
    return slices[0] if len(slices) == 1 else torch.cat(slices, dim=2)


def _routed_slice(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float) -> Tensor:
    """The routed attention of the query regions of ``q`` and ``r_idx``, a slice of the
    regions of ``k`` and ``v``."""
    rows = routed_rows(r_idx, q.shape[1], k.shape[2])
    q2 = q.flatten(0, 2)
    k_sel, v_sel = (select_routed(t, rows, q2.shape[0]) for t in (k, v))
    attn = torch.matmul(q2 * scale, k_sel.transpose(1, 2)).softmax(dim=-1)
    return torch.matmul(attn, v_sel).reshape(q.shape[:-1] + (v.shape[-1], ))
