"""The GPU verification of biformer_mm in one command, and its compile check without one.

    python tools/gpu_check.py [--out-dir work_dirs/gpu_check]      # a CUDA GPU
    python tools/gpu_check.py --compile-only [--archs 80,90] [--dtypes fp32,fp16,bf16]
        [--models tiny,small,base] [--inputs maskrcnn,upernet,cls] [--multiscale]

On a GPU: ``pytest -m cuda tests/test_bra_triton.py tests/test_compile.py``,
``tools/benchmark_bra.py --device cuda`` on the rows the targets judge, and the report
``gpu_check.md`` (versions, test outcome, benchmark rows, the GPU targets of
docs/benchmarks.md); exit 1 on a failure, 2 without CUDA. ``--compile-only``
(Triton >= 3, no GPU) compiles every forward and backward kernel BiFormer-T/S/B launch at
the benchmark's inputs for each architecture (``tools/triton_aot.py``), checks that the
first-use self-check runs each call's own kernels, writes ``compile_only.md`` and exits 1
on any failure; ``--multiscale`` counts the distinct kernels over the COCO 1x batch sizes.
"""
import argparse
import importlib.util
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'tools'))  # benchmark_bra, triton_aot
# The test files with CUDA tests that need no mmdet/mmseg to import.
CUDA_TESTS = [osp.join(ROOT, 'tests', name) for name in ('test_bra_triton.py',
                                                         'test_compile.py')]
BENCHMARK_ROWS = ['maskrcnn 2x3', 'backbone step']
"""``benchmark_bra.py --only`` values: the rows the targets judge (the routed attention at
each Mask R-CNN stage, the BiFormer-S and Swin-T backbone steps), which fit in minutes."""

TARGETS = [  # (case, impl, baseline impl, >= speed-up, <= memory ratio): docs/benchmarks.md
    ('BRA stage 3, maskrcnn', 'triton', 'gather', 5.0, 0.2),
    ('BRA stage 3, maskrcnn', 'triton', 'sdpa', 1.0, None),
    ('biformer_s backbone step', 'triton', 'gather', 2.0, 0.5),
]


def run(cmd: List[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a command from the repository root with this checkout first on the path."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (ROOT, env.get('PYTHONPATH'))))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def cuda_tests(out_dir: str, timeout: float) -> Tuple[bool, List[str]]:
    """The CUDA tests: whether they passed, and their report lines."""
    junit = osp.join(out_dir, 'cuda_tests.xml')
    cmd = [sys.executable, '-m', 'pytest', '-m', 'cuda', *CUDA_TESTS, '-q', '-p',
           'no:cacheprovider', f'--junitxml={junit}']
    if importlib.util.find_spec('xdist'):  # Triton's compilations in parallel
        cmd += ['-n', str(min(8, os.cpu_count() or 1))]
    proc = run(cmd, timeout)
    if not osp.isfile(junit):
        return False, [f'pytest exited {proc.returncode} without a report:', '```',
                       proc.stdout[-3000:] + proc.stderr[-2000:], '```']
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
    count = {key: int(suite.get(key, 0)) for key in ('tests', 'failures', 'errors', 'skipped')}
    failed = [case.get('name') for case in suite.iter('testcase')
              if case.find('failure') is not None or case.find('error') is not None]
    lines = [f"`pytest -m cuda {' '.join(osp.relpath(t, ROOT) for t in CUDA_TESTS)}`: "
             f"{count['tests']} tests, "
             f"{len(failed)} failed, {count['skipped']} skipped"]
    lines += [f'- failed: `{name}`' for name in failed]
    return proc.returncode == 0 and count['tests'] > count['skipped'], lines


def gpu_targets(rows: List[dict]) -> List[str]:
    """The GPU targets of docs/benchmarks.md, as far as the benchmark's rows measure them."""
    def find(case: str, impl: str) -> Optional[dict]:
        return next((r for r in rows if case in r['case'] and r['impl'] == impl
                     and 'error' not in r), None)

    lines = ['| target | measured | met |', '| --- | --- | --- |']
    for case, impl, base, speedup, memory in TARGETS:
        ours, theirs = find(case, impl), find(case, base)
        if ours is None or theirs is None:
            lines.append(f'| {case}: {impl} >= {speedup}x as fast as {base} | not measured '
                         f'(no {impl} or {base} row without an error) | False |')
            continue
        ratio = theirs['fwd_bwd_ms'] / ours['fwd_bwd_ms']
        lines.append(f'| {case}: {impl} >= {speedup}x as fast as {base} | {ratio:.2f}x | '
                     f'{ratio >= speedup} |')
        if memory is not None:
            lines.append(f"| same, <= {memory}x its memory | {ours['memory_ratio']:.3f}x | "
                         f"{ours['memory_ratio'] <= memory} |")
    return lines


def benchmark(out_dir: str, timeout: float) -> Tuple[bool, List[str]]:
    """``tools/benchmark_bra.py --device cuda``: whether every case ran, and its rows."""
    out = osp.join(out_dir, 'benchmark_bra_cuda.json')
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'benchmark_bra.py'), '--device', 'cuda',
           '--out', out, '--warmup', '3', '--repeats', '10', '--timeout', '120']
    cmd += [arg for only in BENCHMARK_ROWS for arg in ('--only', only)]
    proc = run(cmd, timeout)
    if not osp.isfile(out):
        return False, [f'benchmark_bra.py exited {proc.returncode} without rows:', '```',
                       proc.stdout[-3000:] + proc.stderr[-2000:], '```']
    with open(out) as f:
        rows = json.load(f)['rows']
    errors = [f"- {r['case']} / {r['impl']}: {r['error']}" for r in rows
              if 'error' in r and not r['error'].startswith('skipped')]
    return proc.returncode == 0 and not errors, [
        f'`{" ".join(cmd[1:])}`', '', proc.stdout.strip(), ''] + gpu_targets(rows) + errors


def check_gpu(out_dir: str) -> int:
    import torch
    import triton
    report = [f'# biformer_mm GPU check: {torch.cuda.get_device_name()}', '',
              f'Python {platform.python_version()}, torch {torch.__version__} (CUDA '
              f'{torch.version.cuda}), Triton {triton.__version__}', '']
    passed = True
    for title, step, timeout in (('CUDA tests', cuda_tests, 1200),
                                 ('Benchmark', benchmark, 3600)):
        print(f'[gpu_check] {title} ...', flush=True)
        ok, lines = step(out_dir, timeout)
        passed &= ok
        report += [f'## {title}: {"passed" if ok else "FAILED"}', ''] + lines + ['']
        print(f'[gpu_check] {title}: {"passed" if ok else "FAILED"}', flush=True)
    path = osp.join(out_dir, 'gpu_check.md')
    with open(path, 'w') as f:
        f.write('\n'.join(report))
    print(f'[gpu_check] wrote {path}')
    return 0 if passed else 1


def compile_only(args) -> int:
    import triton_aot
    from benchmark_bra import INPUTS

    from biformer_mm.ops import bra_triton
    from biformer_mm.ops.triton_self_check import self_check_problem
    if bra_triton.TRITON_UNAVAILABLE:
        print(f'[compile-only] {bra_triton.TRITON_UNAVAILABLE}', file=sys.stderr)
        return 1
    compiled = {arch: {} for arch in args.archs}  # launch key -> shared memory or error
    lines = ['| model | input | stage | W | top-k | heads | dtype | kernel | tiles | warps | '
             + ' | '.join(f'sm_{a} shared B' for a in args.archs) + ' |',
             '| --- ' * (10 + len(args.archs)) + '|']
    failures = []
    for model, input_name, dtype in ((m, i, d) for m in args.models for i in args.inputs
                                     for d in args.dtypes):
        spec = INPUTS[input_name]
        backbone = triton_aot.build_meta_backbone(model, spec['n_win'],
                                                  triton_aot.DTYPES[dtype])
        for call in triton_aot.record_routed_attention_calls(backbone, spec['batch'],
                                                             spec['size']):
            where = f'{model} {input_name} stage {call.stage + 1} {dtype}'
            *problem, grad_out = self_check_problem(call.q, call.k, call.v, call.r_idx)
            if bra_triton.kernel_key(*problem) != bra_triton.kernel_key(
                    call.q, call.k, call.v, call.r_idx):
                failures.append(f'{where}: the self-check runs other kernels than the call')
            for kernel, launch in zip(('forward', 'backward'), call.launches()):
                cells = []
                for arch in args.archs:
                    key = launch.key()
                    if key not in compiled[arch]:
                        try:
                            compiled[arch][key] = triton_aot.compile_launch(
                                launch, arch).metadata.shared
                        except Exception as e:  # every failure is listed, then exit 1
                            error = f'{type(e).__name__}: {e}'
                            compiled[arch][key] = f'FAILED: {error}'
                            failures.append(f'{where} sm_{arch} {kernel}: {error}'[:2000])
                    cells.append(str(compiled[arch][key]).splitlines()[0][:120])
                cfg = launch.kwargs
                lines.append(
                    f'| {model} | {input_name} | {call.stage + 1} | {call.q.shape[-2]} | '
                    f'{call.r_idx.shape[-1]} | {call.q.shape[1]} | {dtype} | {kernel} | '
                    f"{cfg['BLOCK_M']} x {cfg['BLOCK_N']} | {cfg['num_warps']} | "
                    + ' | '.join(cells) + ' |')
        print(f'[compile-only] {model} {input_name} {dtype}: {len(failures)} failures so far',
              flush=True)
    summary = (f'{len(lines) - 2} launches, distinct kernels: '
               + ', '.join(f'sm_{a}: {len(c)}' for a, c in compiled.items())
               + f'; {len(failures)} failures')
    report = ['# biformer_mm ahead-of-time compilation (no GPU)', '',
              f'`tools/gpu_check.py {" ".join(args.argv)}`, Triton '
              f'{bra_triton.TRITON_VERSION}: {summary}', ''] + lines
    if args.multiscale:
        report += ['', '## Multi-scale training', ''] + multiscale(args.archs[0])
    for failure in failures:
        print(f'[compile-only] FAILED {failure}', file=sys.stderr)
    os.makedirs(args.out_dir, exist_ok=True)
    path = osp.join(args.out_dir, 'compile_only.md')
    with open(path, 'w') as f:
        f.write('\n'.join(report) + '\n')
    print(f'[compile-only] {summary}; wrote {path}')
    return 1 if failures else 0


def multiscale(arch: int) -> List[str]:
    """Distinct kernels of BiFormer-T (bf16, n_win 16) over every batch size of the COCO
    1x recipe. Launches with equal keys share a compiled kernel (``KernelLaunch.key``)."""
    import triton_aot
    sizes = triton_aot.multiscale_batch_sizes()
    model = triton_aot.build_meta_backbone('tiny', 16, triton_aot.DTYPES['bf16'])
    tokens, kernels = {}, {}
    for size in sizes:
        for call in triton_aot.record_routed_attention_calls(model, 2, size):
            tokens.setdefault(call.stage + 1, set()).add(call.q.shape[-2])
            for kernel, launch in zip(('forward', 'backward'), call.launches()):
                kernels.setdefault((call.stage + 1, kernel), set()).add(launch.key())
    return [f'{len(sizes)} padded batch sizes of Resize((1333, 800), keep_ratio=True), '
            f'pad_size_divisor=32, 2 images per batch; BiFormer-T, n_win 16, bf16, '
            f'{sum(map(len, kernels.values()))} distinct kernels per architecture.', '',
            '| stage | kernel | distinct W | distinct kernels |', '| --- | --- | ---: | ---: |'
            ] + [f'| {stage} | {kernel} | {len(tokens[stage])} | {len(keys)} |'
                 for (stage, kernel), keys in sorted(kernels.items())]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out-dir', default='work_dirs/gpu_check')
    aot = parser.add_argument_group('ahead-of-time compilation (no GPU needed)')
    aot.add_argument('--compile-only', action='store_true')
    aot.add_argument('--archs', default='80,90', help='compute capabilities')
    aot.add_argument('--dtypes', default='fp32,fp16,bf16')
    aot.add_argument('--models', default='tiny,small,base')
    aot.add_argument('--inputs', default='maskrcnn,upernet,cls',
                     help="the benchmark's inputs (tools/benchmark_bra.py INPUTS)")
    aot.add_argument('--multiscale', action='store_true')
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.archs = [int(a) for a in args.archs.split(',')]
    args.dtypes, args.models, args.inputs = (v.split(',') for v in
                                             (args.dtypes, args.models, args.inputs))
    if args.compile_only:
        return compile_only(args)
    import torch
    if not torch.cuda.is_available():
        print('gpu_check: no CUDA GPU is visible, so there is nothing to check here; '
              '`python tools/gpu_check.py --compile-only` compiles the kernels without one.',
              file=sys.stderr)
        return 2
    os.makedirs(args.out_dir, exist_ok=True)
    return check_gpu(args.out_dir)


if __name__ == '__main__':
    sys.exit(main())
