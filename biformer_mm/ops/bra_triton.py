"""Fused Triton kernels for the routed token attention of Bi-Level Routing Attention.

For query region ``p`` of image ``n`` and head ``h``, every query token attends to the
``K * W`` tokens of the key regions ``r_idx[n, p]``. The kernels follow FlashAttention-2:

- Forward: one program per block of query tokens of one (image, region, head). It walks
  the routed key sequence (``K`` regions of ``W`` tokens, flattened) in blocks, fetching
  each key/value row through ``r_idx`` inside the loop, and keeps an online softmax
  (running max and sum, fp32 accumulation). Neither the gathered key/values nor the
  attention matrix is ever written to memory. The per-row log-sum-exp is saved.
- Backward: one program per block of query tokens. It recomputes the probabilities from
  the saved log-sum-exp and ``delta = rowsum(dO * O)``, accumulates ``dq`` in registers,
  and adds the ``dk`` / ``dv`` contributions of its query block to the routed key rows of
  fp32 buffers with ``tl.atomic_add`` (many query regions route to the same key region).

Key blocks are flattened over the routed regions, so a block may span several small
regions (``W < 16`` or ``W`` not a multiple of the block size) without padding waste.

Every tensor is addressed through explicit strides, so strided views (slices of a packed
qkv tensor, a permuted channel-packed map) are read in place.

The module imports without Triton or CUDA; :func:`unsupported_reason` says whether and why
not the kernels can run on given tensors. With ``TRITON_INTERPRET=1`` set before this
module is imported, an explicit call runs the kernels in Triton's CPU interpreter (for
tests); ``attn_impl='auto'`` never does.
"""
import contextlib
import functools
import math
import os
from typing import Any, ContextManager, Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from .chunked_routed_attention import DOUBLE_BACKWARD_ERROR, check_inputs

try:
    import triton
except ImportError:
    triton = None

TRITON_VERSION: Optional[str] = getattr(triton, '__version__', None)
"""The installed Triton's version, ``None`` without Triton."""


def _triton_unavailable() -> Optional[str]:
    """Why the kernels cannot be built in this environment, or ``None``."""
    if triton is None:
        return 'Triton is not installed'
    if int(TRITON_VERSION.split('.')[0]) < 3:
        return (f'Triton {TRITON_VERSION} is older than 3.0, which the kernels need '
                f'(tl.dot input_precision); upgrade torch/Triton')
    return None


TRITON_UNAVAILABLE: Optional[str] = _triton_unavailable()
"""Why the kernels are unavailable here (no Triton, Triton < 3.0), or ``None``."""
TRITON_AVAILABLE = TRITON_UNAVAILABLE is None

INTERPRETER = False
"""Whether the kernels run in Triton's CPU interpreter: ``TRITON_INTERPRET`` was set when
this module was imported, which is when Triton decides how to build them."""
if TRITON_AVAILABLE:
    import triton.language as tl

    # triton.knobs (Triton >= 3.4) parses TRITON_INTERPRET as Triton's jit does; older
    # Triton 3 releases compare the variable with '1'.
    _knobs = getattr(triton, 'knobs', None)
    INTERPRETER = bool(_knobs.runtime.interpret if _knobs is not None else
                       os.environ.get('TRITON_INTERPRET', '0') == '1')

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MIN_CAPABILITY = {torch.float32: (7, 0), torch.float16: (8, 0), torch.bfloat16: (8, 0)}
"""Smallest CUDA compute capability per input dtype. fp32 dots run in IEEE precision on
FMA units on every GPU; Triton emits tensor-core (``mma``) code for fp16/bf16 dots from
sm_80 on, and bf16 arithmetic is native from sm_80."""
MAX_HEAD_DIM = 128
"""Largest query/key or value head dim the launch configuration covers."""
_LOG2E = math.log2(math.e)
NOT_SPECIALISED = ('P', 'W', 'NUM_HEADS')
"""Integer kernel arguments Triton compiles no separate kernel for (``do_not_specialize``)."""
_TRITON_TYPES = {torch.float32: 'fp32', torch.float16: 'fp16', torch.bfloat16: 'bf16',
                 torch.int64: 'i64', torch.int32: 'i32'}

if TRITON_AVAILABLE:

    @triton.jit
    def _mma(a, b, acc, DOT_FP32: tl.constexpr):
        """``acc + a @ b`` with fp32 accumulation.

        fp32 operands use full IEEE precision (no TF32); the precision setting does not
        apply to fp16/bf16 operands. ``DOT_FP32`` upcasts the operands first; it is set
        for bf16 inputs under the CPU interpreter, whose ``tl.dot`` does not support bf16
        operands. Products of two bf16 values are exact in fp32, so the result matches a
        bf16 tensor-core dot.
        """
        if DOT_FP32:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        return tl.dot(a, b, acc, input_precision='ieee')

    @triton.jit
    def _routed_rows(R_row, stride_rk, start_n, W, L, BLOCK_N: tl.constexpr):
        """Locate a block of the flattened routed key sequence.

        Returns the key region index, the token index in the region and the validity
        mask of the ``BLOCK_N`` routed key positions ``start_n + [0, BLOCK_N)``.
        """
        offs_n = start_n + tl.arange(0, BLOCK_N)
        valid_n = offs_n < L
        t = offs_n // W
        region = tl.load(R_row + t * stride_rk, mask=valid_n, other=0).to(tl.int64)
        return region, offs_n - t * W, valid_n

    # W (tokens per region) changes with every input size; W, P and NUM_HEADS only split
    # program ids and bound loops, where specialising them buys nothing but compilations
    # (W also addresses the log-sum-exp, a negligible share of the traffic). The strides
    # keep their specialisation: a channel stride of 1 and 16-divisible row strides let
    # the compiler vectorise the loads.
    @triton.jit(do_not_specialize=NOT_SPECIALISED)
    def _bra_fwd_kernel(
        Q, K, V, R, O, LSE,
        stride_qn, stride_qp, stride_qw, stride_qh, stride_qc,
        stride_kn, stride_kp, stride_kw, stride_kh, stride_kc,
        stride_vn, stride_vp, stride_vw, stride_vh, stride_vc,
        stride_rn, stride_rp, stride_rk,
        stride_on, stride_op, stride_ow, stride_oh, stride_oc,
        P, W, TOPK, NUM_HEADS, qk_scale,
        HEAD_DQ: tl.constexpr, HEAD_DV: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr,
        DOT_FP32: tl.constexpr,
    ):
        """Forward of the routed attention; grid ``(N * P * heads, cdiv(W, BLOCK_M))``.
        Q, K, V and O have five strides each (image, region, token, head, channel), R
        three (image, region, k).

        ``qk_scale`` is the logit scale times ``log2(e)`` (softmax in base 2). ``LSE`` is
        a contiguous ``(N, P, heads, W)`` fp32 buffer receiving the base-2 log-sum-exp.
        """
        pid_nph = tl.program_id(0)
        pid_m = tl.program_id(1)
        h = (pid_nph % NUM_HEADS).to(tl.int64)
        pid_np = pid_nph // NUM_HEADS
        n = (pid_np // P).to(tl.int64)
        p = (pid_np % P).to(tl.int64)

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        valid_m = offs_m < W
        mask_dq = offs_dq < HEAD_DQ
        mask_dv = offs_dv < HEAD_DV

        q_ptrs = (Q + n * stride_qn + p * stride_qp + h * stride_qh
                  + offs_m[:, None] * stride_qw + offs_dq[None, :] * stride_qc)
        q = tl.load(q_ptrs, mask=valid_m[:, None] & mask_dq[None, :], other=0.0)

        R_row = R + n * stride_rn + p * stride_rp
        K_img = K + n * stride_kn + h * stride_kh + offs_dq[None, :] * stride_kc
        V_img = V + n * stride_vn + h * stride_vh + offs_dv[None, :] * stride_vc
        L = TOPK * W

        m_i = tl.full([BLOCK_M], float('-inf'), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
        for start_n in range(0, L, BLOCK_N):
            region, tok, valid_n = _routed_rows(R_row, stride_rk, start_n, W, L, BLOCK_N)
            k = tl.load(K_img + region[:, None] * stride_kp + tok[:, None] * stride_kw,
                        mask=valid_n[:, None] & mask_dq[None, :], other=0.0)
            v = tl.load(V_img + region[:, None] * stride_vp + tok[:, None] * stride_vw,
                        mask=valid_n[:, None] & mask_dv[None, :], other=0.0)
            s = _mma(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32),
                     DOT_FP32) * qk_scale
            s = tl.where(valid_n[None, :], s, float('-inf'))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.math.exp2(m_i - m_new)
            prob = tl.math.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(prob, 1)
            acc = _mma(prob.to(v.dtype), v, acc * alpha[:, None], DOT_FP32)
            m_i = m_new

        out = acc / l_i[:, None]
        o_ptrs = (O + n * stride_on + p * stride_op + h * stride_oh
                  + offs_m[:, None] * stride_ow + offs_dv[None, :] * stride_oc)
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=valid_m[:, None] & mask_dv[None, :])
        tl.store(LSE + pid_nph.to(tl.int64) * W + offs_m, m_i + tl.math.log2(l_i), mask=valid_m)

    @triton.jit(do_not_specialize=NOT_SPECIALISED)
    def _bra_bwd_kernel(
        Q, K, V, R, O, DO, LSE, DQ, DK, DV,
        stride_qn, stride_qp, stride_qw, stride_qh, stride_qc,
        stride_kn, stride_kp, stride_kw, stride_kh, stride_kc,
        stride_vn, stride_vp, stride_vw, stride_vh, stride_vc,
        stride_rn, stride_rp, stride_rk,
        stride_on, stride_op, stride_ow, stride_oh, stride_oc,
        stride_don, stride_dop, stride_dow, stride_doh, stride_doc,
        stride_dqn, stride_dqp, stride_dqw, stride_dqh, stride_dqc,
        stride_dkn, stride_dkp, stride_dkw, stride_dkh, stride_dkc,
        stride_dvn, stride_dvp, stride_dvw, stride_dvh, stride_dvc,
        P, W, TOPK, NUM_HEADS, scale, qk_scale,
        HEAD_DQ: tl.constexpr, HEAD_DV: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr,
        DOT_FP32: tl.constexpr,
    ):
        """Backward of the routed attention; grid ``(N * P * heads, cdiv(W, BLOCK_M))``.

        Writes ``DQ`` (input dtype) for its query block and atomically adds the ``dk`` /
        ``dv`` contributions into the fp32 buffers ``DK`` / ``DV``.
        """
        pid_nph = tl.program_id(0)
        pid_m = tl.program_id(1)
        h = (pid_nph % NUM_HEADS).to(tl.int64)
        pid_np = pid_nph // NUM_HEADS
        n = (pid_np // P).to(tl.int64)
        p = (pid_np % P).to(tl.int64)

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_dq = tl.arange(0, BLOCK_DQ)
        offs_dv = tl.arange(0, BLOCK_DV)
        valid_m = offs_m < W
        mask_dq = offs_dq < HEAD_DQ
        mask_dv = offs_dv < HEAD_DV
        mask_mq = valid_m[:, None] & mask_dq[None, :]
        mask_mv = valid_m[:, None] & mask_dv[None, :]

        q = tl.load(Q + n * stride_qn + p * stride_qp + h * stride_qh
                    + offs_m[:, None] * stride_qw + offs_dq[None, :] * stride_qc,
                    mask=mask_mq, other=0.0)
        do = tl.load(DO + n * stride_don + p * stride_dop + h * stride_doh
                     + offs_m[:, None] * stride_dow + offs_dv[None, :] * stride_doc,
                     mask=mask_mv, other=0.0)
        o = tl.load(O + n * stride_on + p * stride_op + h * stride_oh
                    + offs_m[:, None] * stride_ow + offs_dv[None, :] * stride_oc,
                    mask=mask_mv, other=0.0)
        delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
        lse = tl.load(LSE + pid_nph.to(tl.int64) * W + offs_m, mask=valid_m, other=0.0)

        R_row = R + n * stride_rn + p * stride_rp
        K_img = K + n * stride_kn + h * stride_kh + offs_dq[None, :] * stride_kc
        V_img = V + n * stride_vn + h * stride_vh + offs_dv[None, :] * stride_vc
        DK_img = DK + n * stride_dkn + h * stride_dkh + offs_dq[None, :] * stride_dkc
        DV_img = DV + n * stride_dvn + h * stride_dvh + offs_dv[None, :] * stride_dvc
        L = TOPK * W

        dq = tl.zeros([BLOCK_M, BLOCK_DQ], dtype=tl.float32)
        for start_n in range(0, L, BLOCK_N):
            region, tok, valid_n = _routed_rows(R_row, stride_rk, start_n, W, L, BLOCK_N)
            mask_nq = valid_n[:, None] & mask_dq[None, :]
            mask_nv = valid_n[:, None] & mask_dv[None, :]
            k = tl.load(K_img + region[:, None] * stride_kp + tok[:, None] * stride_kw,
                        mask=mask_nq, other=0.0)
            v = tl.load(V_img + region[:, None] * stride_vp + tok[:, None] * stride_vw,
                        mask=mask_nv, other=0.0)
            s = _mma(q, tl.trans(k), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32),
                     DOT_FP32) * qk_scale
            prob = tl.math.exp2(s - lse[:, None])
            prob = tl.where(valid_m[:, None] & valid_n[None, :], prob, 0.0)
            dv = _mma(tl.trans(prob.to(do.dtype)), do,
                      tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32), DOT_FP32)
            tl.atomic_add(DV_img + region[:, None] * stride_dvp + tok[:, None] * stride_dvw,
                          dv, mask=mask_nv, sem='relaxed')
            dp = _mma(do, tl.trans(v), tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32),
                      DOT_FP32)
            ds = prob * (dp - delta[:, None]) * scale
            dq = _mma(ds.to(k.dtype), k, dq, DOT_FP32)
            dk = _mma(tl.trans(ds.to(q.dtype)), q,
                      tl.zeros([BLOCK_N, BLOCK_DQ], dtype=tl.float32), DOT_FP32)
            tl.atomic_add(DK_img + region[:, None] * stride_dkp + tok[:, None] * stride_dkw,
                          dk, mask=mask_nq, sem='relaxed')

        tl.store(DQ + n * stride_dqn + p * stride_dqp + h * stride_dqh
                 + offs_m[:, None] * stride_dqw + offs_dq[None, :] * stride_dqc,
                 dq.to(DQ.dtype.element_ty), mask=mask_mq)


def unsupported_reason(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, *,
                       interpreter: bool = False) -> Optional[str]:
    """Why the fused kernels cannot run on these inputs here, or ``None`` if they can.

    This is the one place that decides where the kernels may run; ``attn_impl='auto'``
    picks ``'torch'`` wherever it gives a reason (or the first-use self-check fails), and
    explicit calls raise with it. The kernels need:

    - fp32, fp16 or bf16 ``q``/``k``/``v`` and an int32/int64 ``r_idx``;
    - Triton >= 3.0 (:data:`TRITON_UNAVAILABLE`);
    - all tensors on one device, a CUDA device of an NVIDIA GPU whose compute capability
      supports the dtype (:data:`MIN_CAPABILITY`);
    - no ``TRITON_INTERPRET=1``, unless ``interpreter`` (an explicit call, as tests make):
      Triton's CPU interpreter then runs the kernels on any device, orders of magnitude
      slower, and ``'auto'`` never picks it;
    - head dims of at most :data:`MAX_HEAD_DIM`;
    - no ``torch.use_deterministic_algorithms(True)`` when a gradient will be computed:
      the backward adds key/value gradients with atomics, in no fixed order.

    Args:
        q (Tensor): Queries ``(N, heads, P, W, Dqk)``.
        k (Tensor): Keys ``(N, heads, P, W, Dqk)``.
        v (Tensor): Values ``(N, heads, P, W, Dv)``.
        r_idx (Tensor): Routed key regions ``(N, P, K)``.
        interpreter (bool): Accept Triton's CPU interpreter when ``TRITON_INTERPRET=1``
            is set. Defaults to False.

    Returns:
        Optional[str]: A human-readable reason, or ``None`` when supported.
    """
    tensors = (q, k, v, r_idx)
    for t in tensors[:3]:
        if t.dtype not in _SUPPORTED_DTYPES:
            return f'dtype {t.dtype} is not one of float32, float16, bfloat16'
    if r_idx.dtype not in (torch.int64, torch.int32):
        return f'r_idx has dtype {r_idx.dtype}, not int32 or int64'
    if not TRITON_AVAILABLE:
        return TRITON_UNAVAILABLE
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        return f'the tensors are on several devices ({", ".join(sorted(map(str, devices)))})'
    if INTERPRETER and not interpreter:
        return ("TRITON_INTERPRET=1 is set, so the kernels would run in Triton's CPU "
                "interpreter, orders of magnitude slower; attn_impl='auto' never picks it "
                "(attn_impl='triton' runs it)")
    if not INTERPRETER:
        if not q.is_cuda:
            return f'the tensors are on {q.device}, not a CUDA device'
        if torch.version.hip is not None:
            return 'the kernels are verified on NVIDIA GPUs only, and this is a ROCm build'
        capability = torch.cuda.get_device_capability(q.device)
        needed = MIN_CAPABILITY[q.dtype]
        if tuple(capability) < needed:
            return (f'{q.device} has compute capability {capability[0]}.{capability[1]}; '
                    f'{q.dtype} needs {needed[0]}.{needed[1]} or newer')
    if max(q.shape[-1], v.shape[-1]) > MAX_HEAD_DIM:
        return (f'head dims {q.shape[-1]} (qk) / {v.shape[-1]} (v) exceed {MAX_HEAD_DIM}, '
                f'the largest the launch configuration covers')
    if (torch.are_deterministic_algorithms_enabled() and torch.is_grad_enabled()
            and any(t.requires_grad for t in tensors[:3])):
        return ('torch.use_deterministic_algorithms(True) is set and the backward kernel '
                'adds key/value gradients with atomics, in no fixed order')
    return None


class Layout(NamedTuple):
    """Problem sizes of one call on heads-first ``(N, heads, P, W, D)`` tensors."""
    n: int
    p: int
    w: int
    heads: int
    head_dq: int
    head_dv: int

    @staticmethod
    def strides(x: Tensor) -> Tuple[int, int, int, int, int]:
        """Element strides of a heads-first tensor along image, region, token, head and
        channel, the order the kernels take them in."""
        s_n, s_h, s_p, s_w, s_c = x.stride()
        return s_n, s_p, s_w, s_h, s_c

    def empty(self, head_dim: int, dtype: torch.dtype, device: torch.device,
              zero: bool = False) -> Tensor:
        """A new contiguous ``(N, heads, P, W, head_dim)`` tensor (zeros if ``zero``)."""
        shape = (self.n, self.heads, self.p, self.w, head_dim)
        return (torch.zeros if zero else torch.empty)(shape, dtype=dtype, device=device)

    def forward_buffers(self, dtype: torch.dtype, device: torch.device) -> Tuple[Tensor, ...]:
        """The forward's output (``dtype``) and base-2 log-sum-exp (``(N, P, heads, W)``
        fp32)."""
        return (self.empty(self.head_dv, dtype, device), torch.empty(
            (self.n, self.p, self.heads, self.w), dtype=torch.float32, device=device))

    def gradient_buffers(self, dtype: torch.dtype, device: torch.device) -> Tuple[Tensor, ...]:
        """The backward's ``dq`` (``dtype``) and zeroed fp32 ``dk``, ``dv``."""
        return (self.empty(self.head_dq, dtype, device),
                *(self.empty(d, torch.float32, device, zero=True)
                  for d in (self.head_dq, self.head_dv)))


def input_layout(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor) -> Layout:
    """Validate the shapes of heads-first inputs and return the problem sizes.

    Raises:
        ValueError: If the shapes or dtypes are inconsistent.
    """
    check_inputs(q, k, v, r_idx)
    n, heads, p, w, head_dq = q.shape
    # Plain ints: under torch.jit tracing the sizes are tensors, which Triton would
    # take for pointers.
    return Layout(*(int(size) for size in (n, p, w, heads, head_dq, v.shape[-1])))


def launch_config(w: int, topk: int, head_dq: int, head_dv: int, dtype: torch.dtype,
                  backward: bool) -> Dict[str, Any]:
    """Compile-time parameters of one kernel launch.

    Block sizes are powers of two >= 16 (as ``tl.dot`` requires), capped by the padded
    region size ``W`` (query blocks) and routed sequence length ``K * W`` (key blocks).
    The caps were chosen from ptxas register/spill reports for sm_80 and sm_90 at head
    dims 16 to 128; fp32 uses smaller tiles because IEEE fp32 dots run on FMA units.

    Args:
        w (int): Tokens per region.
        topk (int): Routed regions per query region.
        head_dq (int): Query/key channels per head.
        head_dv (int): Value channels per head.
        dtype (torch.dtype): Input dtype.
        backward (bool): Parameters for the backward kernel instead of the forward.

    Returns:
        Dict[str, Any]: Keyword arguments for the kernel launch: ``HEAD_DQ``, ``HEAD_DV``,
        ``BLOCK_M``, ``BLOCK_N``, ``BLOCK_DQ``, ``BLOCK_DV``, ``DOT_FP32`` and ``num_warps``.
    """
    block_dq = max(16, triton.next_power_of_2(head_dq))
    block_dv = max(16, triton.next_power_of_2(head_dv))
    block_d = max(block_dq, block_dv)
    if dtype == torch.float32:
        max_m = 32 if block_d <= 64 else 16
        max_n = 32 if block_d <= 32 else 16
    elif backward:
        max_m = 64 if block_d <= 64 else 32
        max_n = 32
    else:
        max_m = 64
        max_n = 64 if block_d <= 64 else 32
    return dict(
        HEAD_DQ=head_dq, HEAD_DV=head_dv,
        BLOCK_M=min(max_m, max(16, triton.next_power_of_2(w))),
        BLOCK_N=min(max_n, max(16, triton.next_power_of_2(topk * w))),
        BLOCK_DQ=block_dq, BLOCK_DV=block_dv,
        DOT_FP32=dtype == torch.bfloat16 and INTERPRETER,
        num_warps=4 if block_d <= 32 else 8)


def specialisation(value: Any, specialise: bool = True) -> Tuple[str, Any]:
    """How Triton 3's JIT sees one non-constexpr kernel argument: its type and whether it
    is divisible by 16 (a tensor: its address), or ``('constexpr', 1)`` for an integer 1.

    Launches that agree on this for every argument, and on the constexprs and warps,
    share one compiled kernel; any difference compiles another. ``specialise=False`` is
    for the ``do_not_specialize`` integers (:data:`NOT_SPECIALISED`), which keep only
    their width.
    """
    if isinstance(value, Tensor):
        return '*' + _TRITON_TYPES[value.dtype], value.data_ptr() % 16 == 0
    if isinstance(value, float):
        return 'fp32', False
    width = 'i32' if -2**31 <= value < 2**31 else 'i64'
    if specialise and value == 1:
        return 'constexpr', 1
    return width, specialise and value % 16 == 0


class KernelLaunch(NamedTuple):
    """One launch of a fused kernel, as Triton sees it: the ``@triton.jit`` function,
    the grid, the positional arguments (tensors and ints, which Triton specialises on)
    and the keyword arguments (constexprs and ``num_warps``)."""
    kernel: Any
    grid: Tuple[int, int]
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]

    def __call__(self) -> None:
        """Launch on the current CUDA device and stream (or in the interpreter)."""
        self.kernel[self.grid](*self.args, **self.kwargs)

    def key(self) -> Tuple:
        """What selects the compiled kernel of this launch: the kernel, its constexprs
        and warps, and the :func:`specialisation` of every other argument."""
        return (self.kernel.__name__, tuple(sorted(self.kwargs.items())),
                tuple(specialisation(value, name not in NOT_SPECIALISED)
                      for name, value in zip(self.kernel.arg_names, self.args)))


def _launch(kernel: Any, tensors: Tuple[Tensor, ...], lse: Tensor,
            outputs: Tuple[Tensor, ...], layout: Layout, scales: Tuple[float, ...],
            backward: bool) -> KernelLaunch:
    """``kernel``'s launch: the pointers ``tensors`` (``q, k, v, r_idx, ...``), ``lse``
    and ``outputs``, the strides of all but ``lse``, the sizes and ``scales``."""
    r_idx = tensors[3]
    topk = int(r_idx.shape[-1])
    cfg = launch_config(layout.w, topk, layout.head_dq, layout.head_dv, tensors[0].dtype,
                        backward)
    grid = (layout.n * layout.p * layout.heads, triton.cdiv(layout.w, cfg['BLOCK_M']))
    strides = (s for t in tensors + outputs
               for s in (r_idx.stride() if t is r_idx else layout.strides(t)))
    args = (*tensors, lse, *outputs, *strides, layout.p, layout.w, topk, layout.heads,
            *scales)
    return KernelLaunch(kernel, grid, args, cfg)


def forward_launch(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, out: Tensor, lse: Tensor,
                   layout: Layout, scale: float) -> KernelLaunch:
    """The forward kernel's launch, writing ``out`` (heads-first, input dtype) and ``lse``
    (:meth:`Layout.forward_buffers`)."""
    return _launch(_bra_fwd_kernel, (q, k, v, r_idx, out), lse, (), layout,
                   (scale * _LOG2E, ), backward=False)


def backward_launch(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, out: Tensor, lse: Tensor,
                    grad_out: Tensor, dq: Tensor, dk: Tensor, dv: Tensor, layout: Layout,
                    scale: float) -> KernelLaunch:
    """The backward kernel's launch, writing ``dq`` (input dtype) and adding to the zeroed
    fp32 accumulators ``dk``, ``dv`` (:meth:`Layout.gradient_buffers`)."""
    return _launch(_bra_bwd_kernel, (q, k, v, r_idx, out, grad_out), lse, (dq, dk, dv),
                   layout, (scale, scale * _LOG2E), backward=True)


def kernel_launches(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, grad_out: Tensor,
                    scale: float, device: torch.device) -> Tuple[KernelLaunch, KernelLaunch]:
    """The forward and backward launches of a call, with new output and gradient buffers
    on ``device`` (``'meta'``: for their keys or an ahead-of-time compile, no memory)."""
    layout = input_layout(q, k, v, r_idx)
    out, lse = layout.forward_buffers(q.dtype, device)
    return (forward_launch(q, k, v, r_idx, out, lse, layout, scale),
            backward_launch(q, k, v, r_idx, out, lse, grad_out,
                            *layout.gradient_buffers(q.dtype, device), layout, scale))


def kernel_key(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor) -> Tuple:
    """What selects the compiled forward and backward kernels of a call on these inputs:
    the device and the :meth:`KernelLaunch.key` of both launches.

    The output gradient is not known before the backward; it is taken to be laid out
    as the output (contiguous), as the gradient BiFormer's blocks pass back is.
    """
    return _kernel_key(str(q.device), tuple(
        (t.dtype, tuple(t.shape), t.stride(), alignment(t)) for t in (q, k, v, r_idx)))


def alignment(t: Tensor) -> int:
    """``t``'s address modulo 16 bytes, in elements."""
    return t.data_ptr() % 16 // t.element_size()


def strided_empty(dtype: torch.dtype, shape: Tuple[int, ...], stride: Tuple[int, ...],
                  offset: int, device: torch.device) -> Tensor:
    """An uninitialised tensor of ``shape`` and ``stride`` whose :func:`alignment` is
    ``offset``: Triton selects the same compiled kernels for it."""
    span = 1 + sum((n - 1) * s for n, s in zip(shape, stride))
    return torch.empty(offset + span, dtype=dtype, device=device).as_strided(
        shape, stride, offset)


@functools.lru_cache(maxsize=4096)
def _kernel_key(device: str, inputs: Tuple) -> Tuple:
    """:func:`kernel_key` from the inputs' dtypes, shapes, strides and
    :func:`alignment`, computed on meta-device stand-ins; cached, as it runs per call."""
    meta = torch.device('meta')
    stand_ins = [strided_empty(*spec, device=meta) for spec in inputs]
    layout = input_layout(*stand_ins)
    grad_out = layout.empty(layout.head_dv, stand_ins[0].dtype, meta)
    forward, backward = kernel_launches(*stand_ins, grad_out, 1.0, meta)
    return device, forward.key(), backward.key()


def on_device(device: torch.device) -> ContextManager:
    """Make ``device`` the current CUDA device (Triton launches on the current device
    and stream); a no-op for the interpreter's CPU tensors."""
    return torch.cuda.device(device) if device.type == 'cuda' else contextlib.nullcontext()


class TritonRoutedAttention(torch.autograd.Function):
    """Autograd wrapper of the fused kernels; ``r_idx`` receives no gradient.

    Forward arguments: heads-first ``q``, ``k``, ``v``, ``r_idx``, a :class:`Layout` and
    ``scale``. Every launch runs under the inputs' device. Differentiable once: the
    backward is a kernel, not a graph of differentiable operations, so a backward that
    would build a graph (``create_graph=True``) raises :data:`DOUBLE_BACKWARD_ERROR`.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, layout: Layout,
                scale: float) -> Tensor:
        out, lse = layout.forward_buffers(q.dtype, q.device)
        with on_device(q.device):
            forward_launch(q, k, v, r_idx, out, lse, layout, scale)()
        ctx.save_for_backward(q, k, v, r_idx, out, lse)
        ctx.layout = layout
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        # Grad mode is on in a backward exactly when it builds a graph for a second one.
        if torch.is_grad_enabled():
            raise RuntimeError(f'TritonRoutedAttention: {DOUBLE_BACKWARD_ERROR}')
        q, k, v, r_idx, out, lse = ctx.saved_tensors
        dq, dk, dv = ctx.layout.gradient_buffers(q.dtype, q.device)
        with on_device(q.device):
            backward_launch(q, k, v, r_idx, out, lse, grad_out, dq, dk, dv, ctx.layout,
                            ctx.scale)()
        return dq, dk.to(k.dtype), dv.to(v.dtype), None, None, None


def routed_attention_triton_heads_first(q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor,
                                        scale: float) -> Tensor:
    """Routed token attention of BRA (the function of
    :func:`~.routed_attention.routed_attention_gather`) with the fused Triton kernels,
    forward and backward; strided views are read in place.

    Args:
        q (Tensor): Queries ``(N, heads, P, W, Dqk)``.
        k (Tensor): Keys ``(N, heads, P, W, Dqk)``.
        v (Tensor): Values ``(N, heads, P, W, Dv)``.
        r_idx (Tensor): ``(N, P, K)`` int64 (or int32) indices of the key regions routed to
            each query region (shared by all heads). Receives no gradient.
        scale (float): Logit scale.

    Returns:
        Tensor: ``(N, heads, P, W, Dv)`` in the dtype of ``q``.

    Raises:
        RuntimeError: If the kernels cannot run on these inputs (the message gives
            :func:`unsupported_reason`); ``attn_impl='torch'`` is the portable fallback.
        ValueError: If the shapes or dtypes are inconsistent.
    """
    layout = input_layout(q, k, v, r_idx)
    reason = unsupported_reason(q, k, v, r_idx, interpreter=True)
    if reason is not None:
        raise RuntimeError(f"attn_impl='triton' cannot run here: {reason}. "
                           "Use attn_impl='torch' instead.")
    return TritonRoutedAttention.apply(q, k, v, r_idx, layout, float(scale))
