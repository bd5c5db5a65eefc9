"""Token-level attention over routed regions, the inner step of Bi-Level Routing Attention.

Every implementation computes the same function. For query region ``p`` of image ``n``
and head ``h``, each query token attends to all tokens of the ``K`` key regions
``r_idx[n, p]`` (softmax over the ``K * W`` gathered tokens, logits scaled by ``scale``).

Layouts shared by all implementations (heads first, then regions, then tokens):

- ``q``: ``(N, M, P, W, Dqk)``: ``M`` heads, ``P`` regions of ``W`` tokens each.
- ``k``: ``(N, M, P, W, Dqk)`` and ``v``: ``(N, M, P, W, Dv)``.
- ``r_idx``: ``(N, P, K)`` int64 indices of the key regions routed to each query region.
- The result is ``(N, M, P, W, Dv)``.

Algorithms (the names logs and benchmark rows use): ``'gather'`` (the original
expand-and-gather, plain PyTorch ops: the reference, and the one that supports
higher-order gradients), ``'chunked'`` (:mod:`.chunked_routed_attention`, the
plain-PyTorch CPU algorithm), ``'cpp'`` (:mod:`.cpp_routed_attention`, a fused C++ CPU
forward built on first use), ``'sdpa'`` (row selection + ``scaled_dot_product_attention``,
the portable GPU algorithm) and ``'triton'`` (:mod:`.bra_triton`, fused CUDA kernels).
``attn_impl`` takes these names and two policies: ``'torch'`` (plain PyTorch:
``'chunked'`` on the CPU, ``'sdpa'`` elsewhere) and ``'auto'`` (the fused kernel of the
device where it can run, ``'cpp'`` on the CPU and ``'triton'`` on CUDA; ``'torch'``
otherwise).
"""
import logging
from typing import Callable, Dict, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch import Tensor

from .bra_triton import routed_attention_triton_heads_first, unsupported_reason
from .chunked_routed_attention import ChunkedRoutedAttention, routed_rows, select_routed
from .cpp_routed_attention import require as require_cpp
from .cpp_routed_attention import unsupported_reason as cpp_unsupported_reason
from .export_path import is_compiling, is_exporting, routed_attention_export
from .triton_self_check import triton_self_check

ALGORITHMS = ('chunked', 'cpp', 'sdpa', 'triton', 'gather')
"""The algorithms; each computes the same function (see the module docstring)."""
ATTN_IMPLS = ('auto', 'torch') + ALGORITHMS
"""Accepted ``attn_impl`` values: the policies ``'auto'`` and ``'torch'``, and the
algorithms."""
OPERATOR = hasattr(torch.library, 'custom_op')
"""Whether ``torch.ops.biformer_mm.routed_attention`` exists (torch >= 2.4, registered by
:mod:`.routed_attention_op`)."""


def routed_attention_gather(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                            scale: float) -> Tensor:
    """The original BiFormer algorithm: expand the packed key/values to every query
    region, gather the top-k regions, then attend with explicit matrices.

    It materialises the gathered key/values and the attention matrix, and the backward
    of the expanded ``gather`` allocates a ``P``-fold copy of the key/value map. Kept as
    the benchmark baseline and the test oracle.

    Args:
        q (Tensor): Queries ``(N, M, P, W, Dqk)``.
        k (Tensor): Keys ``(N, M, P, W, Dqk)``.
        v (Tensor): Values ``(N, M, P, W, Dv)``.
        r_idx (Tensor): Routed key regions ``(N, P, K)``.
        scale (float): Logit scale.

    Returns:
        Tensor: ``(N, M, P, W, Dv)``.
    """
    n, m, p, w, d_qk = q.shape
    d_v = v.shape[-1]
    topk = r_idx.shape[-1]
    # The original code holds key/values packed per region: (N, P, W, M*Dqk + M*Dv).
    kv = torch.cat([t.permute(0, 2, 3, 1, 4).reshape(n, p, w, m * t.shape[-1])
                    for t in (k, v)], dim=-1)
    c_kv = kv.shape[-1]
    topk_kv = torch.gather(
        kv.view(n, 1, p, w, c_kv).expand(-1, p, -1, -1, -1), dim=2,
        index=r_idx.view(n, p, topk, 1, 1).expand(-1, -1, -1, w, c_kv))
    k_sel, v_sel = topk_kv.split((m * d_qk, m * d_v), dim=-1)
    k_sel = k_sel.reshape(n * p, topk, w, m, d_qk).permute(0, 3, 4, 1, 2)
    k_sel = k_sel.reshape(n * p, m, d_qk, topk * w)
    v_sel = v_sel.reshape(n * p, topk, w, m, d_v).permute(0, 3, 1, 2, 4)
    v_sel = v_sel.reshape(n * p, m, topk * w, d_v)
    q_pix = q.permute(0, 2, 1, 3, 4).reshape(n * p, m, w, d_qk)
    attn = ((q_pix * scale) @ k_sel).softmax(dim=-1)
    out = attn @ v_sel
    return out.view(n, p, m, w, d_v).transpose(1, 2)


def routed_attention_sdpa(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                          scale: float) -> Tensor:
    """Routed attention as one row selection per tensor and one
    :func:`torch.nn.functional.scaled_dot_product_attention` call: the GPU strategy of
    ``attn_impl='torch'`` (the ``'sdpa'`` algorithm).

    The selection copies the routed key/values ``topk`` times but never ``P`` times (its
    backward sums into a map-sized buffer), and the fused SDPA kernels of a GPU never
    store the attention matrix. Those kernels (the CPU's flash kernel included) are
    differentiable once: a second-order gradient raises torch's "derivative for
    aten::_scaled_dot_product_..._backward is not implemented"; ``'gather'`` has them.
    Arguments and result as :func:`routed_attention_gather`.
    """
    n, m, p, w, d_qk = q.shape
    d_v = v.shape[-1]
    topk = r_idx.shape[-1]
    rows = routed_rows(r_idx, m)
    k_sel, v_sel = (select_routed(t, rows, n * m * p, topk).view(n * m, p, topk * w,
                                                                 t.shape[-1])
                    for t in (k, v))
    # Regions take SDPA's head axis: its CUDA kernels take at most 65535 batch entries
    # (pytorch/pytorch#146704).
    out = F.scaled_dot_product_attention(q.reshape(n * m, p, w, d_qk), k_sel, v_sel,
                                         scale=scale)
    return out.view(n, m, p, w, d_v)


def check_attn_impl(attn_impl: str) -> None:
    """Raise ``ValueError`` unless ``attn_impl`` names an implementation."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}.')


def routed_attention_chunked(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                             scale: float) -> Tensor:
    """The ``'chunked'`` algorithm on any device, through its autograd Function.
    Arguments and result as :func:`routed_attention_gather`."""
    return ChunkedRoutedAttention.apply(q, k, v, r_idx, scale)


def routed_attention_cpp(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                         scale: float) -> Tensor:
    """The ``'cpp'`` algorithm, through the operator: CPU float32 tensors on torch >= 2.4.
    Raises ``RuntimeError`` with the reason elsewhere. Arguments and result as
    :func:`routed_attention_gather`."""
    require_cpp(_cpp_unsupported_reason(q.device, q.dtype))
    return torch.ops.biformer_mm.routed_attention(q, k, v, r_idx, float(scale), 'cpp')


def _cpp_unsupported_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    if not OPERATOR:
        return ('it runs in the operators torch.ops.biformer_mm.routed_attention and '
                f'routed_attention_map, which need torch >= 2.4 (this is {torch.__version__})')
    return cpp_unsupported_reason(device, dtype)


_ALGORITHMS: Dict[str, Callable[..., Tensor]] = {
    'chunked': routed_attention_chunked,
    'cpp': routed_attention_cpp,
    'sdpa': routed_attention_sdpa,
    'triton': routed_attention_triton_heads_first,
    'gather': routed_attention_gather,
}


_logged_choices: Set[Tuple[str, torch.dtype, str, Optional[str]]] = set()


def _log_choice(device: torch.device, dtype: torch.dtype, impl: str,
                reason: Optional[str]) -> None:
    """Log what ``'auto'`` chose for (device, dtype), once per distinct choice."""
    key = (str(device), dtype, impl, reason)
    if key in _logged_choices:
        return
    _logged_choices.add(key)
    fused = 'the fused C++ kernel' if impl == 'cpp' else 'the fused Triton kernels'
    because = (f': {fused}' if reason is None else
               f", because {reason}: the '{torch_algorithm(device)}' algorithm")
    print_log(f"routed attention on {device} ({dtype}): attn_impl='auto' uses "
              f"'{impl}'{because}.", logger='current', level=logging.INFO)


def torch_algorithm(device: torch.device) -> str:
    """The algorithm ``attn_impl='torch'`` runs on ``device``: ``'chunked'`` on the CPU,
    ``'sdpa'`` elsewhere."""
    return 'chunked' if torch.device(device).type == 'cpu' else 'sdpa'


def resolve_attn_impl(attn_impl: str, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor) -> str:
    """Resolve the ``'auto'`` policy for the given inputs.

    On the CPU, ``'auto'`` is ``'cpp'`` where nothing speaks against the fused C++ kernel:
    torch >= 2.4, then :func:`~.cpp_routed_attention.unsupported_reason` (float32, Linux
    x86-64 with AVX2, the kernel built and loaded). Elsewhere it is
    ``'triton'`` where :func:`~.bra_triton.unsupported_reason` finds nothing against the
    fused kernels and the first-use self-check
    (:func:`~.triton_self_check.triton_self_check`) passed for the compiled kernels the
    call selects. It is ``'torch'`` everywhere else. The choice is logged once per device,
    dtype and outcome (INFO, mmengine's current logger). Other values are returned as they
    are: an explicit ``'cpp'`` or ``'triton'`` raises where it cannot run, when called.

    Args:
        attn_impl (str): One of :data:`ATTN_IMPLS`.
        q (Tensor): Queries ``(N, M, P, W, Dqk)``.
        k (Tensor): Keys ``(N, M, P, W, Dqk)``.
        v (Tensor): Values ``(N, M, P, W, Dv)``.
        r_idx (Tensor): Routed key regions ``(N, P, K)``.

    Returns:
        str: ``attn_impl``, or for ``'auto'`` ``'cpp'``, ``'triton'`` or ``'torch'``.
    """
    check_attn_impl(attn_impl)
    if attn_impl != 'auto':
        return attn_impl
    if q.device.type == 'cpu':
        return _resolve_auto_on_cpu(q.dtype)
    reason = unsupported_reason(q, k, v, r_idx)
    if reason is None:
        reason = triton_self_check(q, k, v, r_idx)
    impl = 'triton' if reason is None else 'torch'
    _log_choice(q.device, q.dtype, impl, reason)
    return impl


@torch.compiler.assume_constant_result
def _resolve_auto_on_cpu(dtype: torch.dtype) -> str:
    """``'auto'`` on the CPU for ``dtype``: ``'cpp'`` or ``'torch'``, logged. While
    ``torch.compile`` traces, it runs once and its result is a constant of the graph
    (building the kernel is no graph operation)."""
    cpu = torch.device('cpu')
    reason = _cpp_unsupported_reason(cpu, dtype)
    impl = 'cpp' if reason is None else 'torch'
    _log_choice(cpu, dtype, impl, reason)
    return impl


def resolve_algorithm(attn_impl: str, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor
                      ) -> str:
    """The algorithm (one of :data:`ALGORITHMS`) that ``attn_impl`` runs on these inputs:
    what logs and benchmark rows name. Arguments as :func:`resolve_attn_impl`."""
    impl = resolve_attn_impl(attn_impl, q, k, v, r_idx)
    return torch_algorithm(q.device) if impl == 'torch' else impl


def _runs_operator(attn_impl: str, q: Tensor) -> bool:
    """Whether :func:`routed_attention` calls ``torch.ops.biformer_mm.routed_attention``.

    On the CPU the operator runs ``'auto'``, ``'torch'``, ``'chunked'`` and ``'cpp'``.
    On CUDA it serves ``'auto'`` under ``torch.compile`` only: its backward recomputes
    the forward, where the eager Functions keep what their backward needs (see
    :mod:`.routed_attention_op`).
    """
    if not OPERATOR or attn_impl not in ('auto', 'torch', 'chunked', 'cpp'):
        return False
    if q.device.type == 'cpu':
        return True
    return attn_impl == 'auto' and is_compiling()


def routed_attention(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float,
                     attn_impl: str = 'auto') -> Tensor:
    """Routed token attention with the implementation named by ``attn_impl``.

    While :func:`~.export_path.is_exporting` (ONNX export, ``torch.export``), every
    ``attn_impl`` records :func:`~.export_path.routed_attention_export`, the same
    function in standard operators.

    Where torch has ``torch.library.custom_op`` (>= 2.4), ``'auto'``, ``'torch'``,
    ``'chunked'`` and ``'cpp'`` on the CPU, and ``'auto'`` under ``torch.compile`` on
    CUDA, call the operator ``torch.ops.biformer_mm.routed_attention``
    (:mod:`.routed_attention_op`) with ``attn_impl``, which tracing sees as one node;
    everything else calls the algorithm's function.

    Args:
        q (Tensor): Queries ``(N, M, P, W, Dqk)``.
        k (Tensor): Keys ``(N, M, P, W, Dqk)``.
        v (Tensor): Values ``(N, M, P, W, Dv)``.
        r_idx (Tensor): Routed key regions ``(N, P, K)``.
        scale (float): Logit scale.
        attn_impl (str): One of :data:`ATTN_IMPLS`. Defaults to ``'auto'``.

    Returns:
        Tensor: ``(N, M, P, W, Dv)``.
    """
    if is_exporting():
        check_attn_impl(attn_impl)
        return routed_attention_export(q, k, v, r_idx, scale)
    if _runs_operator(attn_impl, q):
        return torch.ops.biformer_mm.routed_attention(q, k, v, r_idx, float(scale),
                                                      attn_impl)
    return _ALGORITHMS[resolve_algorithm(attn_impl, q, k, v, r_idx)](q, k, v, r_idx, scale)


def runs_map_kernel(attn_impl: str, qkv: Tensor) -> bool:
    """Whether the BRA module hands its channels-last qkv map to
    :func:`routed_attention_map` rather than heads-first copies to
    :func:`routed_attention`: in CPU inference (no gradient asked for), eager or under
    ``torch.compile``, where ``attn_impl`` is ``'cpp'`` or ``'auto'`` choosing it.
    Training and FLOP counting (a ``torch.jit`` trace) keep the heads-first operator;
    exports record :func:`~.export_path.routed_attention_export_map` instead.

    Args:
        attn_impl (str): One of :data:`ATTN_IMPLS`.
        qkv (Tensor): The module's qkv projection ``(N, H, W, C)``.
    """
    if attn_impl not in ('auto', 'cpp') or qkv.device.type != 'cpu':
        return False
    grad = qkv.requires_grad and torch.is_grad_enabled()
    if grad or is_exporting() or torch.jit.is_tracing():
        return False
    return attn_impl == 'cpp' or _resolve_auto_on_cpu(qkv.dtype) == 'cpp'


def routed_attention_map(qkv: Tensor, r_idx: Tensor, n_win: int, num_heads: int,
                         qk_dims: int, scale: float, size: Tuple[int, int]) -> Tensor:
    """The ``'cpp'`` algorithm on the BRA module's padded qkv map: the function of
    :func:`routed_attention` without the heads-and-regions layout, for the tokens before
    padding, forward only, as the operator ``torch.ops.biformer_mm.routed_attention_map``
    (one node to ``torch.compile``; :mod:`.routed_attention_op`). Raises
    ``RuntimeError`` with the reason where the kernel cannot run (torch < 2.4 included,
    as for :func:`routed_attention_cpp`), when the kernel is called. Arguments and result
    as :func:`~.cpp_routed_attention.cpp_map_forward`."""
    if not OPERATOR:  # _cpp_unsupported_reason says which torch it needs
        require_cpp(_cpp_unsupported_reason(qkv.device, qkv.dtype))
    return torch.ops.biformer_mm.routed_attention_map(qkv, r_idx, n_win, num_heads, qk_dims,
                                                      float(scale), *size)
