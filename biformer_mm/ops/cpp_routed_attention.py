"""The fused C++ CPU routed attention (``attn_impl='cpp'``, which ``'auto'`` runs on the
CPU where it can): a forward kernel built on first use, and the chunked backward.

The kernel (``routed_attention_cpu.cpp``, next to this file) takes one (image, head,
query region) row at a time, in ``at::parallel_for``: it copies the routed key/values
into a thread-local buffer, computes the logits with one GEMM, their exponentials in
place and the output with a second GEMM, so nothing larger than one row's logits is
written and a row's work stays in cache. Where the chunked algorithm
(:mod:`.chunked_routed_attention`) writes a chunk of rows' logits and probabilities
through memory, this makes the BRA module's forward 1.07x to 1.38x faster (medians) at
BiFormer-S's shapes on a 2-core x86-64 CPU, and 1.20x to 1.54x with the map entry below
(``docs/benchmarks.md``). Its backward is
:func:`~.chunked_routed_attention.chunked_backward`, which needs only the inputs and the
output.

A second entry of the same kernel, :func:`cpp_map_forward`, takes the BRA module's
channels-last qkv map instead and writes the output map, one query region (all heads) at
a time: it saves the copies of the queries, keys, values and output into and out of the
heads-first layout, and computes no query of the padding to a multiple of ``n_win``
(whose outputs the module would crop). The module uses it in CPU inference, eager or
compiled, through the operator ``torch.ops.biformer_mm.routed_attention_map``
(:func:`~.routed_attention.runs_map_kernel`); training and exports keep the heads-first
operator and layout.

:func:`unsupported_reason` builds the kernel with :func:`torch.utils.cpp_extension.load`
the first time a process asks (about 10 s; the build is cached, per torch version, under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``) and says why it
cannot run where it cannot: float32 only; Linux on an x86-64 CPU with AVX2 (its softmax's
``exp`` is vectorised with AVX2/FMA flags); a C++ compiler and ninja; torch's library must
export the BLAS ``sgemm_`` (torch's x86-64 wheels do, through MKL). ``'auto'`` then runs
``'chunked'`` and logs why; ``attn_impl='cpp'`` raises with the reason.
"""
import logging
import os.path as osp
import re
import sys
from functools import lru_cache
from typing import Optional, Tuple

import torch
from mmengine.logging import print_log
from torch import Tensor

from .chunked_routed_attention import routed_rows

SOURCE = osp.join(osp.dirname(osp.abspath(__file__)), 'routed_attention_cpu.cpp')
"""The kernel's C++ source."""
CFLAGS = ('-O3', '-fno-trapping-math', '-fopenmp', '-mavx2', '-mfma')
"""Compiler flags: ``-fno-trapping-math`` lets the compiler vectorise the branch-free
``exp``; OpenMP is torch's ``at::parallel_for`` backend (the loaded library shares
torch's OpenMP runtime)."""


@lru_cache(maxsize=None)
def _load() -> Optional[str]:
    """Build (first use) and load the kernel library once per process; ``None`` when
    ``torch.ops.biformer_mm_cpu``'s ``routed_attention_forward`` and
    ``routed_attention_map_forward`` are registered, else why not."""
    if not sys.platform.startswith('linux'):
        return f'it is built on Linux only, not {sys.platform}'
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith(('AVX2', 'AVX512')):
        return f'it needs an x86-64 CPU with AVX2 (torch reports {capability})'
    from torch.utils import cpp_extension
    name = 'biformer_mm_routed_attention_cpu_' + re.sub(r'\W', '_', torch.__version__)
    print_log(f'routed attention: loading the fused C++ CPU kernel {name} (built on first '
              f'use, about 10 s; cached under {cpp_extension.get_default_build_root()})',
              logger='current', level=logging.INFO)
    try:
        cpp_extension.load(name=name, sources=[SOURCE], extra_cflags=list(CFLAGS),
                           extra_ldflags=['-fopenmp'], is_python_module=False)
    except Exception as e:  # no compiler or ninja, a failed build, a missing sgemm_
        lines = str(e).strip().splitlines() or ['']
        reason = f'it could not be built or loaded ({type(e).__name__}: {lines[0][:300]})'
        print_log(f'routed attention: the fused C++ CPU kernel cannot run: {reason}. '
                  "attn_impl='auto' runs 'chunked' on the CPU instead (right, slower). "
                  'Install a C++ compiler and ninja (tools/setup_env.sh does), or set '
                  "attn_impl='torch' to not build it.", logger='current',
                  level=logging.WARNING)
        return reason
    return None


def unsupported_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why the fused C++ kernel cannot run on tensors of ``device`` and ``dtype``, or
    ``None`` when it can. Builds and loads the kernel on the first call that gets that
    far (see the module docstring); a failed build is logged once, as a warning with the
    fix.
    """
    if torch.device(device).type != 'cpu':
        return f'it runs on the CPU, not {device}'
    if dtype != torch.float32:
        return f'it computes in float32, not {dtype}'
    return _load()


def require(reason: Optional[str]) -> None:
    """Raise the error of an explicit ``attn_impl='cpp'`` that cannot run for ``reason``
    (``None``: it can)."""
    if reason is not None:
        raise RuntimeError(f"attn_impl='cpp' cannot run: {reason}; use attn_impl='auto' "
                           "or 'torch'.")


def cpp_forward(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, scale: float) -> Tensor:
    """Routed attention over heads-first inputs with the fused C++ kernel.

    Args:
        q, k, v, r_idx, scale: As in :func:`~.routed_attention.routed_attention_gather`.

    Returns:
        Tensor: Contiguous ``(N, M, P, W, Dv)`` float32.

    Raises:
        RuntimeError: Where the kernel cannot run (:func:`unsupported_reason`).
    """
    require(unsupported_reason(q.device, q.dtype))
    n, m, p, w, _ = q.shape
    q2, k2, v2 = (t.reshape(-1, w, t.shape[-1]).contiguous() for t in (q, k, v))
    rows = routed_rows(r_idx, m)
    out = torch.ops.biformer_mm_cpu.routed_attention_forward(q2, k2, v2, rows, float(scale))
    return out.view(n, m, p, w, v.shape[-1])


def cpp_map_forward(qkv: Tensor, r_idx: Tensor, n_win: int, num_heads: int, qk_dims: int,
                    scale: float, size: Tuple[int, int]) -> Tensor:
    """Routed attention of a channels-last qkv map with the fused C++ kernel's map entry,
    which reads each region's heads from the map and writes the output map: no
    heads-and-regions copies of the queries, keys, values and output, and no queries of
    the padding computed.

    Args:
        qkv (Tensor): ``(N, H, W, 2 * qk_dims + Cv)`` float32: the BRA module's qkv
            projection (queries, keys, values, each head-major) of its map padded to
            ``H`` and ``W``, multiples of ``n_win``.
        r_idx (Tensor): Routed key regions ``(N, n_win**2, K)``, regions row-major.
        n_win (int): Regions per side.
        num_heads (int): Heads.
        qk_dims (int): Query/key channels (all heads).
        scale (float): Logit scale.
        size (tuple[int, int]): ``(h, w)``, the map before padding.

    Returns:
        Tensor: ``(N, h, w, Cv)`` float32, the heads' outputs concatenated (head-major),
        of the tokens before padding.

    Raises:
        RuntimeError: Where the kernel cannot run (:func:`unsupported_reason`).
    """
    require(unsupported_reason(qkv.device, qkv.dtype))
    return torch.ops.biformer_mm_cpu.routed_attention_map_forward(
        qkv.contiguous(), r_idx.contiguous(), n_win, num_heads, qk_dims, float(scale),
        *size)
