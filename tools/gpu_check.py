"""The whole GPU verification of biformer_mm in one command, and its ahead-of-time
compilation without a GPU.

On a machine with a CUDA GPU (needs torch with Triton, pytest, mmengine, mmcv or
mmcv-lite, and timm; no internet)::

    python tools/gpu_check.py [--out-dir work_dirs/gpu_check] [--quick]

runs, in this order and within ``--budget`` seconds (default 600):

- ``environment``: versions, the GPU, which optional packages import;
- ``self_check``: the first-use self-check of the fused kernels in fp32, fp16 and bf16;
- ``tests``: the CUDA tests of ``tests/test_bra_triton.py``;
- ``training``: training steps of the BiFormer-S backbone at 2x3x800x1216 under bf16
  autocast with ``triton``, ``torch`` and ``gather`` from the same seed, each in a fresh
  process: the losses must agree step by step; time and peak memory of each;
- ``benchmark``: ``tools/benchmark_bra.py --device cuda`` and the GPU targets;
- ``maskrcnn``: where mmdet and mmcv with CUDA ops import, 20 iterations of Mask R-CNN
  BiFormer-T on the toy COCO data with ``--amp``; otherwise skipped, with the reason.

It writes ``gpu_check.json`` and ``gpu_check.md`` to ``--out-dir`` after every step and
exits 1 if a step failed. Without CUDA it exits at once with status 2. ``--quick`` is a
short smoke run of every step (BiFormer-T at a small input, a few steps, one benchmark
case); ``--device cpu --quick`` is a dry run of the same code on the CPU (the kernels'
self-check then runs in Triton's CPU interpreter).

Without a GPU (CI)::

    python tools/gpu_check.py --compile-only [--archs 80,90] [--dtypes fp32,fp16,bf16]
        [--models tiny,small,base] [--inputs maskrcnn,upernet,cls] [--multiscale]

compiles, for each GPU architecture, every forward and backward kernel configuration
that BiFormer-T/S/B launch at the benchmark's inputs (see ``tools/triton_aot.py``),
writes ``compile_only.json`` / ``compile_only.md`` and exits 1 on any failure.
``--multiscale`` also counts the distinct compilations that every batch size of the
COCO 1x recipe (BiFormer-T, bf16, the first arch) causes.
"""
import argparse
import importlib.util
import json
import math
import os
import os.path as osp
import platform
import re
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))  # benchmark_bra, triton_aot (spawned children too)

STEPS = ('environment', 'self_check', 'tests', 'training', 'benchmark', 'maskrcnn')
STEP_SECONDS = dict(environment=30, self_check=60, tests=150, training=180, benchmark=240,
                    maskrcnn=150)
"""Most seconds each step may take on one H100 (the whole run also stays within
``--budget``)."""
LOSS_RTOL = 0.02
"""Largest relative difference of a training step's loss from the reference
implementation's (bf16 autocast rounds every matmul; 50 AdamW steps let the runs drift
slightly apart)."""
TRAINING = dict(arch='small', batch=2, size=(800, 1216), n_win=16, steps=50)
QUICK_TRAINING = dict(arch='tiny-1', batch=1, size=(64, 96), n_win=4, steps=2)
"""``tiny-1``: BiFormer-T with one block per stage."""
SELF_CHECK = dict(w=20, topk=16, regions=256)
QUICK_SELF_CHECK = dict(w=20, topk=2, regions=16)
"""The self-check's problem: Mask R-CNN stage 3 of BiFormer (256 regions of 20 tokens,
top-16); ``--quick`` (and the CPU interpreter) a smaller one."""
MASKRCNN_ITERATIONS = 20
EXPECTED = dict(maskrcnn_stage3_speedup=5.0, maskrcnn_stage3_memory=0.2, step_speedup=2.0,
                step_memory=0.5)
"""The GPU targets of docs/benchmarks.md."""


class Report:
    """The steps' results, written as JSON and markdown after every step."""

    def __init__(self, out_dir: str, name: str, header: dict) -> None:
        self.json_path = osp.join(out_dir, f'{name}.json')
        self.md_path = osp.join(out_dir, f'{name}.md')
        self.data = dict(header, steps={})
        os.makedirs(out_dir, exist_ok=True)

    def add(self, step: str, result: dict) -> None:
        self.data['steps'][step] = result
        self.write()

    def failed(self) -> List[str]:
        return [name for name, r in self.data['steps'].items() if r['status'] == 'failed']

    def write(self) -> None:
        Path(self.json_path).write_text(json.dumps(self.data, indent=2, default=str))
        Path(self.md_path).write_text(to_markdown(self.data))


def to_markdown(data: dict) -> str:
    """The report as markdown: the header, a summary table and each step's details."""
    lines = [f"# {data['title']}", '']
    lines += [f'- {key}: {value}' for key, value in data.items()
              if key not in ('title', 'steps')]
    lines += ['', '| step | status | seconds | summary |', '| --- | --- | ---: | --- |']
    for name, result in data['steps'].items():
        lines.append(f"| {name} | {result['status']} | {result.get('seconds', 0):.1f} | "
                     f"{result.get('summary', '')} |")
    for name, result in data['steps'].items():
        lines += ['', f'## {name}', '']
        lines += result.get('markdown') or [f"{result['status']}: {result['summary']}"]
    return '\n'.join(lines) + '\n'


def step_result(status: str, summary: str, markdown: Optional[List[str]] = None,
                **details) -> dict:
    return dict(status=status, summary=summary, markdown=markdown or [], **details)


# ---------------------------------------------------------------------------- steps


def importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def mmcv_cuda_ops() -> Optional[str]:
    """Why mmcv's CUDA ops are unusable here, or ``None``."""
    try:
        from mmcv.ops import get_compiling_cuda_version
    except ImportError as e:
        return f'mmcv.ops does not import ({e}): mmcv-lite or mmcv without ops'
    if get_compiling_cuda_version() == 'not available':
        return 'mmcv was built without CUDA ops'
    return None


def environment_step(args) -> dict:
    import torch

    from biformer_mm.ops import bra_triton
    packages = {name: importable(name) for name in
                ('mmengine', 'mmcv', 'timm', 'mmdet', 'mmseg', 'pytest')}
    info = dict(python=platform.python_version(), torch=torch.__version__,
                cuda=torch.version.cuda, triton=bra_triton.TRITON_VERSION,
                triton_unavailable=bra_triton.TRITON_UNAVAILABLE, packages=packages)
    if args.device == 'cuda':
        info.update(gpu=torch.cuda.get_device_name(),
                    capability='.'.join(map(str, torch.cuda.get_device_capability())))
    missing = [name for name in ('mmengine', 'mmcv', 'timm', 'pytest') if not packages[name]]
    md = [f'- {key}: {value}' for key, value in info.items()]
    if missing:
        return step_result('failed', f'missing {missing}', md, **info)
    return step_result('passed', f"torch {info['torch']}, Triton {info['triton']}"
                       + (f", {info['gpu']}" if 'gpu' in info else ''), md, **info)


def self_check_step(args) -> dict:
    """The kernels' first-use self-check per dtype, twice (the first run compiles)."""
    import torch

    from biformer_mm.ops import bra_triton
    from biformer_mm.ops.triton_self_check import run_self_check
    if args.device == 'cpu' and not bra_triton.INTERPRETER:
        return run_step_in_interpreter('self_check', args)
    if bra_triton.TRITON_UNAVAILABLE:
        return step_result('failed', bra_triton.TRITON_UNAVAILABLE)
    device = torch.device(args.device)
    rows, failures = {}, []
    md = ['| dtype | result | first run s | second run s | max abs errors |',
          '| --- | --- | ---: | ---: | --- |']
    for name, dtype in (('fp32', torch.float32), ('fp16', torch.float16),
                        ('bf16', torch.bfloat16)):
        probe = torch.zeros(1, 1, 1, 1, 32, device=device, dtype=dtype)
        reason = bra_triton.unsupported_reason(
            probe, probe, probe, torch.zeros(1, 1, 1, dtype=torch.long, device=device))
        if reason is not None:
            rows[name] = dict(result=f'not used here: {reason}')
            md.append(f'| {name} | not used here: {reason} | | | |')
            continue
        problem = QUICK_SELF_CHECK if args.quick else SELF_CHECK
        first, second = (run_self_check(device, dtype, 32, 32, **problem) for _ in range(2))
        result = 'passed' if first.error is None and second.error is None else \
            f'FAILED: {first.error or second.error}'
        if first.error or second.error:
            failures.append(name)
        rows[name] = dict(result=result, first_seconds=first.seconds,
                          second_seconds=second.seconds, max_errors=second.max_errors)
        errors = ', '.join(f'{k} {v:.2g}' for k, v in second.max_errors.items())
        md.append(f'| {name} | {result} | {first.seconds:.2f} | {second.seconds:.3f} | '
                  f'{errors} |')
    status = 'failed' if failures else 'passed'
    return step_result(status, f'failed: {failures}' if failures else 'all dtypes agree',
                       md, dtypes=rows)


def run_step_in_interpreter(step: str, args) -> dict:
    """Run one step of this tool in a child process with ``TRITON_INTERPRET=1`` (the
    CPU dry run of the kernels) and return its result."""
    out_dir = osp.join(args.out_dir, f'{step}_interpreter')
    env = dict(os.environ, TRITON_INTERPRET='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (ROOT, env.get('PYTHONPATH'))))
    cmd = [sys.executable, osp.abspath(__file__), '--device', 'cpu', '--steps', step,
           '--out-dir', out_dir] + (['--quick'] if args.quick else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          timeout=args.step_timeout)
    report = osp.join(out_dir, 'gpu_check.json')
    if not osp.isfile(report):
        return step_result('failed', f'interpreter run failed ({proc.returncode})',
                           ['```', proc.stdout[-2000:], proc.stderr[-2000:], '```'])
    result = json.loads(Path(report).read_text())['steps'][step]
    result['summary'] = f"{result['summary']} (Triton CPU interpreter)"
    return result


def tests_step(args) -> dict:
    """The CUDA tests of tests/test_bra_triton.py, through pytest."""
    junit = osp.join(args.out_dir, 'gpu_tests.xml')
    cmd = [sys.executable, '-m', 'pytest', osp.join(ROOT, 'tests', 'test_bra_triton.py'),
           '-k', 'gpu', '-q', '-p', 'no:cacheprovider', f'--junitxml={junit}']
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (ROOT, env.get('PYTHONPATH'))))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=args.step_timeout)
    if not osp.isfile(junit):
        return step_result('failed', f'pytest exited {proc.returncode} without a report',
                           ['```', proc.stdout[-3000:], proc.stderr[-2000:], '```'])
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
    counts = {key: int(suite.get(key, 0)) for key in ('tests', 'failures', 'errors',
                                                      'skipped')}
    failed = [case.get('name') for case in suite.iter('testcase')
              if case.find('failure') is not None or case.find('error') is not None]
    md = [f"- {counts['tests']} tests: {counts['failures']} failed, {counts['errors']} "
          f"errors, {counts['skipped']} skipped", f'- command: `{" ".join(cmd[1:])}`']
    md += [f'- failed: `{name}`' for name in failed]
    if counts['failures'] or counts['errors'] or proc.returncode not in (0, 5):
        return step_result('failed', f'{len(failed)} of {counts["tests"]} failed', md,
                           failed=failed, **counts)
    if counts['skipped'] == counts['tests']:
        return step_result('skipped', f"all {counts['tests']} skipped: no CUDA GPU here", md,
                           **counts)
    return step_result('passed', f"{counts['tests'] - counts['skipped']} passed", md,
                       **counts)


def train_backbone(impl: str, arch: str, batch: int, size: tuple, n_win: int, steps: int,
                   device: str, seed: int = 0) -> dict:
    """``steps`` AdamW steps of the BiFormer backbone with ``attn_impl=impl`` under bf16
    autocast, on a fixed random batch and fixed random targets of its outputs (MSE).

    Runs in a fresh process per implementation (see :func:`training_step`).

    Returns:
        dict: ``losses`` per step, ``step_ms`` (median step time after the first),
        ``first_step_ms`` and ``peak_mb`` (peak memory of the steps above what the model
        and batch hold; peak RSS growth on the CPU).
    """
    import resource

    import torch
    import torch.nn.functional as F

    from biformer_mm import BiFormer
    torch.manual_seed(seed)
    if arch == 'tiny-1':
        arch = dict(BiFormer.arch_zoo['tiny'], depths=[1, 1, 1, 1])
    model = BiFormer(arch=arch, n_win=n_win, attn_impl=impl)
    model.init_weights()
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, 3, *size, generator=gen).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = device == 'cuda'
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    targets, losses, times = None, [], []
    for _ in range(steps):
        start = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            outs = model(x)
        if targets is None:
            targets = [torch.randn(o.shape, generator=gen).to(device) for o in outs]
        loss = sum(F.mse_loss(o.float(), t) for o, t in zip(outs, targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())  # synchronises
        times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return dict(losses=losses, first_step_ms=times[0] * 1e3,
                step_ms=statistics.median(times[1:] or times) * 1e3, peak_mb=peak / 2**20)


def training_step(args) -> dict:
    """The same training steps with every implementation; losses agree step by step."""
    from benchmark_bra import run_in_fresh_process

    from biformer_mm.ops import bra_triton
    cfg = QUICK_TRAINING if args.quick else TRAINING
    impls = ['triton', 'torch', 'gather']  # the slowest last: it gets the time left
    deadline = time.monotonic() + args.step_timeout
    results = {}
    for i, impl in enumerate(impls):
        if impl == 'triton' and (args.device != 'cuda' or bra_triton.TRITON_UNAVAILABLE):
            results[impl] = dict(skipped='the fused kernels need CUDA and Triton >= 3.0')
            continue
        results[impl] = run_in_fresh_process(
            train_backbone, (impl, cfg['arch'], cfg['batch'], cfg['size'], cfg['n_win'],
                             cfg['steps'], args.device),
            (deadline - time.monotonic()) / (len(impls) - i))
    ran = [impl for impl in impls if 'losses' in results[impl]]
    errors = {impl: r['error'] for impl, r in results.items() if 'error' in r}
    md = [f"BiFormer ({cfg['arch']}) backbone, {cfg['batch']}x3x{cfg['size'][0]}x"
          f"{cfg['size'][1]}, n_win {cfg['n_win']}, {cfg['steps']} AdamW steps (lr 1e-4) "
          f"under bf16 autocast, same seed.", '',
          '| impl | median step ms | first step ms | peak MB | first loss | last loss | '
          'max relative loss difference |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: |']
    # The original algorithm is the reference where it ran.
    reference = 'gather' if 'gather' in ran else (ran[0] if ran else None)
    worst = {}
    for impl in impls:
        r = results[impl]
        if 'losses' not in r:
            md.append(f"| {impl} | {r.get('error') or 'skipped: ' + r['skipped']} | | | | | |")
            continue
        ref = results[reference]['losses']
        worst[impl] = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(r['losses'], ref))
        md.append(f"| {impl} | {r['step_ms']:.1f} | {r['first_step_ms']:.0f} | "
                  f"{r['peak_mb']:.0f} | {r['losses'][0]:.5f} | {r['losses'][-1]:.5f} | "
                  f"{worst[impl]:.2e} |")
    md.append(f'\nReference: {reference}; tolerance {LOSS_RTOL} relative, at every step.')
    diverged = [impl for impl, w in worst.items() if not w <= LOSS_RTOL]
    nonfinite = [impl for impl in ran if not all(map(math.isfinite, results[impl]['losses']))]
    if errors or diverged or nonfinite or len(ran) < 2:
        summary = '; '.join(filter(None, [
            f'errors: {errors}' if errors else '', f'losses differ: {diverged}' if diverged
            else '', f'non-finite: {nonfinite}' if nonfinite else '',
            'fewer than two implementations ran' if len(ran) < 2 else '']))
        return step_result('failed', summary, md, config=cfg, results=results)
    speed = ''
    if 'triton' in ran and 'gather' in ran:
        speed = (f", triton {results['gather']['step_ms'] / results['triton']['step_ms']:.2f}x "
                 f"faster than gather")
    return step_result('passed', f'losses agree ({", ".join(ran)}){speed}', md, config=cfg,
                       results=results)


def benchmark_step(args) -> dict:
    """tools/benchmark_bra.py on this device, and the GPU targets."""
    out = osp.join(args.out_dir, f'benchmark_bra_{args.device}.json')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'benchmark_bra.py'), '--device',
           args.device, '--out', out]
    if args.quick:
        cmd += ['--only', 'BRA stage 3, cls', '--warmup', '0', '--repeats', '1']
    elif args.device == 'cuda':
        cmd += ['--warmup', '3', '--repeats', '10', '--timeout', '120']
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (ROOT, env.get('PYTHONPATH'))))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=args.step_timeout)
        tail = proc.stdout[-6000:] + proc.stderr[-2000:]
        code = proc.returncode
    except subprocess.TimeoutExpired as e:
        tail, code = f'timed out after {e.timeout:.0f} s', 'timeout'
    if not osp.isfile(out):
        return step_result('failed', f'benchmark_bra.py: {code}', ['```', tail, '```'])
    rows = json.loads(Path(out).read_text())['rows']
    errors = [f"{r['case']} / {r['impl']}: {r['error']}" for r in rows
              if 'error' in r and not r['error'].startswith('skipped')
              and r['impl'] != 'mmdet']
    md = ['```', tail.strip(), '```', ''] + gpu_targets(rows) + \
        [f'- error: {e}' for e in errors]
    if code != 0 or errors:
        return step_result('failed', f'{len(errors)} errors, exit {code}', md, rows=rows)
    swin = next((r for r in rows if r['impl'] == 'mmdet'), None)
    note = '' if swin is None or 'error' not in swin else \
        f" (Swin-T reference row: {swin['error']})"
    return step_result('passed', f'{len(rows)} rows{note}', md, rows=rows)


def gpu_targets(rows: List[dict]) -> List[str]:
    """The GPU targets of docs/benchmarks.md, as far as ``rows`` measure them."""
    def find(case: str, impl: str) -> Optional[dict]:
        return next((r for r in rows if case in r['case'] and r['impl'] == impl
                     and 'error' not in r), None)

    lines = ['| target | measured | met |', '| --- | --- | --- |']
    stage3 = 'BRA stage 3, maskrcnn'
    tri, gat, tor = (find(stage3, i) for i in ('triton', 'gather', 'torch'))
    if tri and gat:
        lines.append(f"| Mask R-CNN stage 3: triton >= {EXPECTED['maskrcnn_stage3_speedup']}x "
                     f"faster than gather | {tri['speedup_fwd_bwd']:.2f}x | "
                     f"{tri['speedup_fwd_bwd'] >= EXPECTED['maskrcnn_stage3_speedup']} |")
        lines.append(f"| same, <= {EXPECTED['maskrcnn_stage3_memory']}x its memory | "
                     f"{tri['memory_ratio']:.3f}x | "
                     f"{tri['memory_ratio'] <= EXPECTED['maskrcnn_stage3_memory']} |")
    if tri and tor:
        lines.append(f"| same, triton faster than torch | {tri['fwd_bwd_ms']:.1f} vs "
                     f"{tor['fwd_bwd_ms']:.1f} ms | {tri['fwd_bwd_ms'] < tor['fwd_bwd_ms']} |")
    step_tri, step_gat = (find('biformer_s backbone step', i) for i in ('triton', 'gather'))
    if step_tri and step_gat:
        lines.append(f"| BiFormer-S step >= {EXPECTED['step_speedup']}x faster than gather | "
                     f"{step_tri['speedup_fwd_bwd']:.2f}x | "
                     f"{step_tri['speedup_fwd_bwd'] >= EXPECTED['step_speedup']} |")
        lines.append(f"| same, <= {EXPECTED['step_memory']}x its memory | "
                     f"{step_tri['memory_ratio']:.3f}x | "
                     f"{step_tri['memory_ratio'] <= EXPECTED['step_memory']} |")
    if step_tri and step_tri.get('vs_swin_t_fwd_bwd'):
        lines.append(f"| stretch: BiFormer-S step as fast as Swin-T's | "
                     f"{step_tri['vs_swin_t_fwd_bwd']:.2f}x Swin-T's time | "
                     f"{step_tri['vs_swin_t_fwd_bwd'] <= 1} |")
    return lines if len(lines) > 2 else ['- no GPU target is measured by these rows']


def maskrcnn_step(args) -> dict:
    """20 iterations of Mask R-CNN BiFormer-T on the toy COCO data with --amp."""
    if args.device != 'cuda':
        return step_result('skipped', 'needs CUDA (mmcv CUDA ops)')
    missing = [name for name in ('mmdet', 'mmcv') if not importable(name)]
    if missing:
        return step_result('skipped', f'{" and ".join(missing)} not importable')
    reason = mmcv_cuda_ops()
    if reason is not None:
        return step_result('skipped', reason)
    work = osp.abspath(osp.join(args.out_dir, 'maskrcnn'))
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (ROOT, env.get('PYTHONPATH'))))
    subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'dataset', 'make_toy_coco.py'),
                    '--out', osp.join(work, 'data', 'toy_coco'), '--num-train',
                    str(2 * MASKRCNN_ITERATIONS), '--num-val', '2'], check=True, env=env,
                   capture_output=True)
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'),
           osp.join(ROOT, 'configs', 'detection', 'toy', 'maskrcnn_biformer_t_toy_coco.py'),
           '--amp',
           '--work-dir', osp.join(work, 'work_dir'), '--cfg-options', 'train_cfg.max_epochs=1',
           'default_hooks.logger.interval=5']
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=args.step_timeout)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        output, code = str(e.output or '')[-4000:], 'timeout'
    done = f'Epoch(train) [1][{MASKRCNN_ITERATIONS}/{MASKRCNN_ITERATIONS}]' in output
    losses = [float(v) for v in re.findall(r'\bloss: ([-\d.naif]+)', output)]
    md = [f'- command: `{" ".join(cmd[1:])}`', f'- losses logged: {losses}', '```',
          output[-3000:], '```']
    if code != 0 or not done or not losses or not all(map(math.isfinite, losses)):
        return step_result('failed', f'exit {code}, finished: {done}, losses {losses}', md)
    return step_result('passed', f'{MASKRCNN_ITERATIONS} iterations, loss {losses[0]:.3f} '
                       f'-> {losses[-1]:.3f}', md, losses=losses)


STEP_FUNCTIONS: Dict[str, Callable] = dict(
    environment=environment_step, self_check=self_check_step, tests=tests_step,
    training=training_step, benchmark=benchmark_step, maskrcnn=maskrcnn_step)


def run_checks(args) -> int:
    import torch
    header = dict(title='biformer_mm GPU check', date=str(date.today()),
                  device=(torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'),
                  command=' '.join(['tools/gpu_check.py'] + args.argv), quick=args.quick)
    report = Report(args.out_dir, 'gpu_check', header)
    deadline = time.monotonic() + args.budget
    for step in args.steps:
        left = deadline - time.monotonic()
        if left < 5:
            report.add(step, step_result('skipped', f'the {args.budget:.0f} s budget was spent'))
            continue
        args.step_timeout = min(STEP_SECONDS[step] * (args.budget / 600), left)
        print(f'[gpu_check] {step} (at most {args.step_timeout:.0f} s)', flush=True)
        start = time.monotonic()
        try:
            result = STEP_FUNCTIONS[step](args)
        except subprocess.TimeoutExpired as e:
            result = step_result('failed', f'timed out after {e.timeout:.0f} s')
        except Exception as e:  # the report says which step broke and how; the rest runs
            result = step_result('failed', f'{type(e).__name__}: {e}'.splitlines()[0][:300])
        result['seconds'] = time.monotonic() - start
        print(f"[gpu_check] {step}: {result['status']} ({result['seconds']:.1f} s): "
              f"{result['summary']}", flush=True)
        report.add(step, result)
    failed = report.failed()
    print(f'[gpu_check] wrote {report.json_path} and {report.md_path}; '
          f'{"failed: " + ", ".join(failed) if failed else "no step failed"}')
    return 1 if failed else 0


# ---------------------------------------------------------------------- compile-only


def compile_only(args) -> int:
    import torch
    import triton_aot

    from biformer_mm.ops import bra_triton
    from benchmark_bra import INPUTS
    header = dict(title='biformer_mm ahead-of-time compilation (no GPU)',
                  date=str(date.today()), triton=bra_triton.TRITON_VERSION,
                  torch=torch.__version__, command=' '.join(['tools/gpu_check.py'] + args.argv))
    report = Report(args.out_dir, 'compile_only', header)
    if bra_triton.TRITON_UNAVAILABLE:
        report.add('compile', step_result('failed', bra_triton.TRITON_UNAVAILABLE))
        print(f'[compile-only] {bra_triton.TRITON_UNAVAILABLE}', file=sys.stderr)
        return 1
    start = time.monotonic()
    seen: Dict[int, dict] = {arch: {} for arch in args.archs}
    rows, failures = [], []
    md = ['| model | input | stage | W | top-k | heads | dtype | arch | kernel | BLOCK_M x '
          'BLOCK_N | warps | binary | compile s | shared B | regs | local B |',
          '| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: | --- | ---: '
          '| ---: | ---: | ---: |']
    for model_name in args.models:
        for input_name in args.inputs:
            spec = INPUTS[input_name]
            for dtype_name in args.dtypes:
                model = triton_aot.build_meta_backbone(model_name, spec['n_win'],
                                                       triton_aot.DTYPES[dtype_name])
                calls = triton_aot.record_routed_attention_calls(model, spec['batch'],
                                                                 spec['size'])
                for call in calls:
                    launches = list(zip(('forward', 'backward'),
                                        triton_aot.kernel_launches(call),
                                        triton_aot.self_check_launches(call)))
                    for arch in args.archs:
                        for direction, launch, self_check in launches:
                            row = dict(model=model_name, input=input_name,
                                       stage=call.stage + 1, w=call.q.shape[-2],
                                       topk=call.r_idx.shape[-1], heads=call.q.shape[1],
                                       dtype=dtype_name, arch=arch, kernel=direction,
                                       block_m=launch.kwargs['BLOCK_M'],
                                       block_n=launch.kwargs['BLOCK_N'],
                                       num_warps=launch.kwargs['num_warps'])
                            try:
                                compiled = triton_aot.compile_for_target(launch, arch,
                                                                         seen[arch])
                                row.update(compiled._asdict())
                                # The self-check before this call should reuse its binary.
                                row['self_check_compiles'] = triton_aot.compile_for_target(
                                    self_check, arch, seen[arch]).new
                            except Exception as e:  # every failure is listed, then exit 1
                                row['error'] = f'{type(e).__name__}: {e}'[:2000]
                                failures.append(row)
                            rows.append(row)
                            md.append(compile_row_markdown(row))
                print(f'[compile-only] {model_name} {input_name} {dtype_name}: '
                      f'{len(calls)} routed stages, {len(rows)} launches so far, '
                      f'{sum(len(s) for s in seen.values())} binaries, '
                      f'{len(failures)} failures', flush=True)
    counts = {arch: len(binaries) for arch, binaries in seen.items()}
    extra = sum(bool(r.get('self_check_compiles')) for r in rows)
    summary = (f'{len(rows)} launches, {sum(counts.values())} distinct compilations '
               f'({", ".join(f"sm_{a}: {n}" for a, n in counts.items())}), '
               f'{len(failures)} failures; {extra} first-use self-check launches compile '
               f'a binary of their own')
    spills = [r for r in rows if r.get('local_bytes')]
    if spills:
        md.append(f'\n{len(spills)} launches use local memory (register spills or stack).')
    report.add('compile', dict(
        step_result('failed' if failures else 'passed', summary, md, rows=rows,
                    distinct_compilations=counts),
        seconds=time.monotonic() - start))
    if args.multiscale:
        report.add('multiscale', multiscale_count(args))
    failed = report.failed()
    for row in failures:
        print(f"[compile-only] FAILED {row['model']} {row['input']} stage {row['stage']} "
              f"{row['dtype']} sm_{row['arch']} {row['kernel']}: {row['error']}",
              file=sys.stderr)
    print(f'[compile-only] {summary}; wrote {report.json_path} and {report.md_path}')
    return 1 if failed else 0


def compile_row_markdown(row: dict) -> str:
    result = (f"{row['binary']} | {row['seconds']:.2f} | {row['shared_bytes']} | "
              f"{row['registers']} | {row['local_bytes']}" if 'error' not in row else
              f"FAILED: {row['error'].splitlines()[0][:200]} | | | |")
    return (f"| {row['model']} | {row['input']} | {row['stage']} | {row['w']} | "
            f"{row['topk']} | {row['heads']} | {row['dtype']} | sm_{row['arch']} | "
            f"{row['kernel']} | {row['block_m']} x {row['block_n']} | {row['num_warps']} | "
            f"{result} |")


def multiscale_count(args) -> dict:
    """Distinct compilations over every batch size of the COCO 1x recipe."""
    import triton_aot
    start = time.monotonic()
    arch, dtype = args.archs[0], 'bf16'
    sizes = triton_aot.multiscale_batch_sizes()
    model = triton_aot.build_meta_backbone('tiny', 16, triton_aot.DTYPES[dtype])
    seen: dict = {}
    per_stage: Dict[str, set] = {}
    tokens: Dict[int, set] = {}
    for size in sizes:
        for call in triton_aot.record_routed_attention_calls(model, 2, size):
            tokens.setdefault(call.stage + 1, set()).add(call.q.shape[-2])
            for direction, launch in zip(('forward', 'backward'),
                                         triton_aot.kernel_launches(call)):
                compiled = triton_aot.compile_for_target(launch, arch, seen)
                per_stage.setdefault(f'stage {call.stage + 1} {direction}', set()).add(
                    compiled.binary)
    md = [f'{len(sizes)} padded batch sizes of Resize((1333, 800), keep_ratio=True), '
          f'pad_size_divisor=32, 2 images per batch; BiFormer-T, n_win 16, {dtype}, '
          f'sm_{arch}.', '', '| kernel | distinct W | distinct compilations |',
          '| --- | ---: | ---: |']
    md += [f'| {key} | {len(tokens[int(key.split()[1])])} | {len(binaries)} |'
           for key, binaries in sorted(per_stage.items())]
    total = len(seen)
    return dict(step_result('passed', f'{total} distinct compilations over {len(sizes)} '
                            f'batch sizes', md, sizes=len(sizes),
                            per_stage={k: len(v) for k, v in per_stage.items()}),
                seconds=time.monotonic() - start)


# ------------------------------------------------------------------------------ main


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default='work_dirs/gpu_check',
                        help='where the JSON and markdown reports go (default: %(default)s)')
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda',
                        help='cpu: a dry run of the steps on the CPU (with --quick)')
    parser.add_argument('--quick', action='store_true',
                        help='a short smoke run of every step (small model and input)')
    parser.add_argument('--steps', default=','.join(STEPS),
                        help='comma-separated steps to run (default: all, in order)')
    parser.add_argument('--budget', type=float, default=600,
                        help='seconds for the whole run (default: %(default)s)')
    aot = parser.add_argument_group('ahead-of-time compilation (no GPU needed)')
    aot.add_argument('--compile-only', action='store_true',
                     help='compile every kernel configuration for --archs and exit')
    aot.add_argument('--archs', default='80,90', help='compute capabilities (default: 80,90)')
    aot.add_argument('--dtypes', default='fp32,fp16,bf16')
    aot.add_argument('--models', default='tiny,small,base')
    aot.add_argument('--inputs', default='maskrcnn,upernet,cls',
                     help="the benchmark's inputs (tools/benchmark_bra.py INPUTS)")
    aot.add_argument('--multiscale', action='store_true',
                     help='also count compilations over all COCO 1x batch sizes')
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.steps = args.steps.split(',')
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f'unknown steps {unknown}; choose from {",".join(STEPS)}')
    args.archs = [int(a) for a in args.archs.split(',')]
    args.dtypes, args.models, args.inputs = (v.split(',') for v in
                                             (args.dtypes, args.models, args.inputs))
    if args.device == 'cpu' and not args.quick and 'training' in args.steps \
            and not args.compile_only:
        parser.error('--device cpu runs only as a dry run: add --quick')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.compile_only:
        return compile_only(args)
    import torch
    if args.device == 'cuda' and not torch.cuda.is_available():
        print('gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False), so '
              'there is nothing to check here. Run it on a machine with a CUDA GPU; without '
              'one, `python tools/gpu_check.py --compile-only` compiles the kernels and '
              '`--device cpu --quick` dry-runs the steps.', file=sys.stderr)
        return 2
    return run_checks(args)


if __name__ == '__main__':
    sys.exit(main())
