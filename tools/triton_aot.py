"""Ahead-of-time compilation of the fused routed attention kernels, without a GPU.

Used by ``tools/gpu_check.py --compile-only``. The kernel launches are not written down
by hand: :func:`record_routed_attention_calls` runs the real BiFormer backbone forward
and backward on the ``meta`` device (no memory, no arithmetic) and records every call of
the routed attention with the exact tensors it receives: shapes, strides, storage
offsets (hence alignment) and dtype of q, k, v, the routing indices and the output
gradient. :func:`kernel_launches` turns one call into the forward and backward
:class:`~biformer_mm.ops.bra_triton.KernelLaunch` the package itself would launch (same
code, same constexprs), and :func:`compile_for_target` has Triton compile one for an
explicit GPU target (``GPUTarget('cuda', arch, 32)``) through the kernel's own
``warmup``: Triton's JIT binder decides the specialisation (integers equal to 1,
divisibility by 16, pointer alignment) exactly as at a real launch, and Triton's
bundled ``ptxas`` produces the cubin.

Triton compiles for the current device's target; with no GPU there is no current
device, so :func:`target_driver` makes a stand-in driver active that names the target
and answers the device and stream queries of the JIT. It supports Triton 3.x releases
whose JIT asks the active driver for ``get_current_target``, ``get_current_device`` and
``get_current_stream`` (all 3.x releases to date); anything else it is asked raises,
so an incompatible Triton fails loudly.
"""
import contextlib
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple
from unittest import mock

import torch
from torch import Tensor

from biformer_mm import BiFormer
from biformer_mm.models.layers import bi_level_routing_attention
from biformer_mm.ops import bra_triton
from biformer_mm.ops.bra_triton import KernelLaunch
from biformer_mm.ops.triton_self_check import self_check_problem

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

    def signature(self) -> Tuple:
        """Everything a kernel launch depends on, for deduplication."""
        return (self.stage, self.scale) + tuple(
            (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype)
            for t in (self.q, self.k, self.v, self.r_idx, self.grad_out))


class _Recorder(torch.autograd.Function):
    """Stands in for the routed attention: records its inputs (and, in the backward,
    the output gradient) and returns an output laid out as the kernels' is."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, r_idx: Tensor, calls: list,
                stage: int, scale: float) -> Tensor:
        ctx.index = len(calls)
        ctx.calls = calls
        calls.append(RecordedCall(stage, q, k, v, r_idx, None, scale))
        return torch.empty(v.shape, dtype=v.dtype, device=v.device)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        ctx.calls[ctx.index] = ctx.calls[ctx.index]._replace(grad_out=grad_out)
        return (None,) * 7


def build_meta_backbone(arch: Any, n_win: int, dtype: torch.dtype) -> BiFormer:
    """The BiFormer backbone (``attn_impl='triton'``) with its parameters on the meta
    device in ``dtype``, in training mode."""
    return BiFormer(arch=arch, n_win=n_win, attn_impl='triton').to('meta', dtype).train()


def record_routed_attention_calls(model: BiFormer, batch: int, size: Tuple[int, int]
                                  ) -> List[RecordedCall]:
    """Run ``model`` forward and backward on a meta input and record its routed
    attention calls, one per distinct layout (blocks of a stage share theirs).

    Args:
        model (BiFormer): A backbone from :func:`build_meta_backbone`.
        batch (int): Images per batch.
        size (Tuple[int, int]): Input height and width.

    Returns:
        List[RecordedCall]: The distinct calls, in stage order.
    """
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
        unique.setdefault(call.signature(), call)
    return list(unique.values())


def kernel_launches(call: RecordedCall) -> Tuple[KernelLaunch, KernelLaunch]:
    """The forward and backward kernel launches of one call, built by the package's own
    launch code (heads-first inputs, as BiLevelRoutingAttention passes them)."""
    layout = bra_triton.input_layout(call.q, call.k, call.v, call.r_idx, None)
    forward, out, lse = bra_triton.forward_launch(call.q, call.k, call.v, call.r_idx, layout,
                                                  call.scale)
    backward = bra_triton.backward_launch(call.q, call.k, call.v, call.r_idx, out, lse,
                                          call.grad_out, layout, call.scale)[0]
    return forward, backward


def self_check_launches(call: RecordedCall) -> Tuple[KernelLaunch, KernelLaunch]:
    """The forward and backward launches of the first-use self-check that ``'auto'``
    runs before ``call`` (same dtype, head dims, tokens per region, top-k and regions)."""
    q, k, v, grad_out, r_idx = self_check_problem(call.q.dtype, call.q.shape[-1],
                                                  call.v.shape[-1], call.q.shape[-2],
                                                  *call.r_idx.shape[1:][::-1])
    return kernel_launches(RecordedCall(call.stage, q, k, v, r_idx, grad_out,
                                        q.shape[-1] ** -0.5))


class _TargetDriver:
    """The part of a Triton driver the JIT uses to compile (no launch): the target and
    a device/stream key of its own."""

    def __init__(self, target) -> None:
        self.target = target

    def get_current_target(self):
        return self.target

    def get_current_device(self) -> str:
        return f'compile-only:{self.target.backend}:{self.target.arch}'

    def get_current_stream(self, device: Any = None) -> int:
        return 0

    def __getattr__(self, name: str):
        raise RuntimeError(
            f'compile-only: this Triton ({bra_triton.TRITON_VERSION}) asked the driver for '
            f'{name!r}, which a compile without a GPU cannot answer; tools/triton_aot.py '
            f'needs updating for this Triton version.')


@contextlib.contextmanager
def target_driver(arch: int) -> Iterator[None]:
    """Make Triton's JIT compile for ``GPUTarget('cuda', arch, 32)`` inside the block.

    On a machine with a GPU, the real driver is active again afterwards; on one
    without, there is none to go back to and the stand-in stays (such a process only
    compiles).
    """
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    driver.set_active(_TargetDriver(GPUTarget('cuda', arch, 32)))
    try:
        yield
    finally:
        try:
            driver.reset_active()
        except RuntimeError:  # "0 active drivers": no GPU here
            pass


class CompiledLaunch(NamedTuple):
    """One launch compiled for one target.

    ``binary`` is Triton's hash of the compiled kernel: launches with equal hashes share
    one compilation. ``new`` says whether this launch caused a compilation in this
    process (``seconds`` is its time). ``registers`` and ``local_bytes`` (per thread;
    non-zero means register spills or a stack) come from ``cuobjdump -res-usage`` and
    are ``None`` where it is unavailable.
    """
    binary: str
    new: bool
    seconds: float
    shared_bytes: int
    registers: Optional[int]
    local_bytes: Optional[int]


def _resource_usage(cubin: bytes) -> Tuple[Optional[int], Optional[int]]:
    """Registers and local (spill + stack) bytes per thread, from Triton's bundled
    ``cuobjdump``; ``(None, None)`` if it is not there."""
    import triton
    knobs = getattr(triton, 'knobs', None)
    tool = Path(knobs.nvidia.cuobjdump.path if knobs is not None else
                Path(triton.__file__).parent / 'backends' / 'nvidia' / 'bin' / 'cuobjdump')
    if not tool.is_file():
        return None, None
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), '-res-usage', f.name], capture_output=True,
                              text=True, check=True).stdout
    found = {key: int(value) for key, value in re.findall(r'\b(REG|STACK|LOCAL):(\d+)', text)}
    return found.get('REG'), found.get('STACK', 0) + found.get('LOCAL', 0)


def compile_for_target(launch: KernelLaunch, arch: int, seen: Dict[str, Any]
                       ) -> CompiledLaunch:
    """Compile ``launch`` for ``sm_<arch>`` through the kernel's JIT, as a real launch
    on such a GPU would, without running it.

    Args:
        launch (KernelLaunch): From :func:`kernel_launches`.
        arch (int): CUDA compute capability as an int, e.g. 80 or 90.
        seen (Dict[str, Any]): Binaries already compiled in this process (updated).

    Returns:
        CompiledLaunch: What was compiled.

    Raises:
        Exception: Triton's compilation error, or ``RuntimeError`` when the kernel needs
            more shared memory than :data:`SMALLEST_SHARED_MEMORY`.
    """
    start = time.perf_counter()
    with target_driver(arch):
        compiled = launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.kwargs)
    seconds = time.perf_counter() - start
    binary = compiled.hash
    new = binary not in seen
    if new:
        seen[binary] = _resource_usage(compiled.asm['cubin'])
    shared = int(compiled.metadata.shared)
    if shared > SMALLEST_SHARED_MEMORY:
        raise RuntimeError(f'{launch.kernel.__name__} needs {shared} bytes of shared '
                           f'memory, more than the {SMALLEST_SHARED_MEMORY} of sm_86/89')
    registers, local_bytes = seen[binary]
    return CompiledLaunch(binary[:12], new, seconds if new else 0.0, shared, registers,
                          local_bytes)


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
