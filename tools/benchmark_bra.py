"""Benchmark BiFormer's routed attention, backbone and detector side by side.

Every row runs in a fresh process, through one timing loop: the first call (with the
runtime's compilation, or the export with its eager call that names the outputs), then
after ``--warmup`` calls the median of ``--repeats`` calls of each timed step, and the
peak memory of the first call (CUDA: ``max_memory_allocated`` after a reset minus the
memory held before; CPU: peak RSS minus RSS before).

``--mode attention`` (default): every routed-attention implementation at BiFormer-S's
shapes (each routing stage at the Mask R-CNN 2x3x800x1216 / n_win 16, UperNet
2x3x512x512 / n_win 8 and classification 64x3x224x224 / n_win 7 inputs), the BiFormer-S
and mmdet Swin-T backbone training steps (forward, forward+backward), then whole-model
inference: Mask R-CNN and UperNet with BiFormer-S, Swin-T and ResNet-50 (the libraries'
own configs) on one random image at the config's test size, in ``tensor`` mode (the
network without post-processing, :mod:`biformer_mm.analysis.tensor_mode`). ``--device
cpu`` runs a reduced set.

``--mode runtimes``: the BiFormer-S and Swin-T backbones and (inference only) Mask R-CNN
with each, at one image (default 1x3x800x1216), in eager PyTorch, ``torch.compile``,
``torch.compile`` with inductor's freezing (``frozen``) and onnxruntime (the legacy
``torch.onnx`` exporter's graph, checked against eager), CPU.
Every row runs ``--runs`` times; the speed-up over eager and BiFormer-S / Swin-T are
taken within a run and reported as the median and min-max over the runs. ``--impls``
runs the BiFormer-S backbone rows once per listed algorithm, side by side in each run.

``--profile N`` (CPU): after its timings, each row profiles one more call of its timed
step and reports the ``N`` operators that took the most self time: ``torch.profiler``'s
operators (a compiled graph's generated kernels by name), or onnxruntime's own profile
by node type.

Rows name the algorithm they ran (``'chunked'``, ``'cpp'``, ``'sdpa'``, ``'triton'``,
``'gather'``; ``auto: ALGORITHM`` where a model runs its default ``attn_impl``).

Example::

    python tools/benchmark_bra.py --device cpu
    python tools/benchmark_bra.py --device cpu --mode runtimes --runs 3
    python tools/benchmark_bra.py --device cpu --mode runtimes --runs 1 --profile 10
    python tools/benchmark_bra.py --device cuda --dtype bf16
"""
import argparse
import collections
import importlib.util
import json
import math
import multiprocessing as mp
import platform
import resource
import statistics
import sys
import tempfile
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
IMPLS = ('gather', 'chunked', 'cpp', 'sdpa', 'triton')
"""The algorithms (``attn_impl`` values) rows can measure; each row names the one it ran."""
RUNTIMES = ('eager', 'compile', 'frozen', 'onnxruntime')
"""``frozen``: ``torch.compile`` with inductor's freezing (``torch._inductor.config.freezing``),
PyTorch's recipe for CPU inference: the weights become graph constants, which inductor
folds and prepacks. Inference only, as ``onnxruntime``."""
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
"""Whole models (tensor mode, inference): ours and the libraries' own configs."""


def case_list(device: str) -> List[dict]:
    """``--mode attention``: the full set on CUDA, a reduced one on CPU; both end with the
    whole-model inference rows."""
    models = [dict(kind='model', model=model, backbone=backbone)
              for model, backbone in MODEL_CONFIGS]
    steps = [dict(kind='backbone', backbone=b, batch=2 if device == 'cuda' else 1, n_win=16,
                  size=(800, 1216) if device == 'cuda' else (512, 768))
             for b in ('biformer_s', 'swin_t')]
    if device == 'cuda':
        return [dict(kind='bra', input=name, stage=s) for name in INPUTS
                for s in STAGES] + steps + models
    # Mask R-CNN stage 1 is left out: the original algorithm's gather backward alone
    # needs 12 GiB per image there. Stage 2 runs one image (7 GiB), stage 3 the real two.
    cases = [dict(kind='bra', input='maskrcnn', stage=2, batch=1),
             dict(kind='bra', input='maskrcnn', stage=3)]
    cases += [dict(kind='bra', input=name, stage=s, batch=1 if name == 'upernet' else 8)
              for name in ('upernet', 'cls') for s in (1, 2, 3)]
    return cases + steps + models


def runtime_cases(size, step: str, runtimes, backend: str) -> List[dict]:
    """``--mode runtimes``: the BiFormer-S (n_win 16, as the detection configs) and
    Swin-T backbones, then for inference Mask R-CNN with each, in every runtime but
    onnxruntime; each BiFormer-S row next to its Swin-T row.

    Mask R-CNN has no onnxruntime row: ``torch.onnx`` cannot export mmdet 3.3's Mask
    R-CNN (its box coder imports the removed ``mmdet.core.export`` while exporting) and
    our exporter refuses two-stage detectors (docs/deploy.md: mmdeploy, classic stack).
    """
    nets = [dict(kind='backbone', batch=1, n_win=16)]
    nets += [dict(kind='model', model='maskrcnn')] if step == 'infer' else []
    return [dict(net, backbone=b, size=tuple(size), step=step, runtime=r, backend=backend)
            for net in nets for r in runtimes for b in ('biformer_s', 'swin_t')
            if net['kind'] == 'backbone' or r != 'onnxruntime']


def case_name(case: dict) -> str:
    if case['kind'] == 'bra':
        spec = INPUTS[case['input']]
        h, w = spec['size']
        return (f"BRA stage {case['stage']}, {case['input']} "
                f"{case.get('batch', spec['batch'])}x3x{h}x{w}, n_win {spec['n_win']}")
    size = 'x'.join(map(str, case['size'])) if 'size' in case else 'test size'
    if case['kind'] == 'model':
        name = f"{case['model']} {case['backbone']} inference, 1 image at {size}"
    else:
        name = f"{case['backbone']} backbone {case.get('step', 'step')}, {case['batch']}x3x{size}"
    return name + (f", {case['runtime']}" if 'runtime' in case else '')


def bra_input(case: dict) -> Tuple[int, int, int, int]:
    """``(batch, height, width, channels)`` of a routed-attention case's input."""
    spec = INPUTS[case['input']]
    height, width = (math.ceil(s / 4 / 2**(case['stage'] - 1)) for s in spec['size'])
    return case.get('batch', spec['batch']), height, width, STAGES[case['stage']][0]


def gather_bytes(case: dict) -> int:
    """Memory the original algorithm's expanded gather backward needs (P-fold copy)."""
    batch, h, w, dim = bra_input(case)
    n = INPUTS[case['input']]['n_win']
    return batch * n**4 * math.ceil(h / n) * math.ceil(w / n) * 3 * dim * 4


def selected(case: dict, only: Optional[List[str]]) -> bool:
    """Whether ``--only`` selects the case: its name contains one of the strings."""
    return not only or any(part in case_name(case) for part in only)


def missing_library(case: dict) -> Optional[str]:
    """The library a case builds its model with (mmdet's Swin-T and Mask R-CNN, mmseg's
    UperNet), where it is not installed, as on a bare GPU machine; else ``None``."""
    library = ('mmseg' if case.get('model') == 'upernet' else 'mmdet' if
               case['kind'] == 'model' or case.get('backbone') == 'swin_t' else None)
    return library if library and importlib.util.find_spec(library) is None else None


def _build(case: dict, impl: Optional[str], device: str):
    """Module and input for a case: attention layers and backbones in training mode, whole
    models in eval mode; the same random weights and input in every run."""
    import torch

    torch.manual_seed(0)
    if case['kind'] == 'model':
        from mmengine.hub import get_config

        from biformer_mm.analysis import build_tensor_mode
        from biformer_mm.engine import load_config
        path = MODEL_CONFIGS[case['model'], case['backbone']]
        cfg = get_config(path) if '::' in path else load_config(path)
        module, x = build_tensor_mode(cfg, case.get('size'))
        return module.to(device), x.to(device)
    if case['kind'] == 'bra':
        from biformer_mm.models.layers import BiLevelRoutingAttention
        batch, h, w, dim = bra_input(case)
        module = BiLevelRoutingAttention(dim, dim // 32, INPUTS[case['input']]['n_win'],
                                         STAGES[case['stage']][1], attn_impl=impl)
        x = torch.randn(batch, h, w, dim, device=device)
    elif case['backbone'] == 'biformer_s':
        from biformer_mm import BiFormer
        module = BiFormer(arch='small', n_win=case['n_win'], attn_impl=impl or 'auto')
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


def _onnxruntime(module, x, path: str) -> Callable:
    """``module`` exported on ``x`` to ``path`` by the legacy ONNX exporter (mmdeploy's;
    BiFormer records :mod:`biformer_mm.ops.export_path`), as a call of an onnxruntime CPU
    session with torch's thread count."""
    import onnxruntime
    import torch

    from biformer_mm.onnx_export import INPUT_NAME, export_onnx
    export_onnx(module, x, path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    return lambda inputs: session.run(None, {INPUT_NAME: inputs.numpy()})


def _op_times(step: Callable, x, onnx_path: Optional[str], top: int
              ) -> Tuple[float, Dict[str, float]]:
    """The self time (ms) of one more call of ``step``, in all and for the ``top``
    operators that took the most: ``torch.profiler``'s operators, or for an onnxruntime
    row (``onnx_path``) onnxruntime's profile of a new session of that graph on ``x``,
    summed per node type over its second run."""
    import torch
    times = collections.Counter()
    if onnx_path is None:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            step()
        for event in prof.key_averages():
            times[event.key] += event.self_cpu_time_total / 1e3
    else:
        import onnxruntime

        from biformer_mm.onnx_export import INPUT_NAME
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(onnx_path).with_suffix(''))
        session = onnxruntime.InferenceSession(onnx_path, options,
                                               providers=['CPUExecutionProvider'])
        for _ in range(2):  # the first run allocates; the second is reported
            session.run(None, {INPUT_NAME: x.numpy()})
        events = json.loads(Path(session.end_profiling()).read_text())
        last_run = max(e['ts'] for e in events if e['name'] == 'model_run')
        for e in events:
            if e.get('cat') == 'Node' and e['ts'] >= last_run and \
                    e['name'].endswith('_kernel_time'):
                times[e['args']['op_name']] += e['dur'] / 1e3
    return sum(times.values()), dict(times.most_common(top))


def _measure(case: dict, impl: Optional[str], device: str, dtype: str, warmup: int,
             repeats: int, profile: int = 0) -> dict:
    """Child process: one row. Training rows time the forward (``no_grad``) and the
    forward+backward; inference rows (``kind='model'`` or ``step='infer'``: eval mode) the
    forward; ``step='train'`` only the forward+backward. The first call of the last
    step is timed with the runtime's preparation (``first_s``) and gives the peak.
    ``profile``: the number of operators :func:`_op_times` reports (0: none)."""
    import torch

    from biformer_mm.onnx_export import flatten_outputs, onnx_errors
    module, x = _build(case, impl, device)
    step = case.get('step')
    if step == 'infer':
        module.eval()
    cuda = device == 'cuda'
    amp = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=dtype == 'bf16')
    tmp = tempfile.TemporaryDirectory()

    def forward(grad: bool):
        with torch.set_grad_enabled(grad), amp:
            return run(x)

    def fwd_bwd():
        sum(o.float().mean() for o in flatten_outputs(forward(True))).backward()

    steps = {} if step == 'train' else {'fwd_ms': lambda: forward(False)}
    if case['kind'] != 'model' and step != 'infer':
        steps['fwd_bwd_ms'] = fwd_bwd

    def call(fn):
        fn()
        if cuda:
            torch.cuda.synchronize()

    call(lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else _rss_bytes()
    start = time.perf_counter()
    runtime = case.get('runtime', 'eager')
    if runtime == 'frozen':
        # Set for the process (a fresh one per row), not as torch.compile's options:
        # dynamo reads the flag while tracing, which options= does not reach (torch 2.14).
        import torch._inductor.config
        torch._inductor.config.freezing = True
    run = (torch.compile(module, backend=case['backend'])
           if runtime in ('compile', 'frozen') else
           _onnxruntime(module, x, f'{tmp.name}/model.onnx') if runtime == 'onnxruntime'
           else module)
    call(list(steps.values())[-1])
    result = dict(first_s=time.perf_counter() - start, input_shape=list(x.shape),
                  peak_mb=((torch.cuda.max_memory_allocated() if cuda else
                            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) -
                           base) / 2**20)
    for fn in steps.values():
        for _ in range(warmup):
            call(fn)
    for name, fn in steps.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call(fn)
            times.append(time.perf_counter() - start)
        result[name] = statistics.median(times) * 1e3
    onnx_path = f'{tmp.name}/model.onnx' if runtime == 'onnxruntime' else None
    if onnx_path:  # a live timed session slows another one's profile by about 1.4x
        run = None
    if profile:
        result['profiled_ms'], result['op_ms'] = _op_times(list(steps.values())[-1], x,
                                                           onnx_path, profile)
    if onnx_path:  # a wrong graph's time would mean nothing
        result['onnx_max_error'] = max(onnx_errors(onnx_path, module, x))
    return result


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
        _measure, (case, impl, args.device, args.dtype, args.warmup, args.repeats,
                   args.profile), args.timeout)


def available_impls(device: str) -> List[str]:
    """The algorithms measured by default: the original, what ``attn_impl='torch'``
    runs on the device (``'chunked'`` on the CPU, ``'sdpa'`` on CUDA), and the device's
    fused kernel: the C++ one on the CPU where torch has the operator (>= 2.4), Triton on
    CUDA where it is installed."""
    from biformer_mm.ops import OPERATOR
    from biformer_mm.ops.bra_triton import TRITON_AVAILABLE
    if device == 'cpu':
        return ['gather', 'chunked'] + (['cpp'] if OPERATOR else [])
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


def spread(values: List[float], unit: str = '', digits: int = 2) -> str:
    """``median (min-max)`` of the runs' values."""
    if not values:
        return ''
    return (f'{statistics.median(values):.{digits}f}{unit} '
            f'({min(values):.{digits}f}-{max(values):.{digits}f})')


def runtime_table(cases: List[dict], rows: List[dict], runs: int) -> List[dict]:
    """Print ``--mode runtimes``' table; return its cells: each row's times, and its
    ratios to the eager and the Swin-T row of the same run."""
    def matching(key: dict) -> List[dict]:
        return [r for r in rows if all(r.get(k) == v for k, v in key.items())]

    def value(case: dict, run: int, **change) -> Optional[float]:
        row = next(iter(matching(dict(case, run=run, **change))), {})
        return row.get('fwd_bwd_ms' if case['step'] == 'train' else 'fwd_ms')

    h, w = cases[0]['size']
    print(f"\n| network ({cases[0]['step']}, 1x3x{h}x{w}) | backbone | runtime | first call s "
          f"| ms (median of {runs} runs, min-max) | speed-up vs eager | BiFormer-S / Swin-T "
          f"| onnxruntime max error |")
    print('| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |')
    summary = []
    # One cell per case and algorithm (BiFormer-S backbone rows may run several).
    for case in [dict(c, impl=impl) for c in cases
                 for impl in dict.fromkeys(r['impl'] for r in matching(c))]:
        done = matching(case)
        ms = [value(case, run) for run in range(runs)]
        eager = [value(case, run, runtime='eager') for run in range(runs)]
        swin = [value({k: v for k, v in case.items() if k != 'impl'}, run, backbone='swin_t')
                for run in range(runs)]
        cell = dict(case, ms=[m for m in ms if m],
                    first_s=[r['first_s'] for r in done if 'first_s' in r],
                    vs_eager=[e / m for e, m in zip(eager, ms) if e and m],
                    vs_swin_t=[m / s for m, s in zip(ms, swin)
                               if m and s and case['backbone'] == 'biformer_s'],
                    onnx_max_error=max((r['onnx_max_error'] for r in done
                                        if 'onnx_max_error' in r), default=None),
                    errors=sorted({r['error'] for r in done if 'error' in r}))
        summary.append(cell)
        error = '' if cell['onnx_max_error'] is None else f"{cell['onnx_max_error']:.2g}"
        print(f"| {case.get('model', 'backbone')} | {case['backbone']} ({cell['impl']}) | "
              f"{case['runtime']} | {spread(cell['first_s'], digits=0)} | "
              f"{spread(cell['ms'], digits=0)} | {spread(cell['vs_eager'], 'x')} | "
              f"{spread(cell['vs_swin_t'], 'x')} | {error} |"
              + (f" failed: {'; '.join(cell['errors'])} |" if cell['errors'] else ''))
    return summary


def attention_tables(rows: List[dict]) -> None:
    """``--mode attention``'s summary: BiFormer-S's steps against Swin-T's, and the whole
    models side by side, each against its BiFormer-S row."""
    done = [r for r in rows if 'error' not in r]
    swin = next((r for r in done if r['kind'] == 'backbone' and r['backbone'] == 'swin_t'),
                None)
    for row in done:
        if swin and row['kind'] == 'backbone' and row['backbone'] == 'biformer_s':
            row['vs_swin_t_fwd_bwd'] = row['fwd_bwd_ms'] / swin['fwd_bwd_ms']
            print(f"BiFormer-S ({row['impl']}) backbone step / Swin-T step: "
                  f"{row['vs_swin_t_fwd_bwd']:.2f}x")
    models = [r for r in done if r['kind'] == 'model']
    if models:
        print('\n| model | backbone | input | ms / image | images/s | peak MB | '
              'images/s vs BiFormer-S |')
        print('| --- | --- | --- | ---: | ---: | ---: | ---: |')
    for row in models:
        ours = next((r for r in models if r['model'] == row['model']
                     and r['backbone'] == 'biformer_s'), None)
        ratio = ''
        if ours:
            row['images_per_s_vs_biformer_s'] = ours['fwd_ms'] / row['fwd_ms']
            ratio = f"{row['images_per_s_vs_biformer_s']:.2f}x"
        print(f"| {row['model']} | {row['backbone']} | {'x'.join(map(str, row['input_shape']))} "
              f"| {row['fwd_ms']:.0f} | {1e3 / row['fwd_ms']:.3f} | {row['peak_mb']:.0f} | "
              f"{ratio} |")


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cuda')
    parser.add_argument('--mode', choices=['attention', 'runtimes'], default='attention',
                        help='attention: the implementations side by side (default); '
                             'runtimes: BiFormer-S and Swin-T in eager, torch.compile '
                             '(also with freezing) and onnxruntime')
    parser.add_argument('--dtype', choices=['fp32', 'bf16'], default=None,
                        help='bf16 runs under autocast (default: bf16 on CUDA, fp32 on CPU)')
    parser.add_argument('--impls', default=None, help='comma-separated subset of ' +
                        ','.join(IMPLS) + ' (--mode runtimes: BiFormer-S backbone rows for '
                        "each, instead of one with its default attn_impl='auto')")
    parser.add_argument('--warmup', type=int, default=None)
    parser.add_argument('--repeats', type=int, default=None)
    parser.add_argument('--timeout', type=float, default=900, help='seconds per row')
    parser.add_argument('--max-gather-gb', type=float, default=None,
                        help='skip the original algorithm where its gather backward needs '
                             'more (default: 12 on CPU, 60 on CUDA)')
    parser.add_argument('--only', action='append', default=None,
                        help='run rows whose name contains this (repeat: any of these)')
    parser.add_argument('--out', default=None, help='JSON output path')
    parser.add_argument('--size', type=int, nargs=2, default=(800, 1216),
                        help='--mode runtimes: input height and width (default 800 1216)')
    parser.add_argument('--step', choices=['infer', 'train'], default='infer',
                        help='--mode runtimes: inference (no_grad; default) or a backbone '
                             'training step (eager and compile)')
    parser.add_argument('--runtimes', default=','.join(RUNTIMES),
                        help='--mode runtimes: comma-separated subset of ' + ','.join(RUNTIMES))
    parser.add_argument('--compile-backend', default='inductor',
                        help='--mode runtimes: torch.compile backend (default inductor)')
    parser.add_argument('--runs', type=int, default=3,
                        help='--mode runtimes: runs of every row (default 3)')
    parser.add_argument('--profile', type=int, default=0, metavar='N',
                        help='CPU: report the N operators with the most self time in one '
                             'more call of each row (default 0: none)')
    args = parser.parse_args(argv)
    cpu = args.device == 'cpu'
    args.dtype = args.dtype or ('fp32' if cpu else 'bf16')
    args.warmup = args.warmup if args.warmup is not None else (1 if cpu else 5)
    args.repeats = args.repeats if args.repeats is not None else (3 if cpu else 20)
    if args.max_gather_gb is None:
        args.max_gather_gb = 12 if cpu else 60
    if args.repeats < 1 or args.max_gather_gb < 0:
        parser.error('--repeats must be at least 1 and --max-gather-gb at least 0.')
    runtimes = args.runtimes.split(',')
    for name, values, known in (('--runtimes', runtimes, RUNTIMES),
                                ('--impls', args.impls.split(',') if args.impls else [],
                                 IMPLS)):
        if set(values) - set(known):
            parser.error(f'{name}: unknown {sorted(set(values) - set(known))}; '
                         f'choose from {",".join(known)}.')
    if args.profile and not cpu:
        parser.error('--profile reads CPU self times: --device cpu.')
    if args.mode == 'runtimes' and 'onnxruntime' in runtimes and (args.step == 'train'
                                                                  or not cpu):
        parser.error('onnxruntime rows are CPU inference: --device cpu --step infer, or '
                     'leave onnxruntime out of --runtimes.')
    if args.mode == 'runtimes' and 'frozen' in runtimes and args.step == 'train':
        parser.error('frozen rows are inference (frozen weights take no gradient): '
                     '--step infer, or leave frozen out of --runtimes.')
    suffix = '_runtimes' if args.mode == 'runtimes' else ''
    args.out = args.out or f'work_dirs/benchmark_bra_{args.device}{suffix}.json'
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda needs a CUDA GPU; use --device cpu here.')

    rows = []
    report = dict(date=str(date.today()), device=args.device, dtype=args.dtype,
                  torch=torch.__version__, python=platform.python_version(),
                  processor=(torch.cuda.get_device_name() if args.device == 'cuda'
                             else platform.processor() or platform.machine()),
                  threads=torch.get_num_threads(), warmup=args.warmup, repeats=args.repeats,
                  memory=('torch.cuda.max_memory_allocated after reset, minus memory before '
                          'the first call' if args.device == 'cuda' else
                          'peak RSS of a fresh process minus its RSS before the first call'),
                  command=' '.join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])),
                  rows=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every row: an interrupted run keeps what it measured
        Path(args.out).write_text(json.dumps(report, indent=2))

    if args.mode == 'runtimes':
        cases = runtime_cases(args.size, args.step, runtimes, args.compile_backend)
        cases = [c for c in cases if selected(c, args.only)]
        impls = args.impls.split(',') if args.impls else [None]
        todo = [(run, case, impl) for run in range(args.runs) for case in cases
                for impl in (impls if case['kind'] == 'backbone'
                             and case['backbone'] == 'biformer_s' else [None])]
    else:
        impls = args.impls.split(',') if args.impls else available_impls(args.device)
        cases = [c for c in case_list(args.device) if selected(c, args.only)]
        # Swin-T and the whole models run as built (BiFormer-S: its config's attn_impl).
        todo = [(0, case, impl) for case in cases for impl in (
            [None] if case['kind'] == 'model' or case.get('backbone') == 'swin_t' else impls)]
    if not todo:
        parser.error(f'--only {args.only} selects no row of --mode {args.mode}.')
    print('| case | impl | first call s | fwd ms | fwd+bwd ms | peak MB | '
          'fwd+bwd speed-up vs gather | peak memory vs gather |')
    print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    for run, case, impl in todo:
        if impl == 'gather' and case['kind'] == 'bra' and \
                gather_bytes(case) > args.max_gather_gb * 2**30:
            result = dict(error=f'skipped: the gather backward alone needs '
                                f'{gather_bytes(case) / 2**30:.0f} GiB')
        elif library := missing_library(case):
            result = dict(error=f'skipped: needs {library}, not installed')
        else:
            result = run_case(case, impl, args)
        label = impl or (f"auto: {auto_algorithm(args.device, args.dtype)}"
                         if case['backbone'] == 'biformer_s' else
                         'config' if case['kind'] == 'model' else 'mmdet')
        row = dict(case=case_name(case), impl=label, run=run, **case, **result)
        rows.append(row)
        baseline = next((r for r in rows if r['case'] == row['case'] and r['impl'] == 'gather'
                         and 'error' not in r), None)
        if baseline and 'fwd_bwd_ms' in row and impl != 'gather':
            row['speedup_fwd_bwd'] = baseline['fwd_bwd_ms'] / row['fwd_bwd_ms']
            row['memory_ratio'] = row['peak_mb'] / max(baseline['peak_mb'], 1e-6)
        save()
        cells = [row.get(key) for key in ('first_s', 'fwd_ms', 'fwd_bwd_ms', 'peak_mb',
                                          'speedup_fwd_bwd', 'memory_ratio')]
        print(f"| {row['case']} | {label} | " + (row['error'] if 'error' in row else ' | '.join(
            '' if v is None else f'{v:.{d}f}{u}' for v, (d, u) in zip(
                cells, [(1, ''), (1, ''), (1, ''), (0, ''), (2, 'x'), (3, 'x')]))) + ' |',
              flush=True)
    if args.mode == 'runtimes':
        report['summary'] = runtime_table(cases, rows, args.runs)
    else:
        attention_tables(rows)
    if args.profile:
        print(f'\nOperators by self time in one call (ms, the {args.profile} largest):')
        for row in rows:
            if 'op_ms' in row:
                print(f"- {row['case']} ({row['impl']}), run {row['run'] + 1}: "
                      f"{row['profiled_ms']:.0f} ms in all; " +
                      ', '.join(f'{op} {ms:.0f}' for op, ms in row['op_ms'].items()))
    save()
    print(f'\nwrote {args.out}')
    return report


def failed_rows(report: dict) -> List[dict]:
    """The rows that were to be measured and failed (skipped rows say why, and are not
    failures)."""
    return [r for r in report['rows'] if not r.get('error', 'skipped').startswith('skipped')]


if __name__ == '__main__':
    sys.exit(1 if failed_rows(main()) else 0)
