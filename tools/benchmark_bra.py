"""Benchmark the Bi-Level Routing Attention implementations side by side.

For every case and implementation this measures, in a fresh process each, the median
forward time, the median forward+backward time (after warm-up) and the peak memory of
one forward+backward:

- CUDA: ``torch.cuda.max_memory_allocated()`` after a reset, minus the memory held
  before the step (inputs and weights).
- CPU: the process's peak resident set size (``ru_maxrss``) minus its resident size
  before the first step, so that each implementation is measured alone.

Cases use BiFormer-S's real shapes: each routing stage of Mask R-CNN (2x3x800x1216,
n_win 16), UperNet (2x3x512x512, n_win 8) and classification (64x3x224x224, n_win 7)
inputs, the whole BiFormer-S backbone training step, and mmdet's Swin-T backbone step at
the same input as an outside reference. ``--device cpu`` runs a reduced set.

Whole-model inference rows run a Mask R-CNN and an UperNet with BiFormer-S, mmdet's /
mmseg's Swin-T and ResNet-50 (their own configs) on one random image at the config's
test size (its test ``Resize`` scale: 800x1333 and 512x2048), under ``torch.no_grad``, in
``tensor`` mode: the network without post-processing, whose cost random weights would
make meaningless (see :mod:`biformer_mm.analysis.tensor_mode`). They report the median
time per image (images/s) and the peak memory of one forward; BiFormer-S runs its
default ``attn_impl``.

Rows name the algorithm they ran (``'chunked'``, ``'sdpa'``, ``'triton'``, ``'gather'``;
``auto: ALGORITHM`` where a model runs its default ``attn_impl``).

``--mode compile`` instead compares BiFormer-S and mmdet's Swin-T backbones at one image
(default 1x3x800x1216), eager and ``torch.compile`` (inductor), side by side: each row
``--runs`` times in a fresh process, reporting the first step (compilation included)
and the median step with the runs' spread.

Example::

    python tools/benchmark_bra.py --device cpu --out work_dirs/benchmark_bra_cpu.json
    python tools/benchmark_bra.py --device cpu --mode compile --runs 3
    python tools/benchmark_bra.py --device cuda --dtype bf16
"""
import argparse
import json
import math
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

# BiFormer-S routing stages: (channels, top-k).
STAGES = {1: (64, 1), 2: (128, 4), 3: (256, 16)}
INPUTS = {
    'maskrcnn': dict(batch=2, size=(800, 1216), n_win=16),
    'upernet': dict(batch=2, size=(512, 512), n_win=8),
    'cls': dict(batch=64, size=(224, 224), n_win=7),
}
IMPLS = ('gather', 'chunked', 'sdpa', 'triton')
"""The algorithms (``attn_impl`` values) rows can measure; each row names the one it ran."""
REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_CONFIGS = {
    ('maskrcnn', 'biformer_s'): str(REPO_ROOT / 'configs/detection/maskrcnn_biformer_s.py'),
    ('maskrcnn', 'swin_t'): 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    ('maskrcnn', 'r50'): 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    ('upernet', 'biformer_s'): str(REPO_ROOT / 'configs/segmentation/upernet_biformer_s.py'),
    ('upernet', 'swin_t'):
    'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    ('upernet', 'r50'): 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
}
"""Whole models for the inference rows: ours and the libraries' own configs."""


def case_list(device: str) -> List[dict]:
    """Cases for a device: the full set on CUDA, a reduced one on CPU; both end with the
    whole-model inference rows."""
    models = [dict(kind='model', model=model, backbone=backbone)
              for model, backbone in MODEL_CONFIGS]
    if device == 'cuda':
        cases = [dict(kind='bra', input=name, stage=s) for name in INPUTS for s in STAGES]
        size = (800, 1216)
        cases += [dict(kind='backbone', model='biformer_s', batch=2, size=size, n_win=16),
                  dict(kind='backbone', model='swin_t', batch=2, size=size)]
        return cases + models
    # Mask R-CNN stage 1 is left out: the original algorithm's gather backward alone
    # needs 12 GiB per image there. Stage 2 runs one image (7 GiB), stage 3 the real two.
    cases = [dict(kind='bra', input='maskrcnn', stage=2, batch=1),
             dict(kind='bra', input='maskrcnn', stage=3)]
    cases += [dict(kind='bra', input='upernet', stage=s, batch=1) for s in (1, 2, 3)]
    cases += [dict(kind='bra', input='cls', stage=s, batch=8) for s in (1, 2, 3)]
    size = (512, 768)
    cases += [dict(kind='backbone', model='biformer_s', batch=1, size=size, n_win=16),
              dict(kind='backbone', model='swin_t', batch=1, size=size)]
    return cases + models


def model_config(case: dict):
    """The config of a whole-model case."""
    from mmengine.hub import get_config

    from biformer_mm.engine import load_config
    path = MODEL_CONFIGS[case['model'], case['backbone']]
    return get_config(path) if '::' in path else load_config(path)


def case_name(case: dict) -> str:
    if case['kind'] == 'model':
        size = 'x'.join(map(str, case['size'])) if 'size' in case else 'test size'
        return f"{case['model']} {case['backbone']} inference, 1 image at {size}"
    if case['kind'] == 'bra':
        spec = INPUTS[case['input']]
        batch = case.get('batch', spec['batch'])
        h, w = spec['size']
        return (f"BRA stage {case['stage']}, {case['input']} {batch}x3x{h}x{w}, "
                f"n_win {spec['n_win']}")
    h, w = case['size']
    return f"{case['model']} backbone step, {case['batch']}x3x{h}x{w}"


def gather_bytes(case: dict) -> int:
    """Memory the original algorithm's expanded gather backward needs (P-fold copy)."""
    spec = INPUTS[case['input']]
    batch = case.get('batch', spec['batch'])
    dim, _ = STAGES[case['stage']]
    h, w = (math.ceil(s / 4 / 2**(case['stage'] - 1)) for s in spec['size'])
    n = spec['n_win']
    tokens = math.ceil(h / n) * math.ceil(w / n)
    return batch * n**4 * tokens * 3 * dim * 4


def _build(case: dict, impl: Optional[str], device: str):
    """Module and input for a case."""
    import torch

    if case['kind'] == 'model':
        from biformer_mm.analysis import build_tensor_mode
        module, x = build_tensor_mode(model_config(case), case.get('size'))
        return module.to(device), x.to(device)
    if case['kind'] == 'bra':
        from biformer_mm.models.layers import BiLevelRoutingAttention
        spec = INPUTS[case['input']]
        batch = case.get('batch', spec['batch'])
        dim, topk = STAGES[case['stage']]
        h, w = (math.ceil(s / 4 / 2**(case['stage'] - 1)) for s in spec['size'])
        module = BiLevelRoutingAttention(dim, dim // 32, spec['n_win'], topk, attn_impl=impl)
        x = torch.randn(batch, h, w, dim, device=device)
    elif case['model'] == 'biformer_s':
        from biformer_mm import BiFormer
        module = BiFormer(arch='small', n_win=case['n_win'], attn_impl=impl)
        x = torch.randn(case['batch'], 3, *case['size'], device=device)
    else:
        from mmdet.models.backbones import SwinTransformer
        from mmdet.utils import register_all_modules
        register_all_modules()  # Swin's layers are built through mmdet's registries
        module = SwinTransformer()  # Swin-T: embed 96, depths (2, 2, 6, 2), window 7
        x = torch.randn(case['batch'], 3, *case['size'], device=device)
    module.to(device)
    module.train()  # not chained: mmdet's SwinTransformer.train() returns None
    return module, x.requires_grad_(case['kind'] == 'bra')


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _measure(case: dict, impl: Optional[str], device: str, dtype: str, warmup: int,
             repeats: int) -> dict:
    """Child process: time and measure one implementation on one case."""
    import torch
    module, x = _build(case, impl, device)
    inference = case['kind'] == 'model'
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16,
                         enabled=dtype == 'bf16')

    def sync():
        if device == 'cuda':
            torch.cuda.synchronize()

    def forward():
        with amp:
            out = module(x)
        return out if isinstance(out, torch.Tensor) else sum(o.float().mean() for o in out)

    def step():
        forward().float().mean().backward()

    def infer():
        with torch.no_grad(), amp:
            module(x)

    sync()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    (infer if inference else step)()
    sync()
    if device == 'cuda':
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    for _ in range(warmup):
        (infer if inference else step)()

    def timed(fn) -> float:
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    if inference:
        fwd = timed(infer)
        return dict(fwd_ms=fwd, images_per_s=1e3 / fwd, peak_mb=peak / 2**20,
                    input_shape=list(x.shape))
    with torch.no_grad():
        fwd = timed(forward)
    fwd_bwd = timed(step)
    return dict(fwd_ms=fwd, fwd_bwd_ms=fwd_bwd, peak_mb=peak / 2**20)


def _measure_compile(case: dict, device: str, dtype: str, warmup: int,
                     repeats: int) -> dict:
    """Child process: one backbone (BiFormer-S with its default ``attn_impl``, or
    mmdet's Swin-T), eager or ``torch.compile(backend=case['compile'])``: the first
    step's time (for a compiled module: compilation included) and the median step after
    warm-up. ``case['step']`` is ``'infer'`` (eval mode, ``torch.no_grad``) or
    ``'train'`` (forward and backward)."""
    import torch
    biformer = case['model'] == 'biformer_s'
    module, x = _build(dict(case, kind='backbone'), 'auto' if biformer else None, device)
    train = case['step'] == 'train'
    if not train:
        module.eval()
    if case['compile']:
        module = torch.compile(module, backend=case['compile'])
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == 'bf16')

    def step():
        with torch.set_grad_enabled(train), amp:
            outs = module(x)
        if train:
            sum(o.float().mean() for o in outs).backward()
        if device == 'cuda':
            torch.cuda.synchronize()

    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return dict(first_step_s=first, step_ms=statistics.median(times) * 1e3,
                algorithm=auto_algorithm(device, dtype) if biformer else 'n/a')


def compile_cases(size: Tuple[int, int], backend: str, step: str) -> List[dict]:
    """BiFormer-S (n_win 16, as the detection configs) and mmdet's Swin-T backbones,
    eager and compiled, at one image of ``size``."""
    return [dict(kind='compile', model=model, batch=1, size=tuple(size), n_win=16,
                 compile=compiled, step=step)
            for model in ('biformer_s', 'swin_t') for compiled in (None, backend)]


def compile_mode_name(case: dict) -> str:
    return f"compile ({case['compile']})" if case['compile'] else 'eager'


def run_compile_mode(args, rows: List[dict], save: Callable[[], None]) -> None:
    """``--mode compile``: :func:`compile_cases`, each ``--runs`` times in a fresh
    process, then a table of each row's median over the runs with the runs' spread."""
    cases = compile_cases(args.size, args.compile_backend, args.compile_step)
    for run in range(args.runs):
        for case in cases:
            result = run_in_fresh_process(
                _measure_compile, (case, args.device, args.dtype, args.warmup, args.repeats),
                args.timeout)
            rows.append(dict(run=run, mode=compile_mode_name(case), **case, **result))
            save()
            print(f"run {run + 1}/{args.runs}: {case['model']} {compile_mode_name(case)}: "
                  f"{result}", flush=True)
    print(f"\n| backbone ({args.compile_step}, 1x3x{args.size[0]}x{args.size[1]}) | mode | "
          f"algorithm | first step s (median) | ms / step (median of {args.runs} runs) | "
          f"spread (min-max) | vs eager | vs Swin-T |")
    print('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |')
    summary = {}
    for case in cases:
        mode = compile_mode_name(case)
        done = [r for r in rows if r['model'] == case['model'] and r['mode'] == mode
                and 'error' not in r]
        if not done:
            print(f"| {case['model']} | {mode} | failed: "
                  f"{next(r for r in rows if r['model'] == case['model'])['error']} |")
            continue
        ms = [r['step_ms'] for r in done]
        median = summary[case['model'], mode] = statistics.median(ms)
        eager = summary.get((case['model'], 'eager'))
        swin = summary.get(('swin_t', mode))
        print(f"| {case['model']} | {mode} | {done[0]['algorithm']} | "
              f"{statistics.median(r['first_step_s'] for r in done):.1f} | {median:.0f} | "
              f"{min(ms):.0f}-{max(ms):.0f} | {eager / median:.2f}x | "
              f"{f'{median / swin:.2f}x' if swin else ''} |")


def _run_and_report(fn: Callable[..., dict], args: tuple, queue) -> None:
    try:
        queue.put(fn(*args))
    except Exception as e:  # reported as the result, the caller goes on
        queue.put(dict(error=f'{type(e).__name__}: {e}'.splitlines()[0][:160]))


def run_in_fresh_process(fn: Callable[..., dict], args: tuple, timeout: float) -> dict:
    """``fn(*args)`` in a new (spawned) Python process: its result, or
    ``dict(error=...)`` when it raised, crashed or ran past ``timeout`` seconds.

    ``fn`` must be importable by the child (a module-level function).
    """
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_and_report, args=(fn, args, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        return dict(error=f'timed out after {timeout} s')
    return queue.get() if not queue.empty() else dict(error=f'exit code {proc.exitcode}')


def run_case(case: dict, impl: Optional[str], args) -> dict:
    return run_in_fresh_process(
        _measure, (case, impl, args.device, args.dtype, args.warmup, args.repeats),
        args.timeout)


def print_inference_table(rows: List[dict]) -> None:
    """The whole-model rows side by side, each model against its BiFormer-S row."""
    models = [r for r in rows if r['kind'] == 'model' and 'error' not in r]
    if not models:
        return
    print('\n| model | backbone | input | ms / image | images/s | peak MB | '
          'images/s vs BiFormer-S |')
    print('| --- | --- | --- | ---: | ---: | ---: | ---: |')
    for row in models:
        ours = next((r for r in models if r['model'] == row['model']
                     and r['backbone'] == 'biformer_s'), None)
        if ours:
            row['images_per_s_vs_biformer_s'] = row['images_per_s'] / ours['images_per_s']
        ratio = f"{row['images_per_s_vs_biformer_s']:.2f}x" if ours else ''
        print(f"| {row['model']} | {row['backbone']} | {'x'.join(map(str, row['input_shape']))} "
              f"| {row['fwd_ms']:.0f} | {row['images_per_s']:.3f} | {row['peak_mb']:.0f} | "
              f"{ratio} |")


def available_impls(device: str) -> List[str]:
    """The algorithms measured by default: the original and what ``attn_impl='torch'``
    runs on the device (``'chunked'`` on the CPU, ``'sdpa'`` on CUDA), and Triton on
    CUDA where it is installed."""
    from biformer_mm.ops.bra_triton import TRITON_AVAILABLE
    if device == 'cpu':
        return ['gather', 'chunked']
    return ['gather', 'sdpa'] + (['triton'] if TRITON_AVAILABLE else [])


def auto_algorithm(device: str, dtype: str) -> str:
    """The algorithm BiFormer-S's default ``attn_impl='auto'`` runs on ``device`` in
    ``dtype`` (its head dim is 32)."""
    import torch

    from biformer_mm.ops import resolve_algorithm
    dtype = torch.bfloat16 if dtype == 'bf16' else torch.float32
    q = torch.zeros(1, 1, 4, 4, 32, device=device, dtype=dtype)
    return resolve_algorithm('auto', q, q, q, torch.zeros(1, 4, 1, dtype=torch.long,
                                                           device=device))


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cuda')
    parser.add_argument('--dtype', choices=['fp32', 'bf16'], default=None,
                        help='bf16 runs under autocast (default: bf16 on CUDA, fp32 on CPU)')
    parser.add_argument('--impls', default=None, help='comma-separated subset of ' +
                        ','.join(IMPLS))
    parser.add_argument('--warmup', type=int, default=None)
    parser.add_argument('--repeats', type=int, default=None)
    parser.add_argument('--timeout', type=float, default=600, help='seconds per measurement')
    parser.add_argument('--max-gather-gb', type=float, default=None,
                        help='skip the original algorithm where its gather backward needs '
                             'more (default: 12 on CPU, 60 on CUDA)')
    parser.add_argument('--only', default=None, help='run cases whose name contains this')
    parser.add_argument('--out', default=None, help='JSON output path')
    parser.add_argument('--mode', choices=['attention', 'compile'], default='attention',
                        help='attention: the implementations side by side (default); '
                             'compile: BiFormer-S and Swin-T backbones eager vs '
                             'torch.compile')
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1216),
                        help='--mode compile: input height and width (default 800 1216)')
    parser.add_argument('--compile-backend', default='inductor',
                        help='--mode compile: torch.compile backend (default inductor)')
    parser.add_argument('--compile-step', choices=['infer', 'train'], default='infer',
                        help='--mode compile: inference (no_grad) or a training step')
    parser.add_argument('--runs', type=int, default=3,
                        help='--mode compile: fresh-process runs per row (default 3)')
    args = parser.parse_args(argv)
    cpu = args.device == 'cpu'
    args.dtype = args.dtype or ('fp32' if cpu else 'bf16')
    args.warmup = args.warmup if args.warmup is not None else (1 if cpu else 5)
    args.repeats = args.repeats or (3 if cpu else 20)
    args.max_gather_gb = args.max_gather_gb or (12 if cpu else 60)
    suffix = '_compile' if args.mode == 'compile' else ''
    args.out = args.out or f'work_dirs/benchmark_bra_{args.device}{suffix}.json'
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda needs a CUDA GPU; use --device cpu here.')
    impls = args.impls.split(',') if args.impls else available_impls(args.device)

    rows = []
    report = dict(date=str(date.today()), device=args.device, dtype=args.dtype,
                  torch=torch.__version__, python=platform.python_version(),
                  processor=(torch.cuda.get_device_name() if args.device == 'cuda'
                             else platform.processor() or platform.machine()),
                  threads=torch.get_num_threads(), warmup=args.warmup, repeats=args.repeats,
                  memory=('torch.cuda.max_memory_allocated after reset, minus memory before '
                          'the step' if args.device == 'cuda' else
                          'peak RSS of a fresh process minus its RSS before the first step'),
                  command=' '.join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
                  rows=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every row: an interrupted run keeps what it measured
        Path(args.out).write_text(json.dumps(report, indent=2))

    if args.mode == 'compile':
        run_compile_mode(args, rows, save)
        print(f'\nwrote {args.out}')
        return report

    print('| case | impl | fwd ms | fwd+bwd ms | peak MB | fwd+bwd speed-up vs gather | '
          'peak memory vs gather |')
    print('| --- | --- | ---: | ---: | ---: | ---: | ---: |')
    for case in case_list(args.device):
        name = case_name(case)
        if args.only and args.only not in name:
            continue
        # Swin-T and the whole models run as built (BiFormer-S: its config's attn_impl).
        case_impls = [None] if case['kind'] == 'model' or case.get('model') == 'swin_t' \
            else impls
        baseline = None
        for impl in case_impls:
            if impl == 'gather' and case['kind'] == 'bra' and \
                    gather_bytes(case) > args.max_gather_gb * 2**30:
                result = dict(error=f'skipped: the gather backward alone needs '
                                    f'{gather_bytes(case) / 2**30:.0f} GiB')
            else:
                result = run_case(case, impl, args)
            if impl is None:  # as built: name the algorithm BiFormer-S's 'auto' runs
                impl = (f"auto: {auto_algorithm(args.device, args.dtype)}"
                        if 'biformer_s' in (case.get('model'), case.get('backbone')) else
                        'config' if case['kind'] == 'model' else 'mmdet')
            row = dict(case=name, impl=impl, **case, **result)
            rows.append(row)
            save()
            if impl == 'gather' and 'error' not in result:
                baseline = result
            if 'error' in result:
                print(f"| {name} | {row['impl']} | {result['error']} | | | | |", flush=True)
                continue
            if case['kind'] == 'model':
                print(f"| {name} | {row['impl']} | {result['fwd_ms']:.1f} | | "
                      f"{result['peak_mb']:.0f} | | |", flush=True)
                continue
            speed = mem = ''
            if baseline and impl != 'gather':
                row['speedup_fwd_bwd'] = baseline['fwd_bwd_ms'] / result['fwd_bwd_ms']
                row['memory_ratio'] = result['peak_mb'] / max(baseline['peak_mb'], 1e-6)
                speed = f"{row['speedup_fwd_bwd']:.2f}x"
                mem = f"{row['memory_ratio']:.3f}x"
            print(f"| {name} | {row['impl']} | {result['fwd_ms']:.1f} | "
                  f"{result['fwd_bwd_ms']:.1f} | {result['peak_mb']:.0f} | {speed} | {mem} |",
                  flush=True)
    swin = next((r for r in rows if r.get('model') == 'swin_t' and 'error' not in r), None)
    if swin:
        for row in rows:
            if row.get('model') == 'biformer_s' and 'error' not in row:
                row['vs_swin_t_fwd_bwd'] = row['fwd_bwd_ms'] / swin['fwd_bwd_ms']
                print(f"BiFormer-S ({row['impl']}) backbone step / Swin-T step: "
                      f"{row['vs_swin_t_fwd_bwd']:.2f}x")
    print_inference_table(rows)
    save()
    print(f'\nwrote {args.out}')
    return report


if __name__ == '__main__':
    main()
