"""Ahead-of-time compilation of the fused routed attention kernels, without a GPU.

Used by ``tools/gpu_check.py --compile-only``. :func:`record_routed_attention_calls` runs
the real BiFormer backbone forward and backward on the ``meta`` device (no memory, no
arithmetic) and records every routed attention call with the tensors it receives
(shapes, strides, storage offsets, dtypes of q, k, v, the routing indices and the output
gradient). :func:`~biformer_mm.ops.bra_triton.kernel_launches` turns one call into the
launches the package makes, and :func:`compile_launch` compiles one for an explicit GPU
target through Triton's public ahead-of-time API (``triton.compile`` of an
``ASTSource``, ``GPUTarget('cuda', arch, 32)``), specialised as Triton's JIT specialises
that launch (:meth:`~biformer_mm.ops.bra_triton.KernelLaunch.key`); Triton's bundled
``ptxas`` produces the cubin.
"""
from typing import Any, List, NamedTuple, Optional, Tuple
from unittest import mock

import torch
from torch import Tensor

from biformer_mm import BiFormer
from biformer_mm.models.layers import bi_level_routing_attention
from biformer_mm.ops import bra_triton

DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}
SMALLEST_SHARED_MEMORY = 99 * 1024
"""Bytes of shared memory one block may use on every sm_80..sm_90 GPU (sm_86 and sm_89
have the least: 99 KiB)."""


class RecordedCall(NamedTuple):
    """One routed attention call of the backbone: its stage (0-based) and the tensors it
    received (meta tensors with the real layout)."""
    stage: int
    q: Tensor
    k: Tensor
    v: Tensor
    r_idx: Tensor
    grad_out: Optional[Tensor]
    scale: float

    def launches(self) -> Tuple[bra_triton.KernelLaunch, bra_triton.KernelLaunch]:
        """The forward and backward kernel launches of this call."""
        return bra_triton.kernel_launches(self.q, self.k, self.v, self.r_idx, self.grad_out,
                                          self.scale, torch.device('meta'))


class _Recorder(torch.autograd.Function):
    """Stands in for the routed attention: records its inputs (and, in the backward,
    the output gradient) and returns an output laid out as the kernels' is."""

    @staticmethod
    def forward(ctx, q, k, v, r_idx, calls: list, stage: int, scale: float) -> Tensor:
        ctx.index, ctx.calls = len(calls), calls
        calls.append(RecordedCall(stage, q, k, v, r_idx, None, scale))
        return torch.empty(v.shape, dtype=v.dtype, device=v.device)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        ctx.calls[ctx.index] = ctx.calls[ctx.index]._replace(grad_out=grad_out)
        return (None, ) * 7


def build_meta_backbone(arch: Any, n_win: int, dtype: torch.dtype) -> BiFormer:
    """The BiFormer backbone with its parameters on the meta device in ``dtype``, in
    training mode."""
    return BiFormer(arch=arch, n_win=n_win, attn_impl='triton').to('meta', dtype).train()


def record_routed_attention_calls(model: BiFormer, batch: int,
                                  size: Tuple[int, int]) -> List[RecordedCall]:
    """Run ``model`` forward and backward on a meta input and record its routed
    attention calls, one per distinct pair of launches (blocks of a stage share theirs),
    in stage order."""
    calls: List[RecordedCall] = []
    stage = [0]
    hooks = [block.register_forward_pre_hook(lambda *_, i=i: stage.__setitem__(0, i))
             for i, blocks in enumerate(model.stages) for block in blocks]

    def routed_attention(q, k, v, r_idx, scale, attn_impl='auto'):
        return _Recorder.apply(q, k, v, r_idx, calls, stage[0], scale)

    dtype = next(model.parameters()).dtype
    try:
        with mock.patch.object(bi_level_routing_attention, 'routed_attention',
                               routed_attention):
            x = torch.empty(batch, model.in_channels, *size, device='meta', dtype=dtype)
            sum(o.float().sum() for o in model(x.requires_grad_())).backward()
    finally:
        for hook in hooks:
            hook.remove()
    unique = {}
    for call in calls:
        unique.setdefault((call.stage, ) + tuple(launch.key() for launch in call.launches()),
                          call)
    return list(unique.values())


def compile_launch(launch: bra_triton.KernelLaunch, arch: int):
    """Compile ``launch`` for ``sm_<arch>`` as Triton's JIT would before launching it.

    Returns:
        triton.compiler.CompiledKernel: The kernel (``hash``, ``metadata.shared``, ``asm``).

    Raises:
        Exception: Triton's compilation error, or ``RuntimeError`` when the kernel needs
            more shared memory than :data:`SMALLEST_SHARED_MEMORY`.
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    # Triton's JIT lists every specialisable argument in attrs (empty where nothing is
    # known); doing the same makes the binary's hash the one a launch would produce.
    names = launch.kernel.arg_names
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, (kind, divisible)) in enumerate(zip(names, launch.key()[2])):
        signature[name] = kind
        if kind == 'constexpr':  # an integer 1
            constexprs[name] = divisible
        if kind != 'fp32' and name not in bra_triton.NOT_SPECIALISED:
            attrs[(i, )] = [['tt.divisibility', 16]] if divisible is True else []
    for name, value in launch.kwargs.items():
        if name != 'num_warps':
            signature[name], constexprs[name] = 'constexpr', value
            attrs[(names.index(name), )] = []
    compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs, attrs),
                              target=GPUTarget('cuda', arch, 32),
                              options=dict(num_warps=launch.kwargs['num_warps']))
    if compiled.metadata.shared > SMALLEST_SHARED_MEMORY:
        raise RuntimeError(f'{launch.kernel.__name__} needs {compiled.metadata.shared} bytes '
                           f'of shared memory, more than the {SMALLEST_SHARED_MEMORY} of '
                           f'sm_86/89')
    return compiled


def multiscale_batch_sizes(scale: Tuple[int, int] = (1333, 800), divisor: int = 32,
                           batch: int = 2) -> List[Tuple[int, int]]:
    """Every padded batch input size of mmdet's ``Resize(scale, keep_ratio=True)`` and
    ``pad_size_divisor=divisor`` (the COCO 1x recipe of our detection configs).

    An image is scaled until its short side is ``scale[1]`` or its long side
    ``scale[0]``, whichever comes first, so its padded long side is a multiple of
    ``divisor`` between ``scale[1]`` and ``scale[0]`` (short side ``scale[1]``), or the
    padded ``scale[0]`` (short side up to ``scale[1]``), in either orientation. A batch
    is padded to the largest height and width of its ``batch`` images.

    Returns:
        List[Tuple[int, int]]: Sorted ``(height, width)`` sizes.
    """
    def pad(x: int) -> int:
        return -(-x // divisor) * divisor

    long_max, short_max = scale
    shapes = [(pad(long), short_max) for long in range(short_max, long_max + 1, divisor)]
    shapes += [(pad(long_max), short) for short in range(divisor, short_max + 1, divisor)]
    singles = set(shapes) | {(w, h) for h, w in shapes}
    sizes = set(singles)
    for _ in range(batch - 1):
        sizes = {(max(a[0], b[0]), max(a[1], b[1])) for a in sizes for b in singles}
    return sorted(sizes)
