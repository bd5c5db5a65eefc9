"""Specification of tools/gpu_check.py, the one-command GPU verification, as far as a
machine without a GPU can check it: the no-CUDA exit, the ahead-of-time compilation of
the kernels (--compile-only), and, with the commands stood in for, how a GPU run calls
the CUDA tests and the benchmark and judges them."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO_ROOT, require_triton

sys.path.insert(0, os.path.join(REPO_ROOT, 'tools'))
import gpu_check  # noqa: E402
import triton_aot  # noqa: E402

TOOL = os.path.join(REPO_ROOT, 'tools', 'gpu_check.py')


def run_tool(args, tmp_path, env=None):
    env = dict(os.environ, **(env or {}))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (REPO_ROOT, env.get('PYTHONPATH'))))
    env.pop('TRITON_INTERPRET', None)
    return subprocess.run([sys.executable, TOOL, '--out-dir', str(tmp_path)] + args,
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def table_rows(markdown: str):
    """The data rows of the report's table, as lists of cells."""
    return [[c.strip() for c in line.strip('|').split('|')] for line in markdown.splitlines()
            if line.startswith('| ') and not line.startswith('| model') and '---' not in line]


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the machine without CUDA')
def test_without_cuda_it_exits_at_once_and_says_what_to_do(tmp_path):
    start = time.monotonic()
    proc = run_tool([], tmp_path)
    assert proc.returncode == 2
    assert 'no CUDA GPU is visible' in proc.stderr and '--compile-only' in proc.stderr
    assert time.monotonic() - start < 60
    assert not list(tmp_path.iterdir()), 'nothing was run, so no report is written'


def test_compile_only_compiles_forward_and_backward_for_sm80_and_sm90(tmp_path):
    """A representative subset through the tool's own code path: BiFormer-T at the Mask
    R-CNN input in bf16 (the dtype of mixed-precision training), into an empty Triton
    cache. The tool's default runs T/S/B x Mask R-CNN/UperNet/classification x
    fp32/fp16/bf16."""
    require_triton()
    proc = run_tool(['--compile-only', '--models', 'tiny', '--inputs', 'maskrcnn', '--dtypes',
                     'bf16'], tmp_path, env=dict(TRITON_CACHE_DIR=str(tmp_path / 'cache')))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / 'compile_only.md').read_text()
    # 3 routed stages x forward/backward, each compiled for both architectures, and the
    # self-check before each call runs that call's kernels (else a failure is listed).
    assert '6 launches, distinct kernels: sm_80: 6, sm_90: 6; 0 failures' in report
    rows = table_rows(report)
    assert {(r[3], r[4], r[5]) for r in rows} == {('247', '1', '2'), ('70', '4', '4'),
                                                  ('20', '16', '8')}
    assert {r[7] for r in rows} == {'forward', 'backward'}
    assert all(0 < int(shared) <= triton_aot.SMALLEST_SHARED_MEMORY
               for r in rows for shared in r[10:12])


def compile_only(tmp_path, *extra):
    return gpu_check.main(['--compile-only', '--models', 'tiny', '--inputs', 'cls',
                           '--dtypes', 'bf16', '--archs', '90', '--out-dir', str(tmp_path),
                           *extra])


def test_compile_only_fails_loudly(tmp_path, monkeypatch, capsys):
    require_triton()

    def broken(launch, arch):
        raise RuntimeError('PTXASError: ptxas fatal: Unresolved extern function')

    monkeypatch.setattr(triton_aot, 'compile_launch', broken)
    assert compile_only(tmp_path) == 1
    assert 'FAILED tiny cls stage 1 bf16 sm_90 forward: RuntimeError: PTXASError' in \
        capsys.readouterr().err
    assert '6 failures' in (tmp_path / 'compile_only.md').read_text()


def test_compile_only_fails_where_the_self_check_would_run_other_kernels(
        tmp_path, monkeypatch, capsys):
    """The self-check must run the call's own kernels, or a kernel goes unchecked."""
    require_triton()
    from biformer_mm.ops import triton_self_check
    real = triton_self_check.self_check_problem

    def in_fp32(q, k, v, r_idx):
        *qkv, r_idx, grad_out = real(q, k, v, r_idx)
        return tuple(t.float() for t in qkv) + (r_idx, grad_out.float())

    monkeypatch.setattr(triton_self_check, 'self_check_problem', in_fp32)
    monkeypatch.setattr(triton_aot, 'compile_launch', lambda launch, arch: type(
        'Compiled', (), dict(metadata=type('Metadata', (), dict(shared=1024)))))
    assert compile_only(tmp_path) == 1
    assert 'the self-check runs other kernels than the call' in capsys.readouterr().err


def test_compile_only_without_a_usable_triton_fails(tmp_path, monkeypatch, capsys):
    from biformer_mm.ops import bra_triton
    monkeypatch.setattr(bra_triton, 'TRITON_UNAVAILABLE', 'Triton 2.3.1 is older than 3.0')
    assert compile_only(tmp_path) == 1
    assert 'older than 3.0' in capsys.readouterr().err


BENCHMARK_ROWS = [
    dict(case='BRA stage 3, maskrcnn 2x3x800x1216, n_win 16', impl='gather', fwd_bwd_ms=60.0),
    dict(case='BRA stage 3, maskrcnn 2x3x800x1216, n_win 16', impl='sdpa', fwd_bwd_ms=15.0),
    dict(case='BRA stage 3, maskrcnn 2x3x800x1216, n_win 16', impl='triton', fwd_bwd_ms=10.0,
         memory_ratio=0.1),
    dict(case='BRA stage 1, maskrcnn 2x3x800x1216, n_win 16', impl='gather',
         error='skipped: the gather backward alone needs 74 GiB'),
    dict(case='biformer_s backbone step, 2x3x800x1216', impl='gather', fwd_bwd_ms=900.0),
    dict(case='biformer_s backbone step, 2x3x800x1216', impl='triton', fwd_bwd_ms=500.0,
         memory_ratio=0.4),
]


def fake_gpu_run(monkeypatch, failed_tests=0, rows=BENCHMARK_ROWS):
    """Stand in for pytest and the benchmark; returns the commands run."""
    commands = []

    def run(cmd, timeout):
        commands.append(cmd)
        if '-m' in cmd and 'pytest' in cmd:
            junit = next(a for a in cmd if a.startswith('--junitxml=')).split('=', 1)[1]
            with open(junit, 'w') as f:
                f.write(f'<testsuites><testsuite tests="47" failures="{failed_tests}" '
                        f'errors="0" skipped="0">' + '<testcase name="test_gpu_ok"/>'
                        + '<testcase name="test_gpu_broken"><failure/></testcase>'
                        * failed_tests + '</testsuite></testsuites>')
            return subprocess.CompletedProcess(cmd, int(failed_tests > 0), '', '')
        with open(cmd[cmd.index('--out') + 1], 'w') as f:
            json.dump(dict(rows=rows), f)
        return subprocess.CompletedProcess(cmd, 0, '| case | impl |', '')

    monkeypatch.setattr(gpu_check, 'run', run)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *args: 'NVIDIA H200')
    return commands


def test_a_gpu_run_is_the_cuda_tests_and_the_benchmark_and_a_report(tmp_path, monkeypatch):
    require_triton()
    commands = fake_gpu_run(monkeypatch)
    assert gpu_check.check_gpu(str(tmp_path)) == 0
    assert commands[0][1:7] == ['-m', 'pytest', '-m', 'cuda'] + [
        os.path.join(REPO_ROOT, 'tests', name) for name in ('test_bra_triton.py',
                                                            'test_compile.py')]
    assert commands[1][1:6] == [os.path.join(REPO_ROOT, 'tools', 'benchmark_bra.py'),
                                '--device', 'cuda', '--out',
                                str(tmp_path / 'benchmark_bra_cuda.json')]
    # the rows the targets judge: the routed attention at Mask R-CNN, the backbone steps
    assert commands[1][-4:] == ['--only', 'maskrcnn 2x3', '--only', 'backbone step']
    report = (tmp_path / 'gpu_check.md').read_text()
    assert report.startswith('# biformer_mm GPU check: NVIDIA H200')
    assert '## CUDA tests: passed' in report and '47 tests, 0 failed' in report
    assert '## Benchmark: passed' in report
    assert '| BRA stage 3, maskrcnn: triton >= 5.0x as fast as gather | 6.00x | True |' in \
        report


@pytest.mark.parametrize('failed_tests,rows', [
    (1, BENCHMARK_ROWS),
    (0, BENCHMARK_ROWS + [dict(case='BRA stage 2, upernet 2x3x512x512, n_win 8',
                               impl='triton', error='RuntimeError: misaligned address')]),
])
def test_a_failed_test_or_benchmark_case_fails_the_run(tmp_path, monkeypatch, failed_tests,
                                                       rows):
    require_triton()
    fake_gpu_run(monkeypatch, failed_tests, rows)
    assert gpu_check.check_gpu(str(tmp_path)) == 1
    report = (tmp_path / 'gpu_check.md').read_text()
    assert ('- failed: `test_gpu_broken`' in report) == bool(failed_tests)
    assert ('misaligned address' in report) == (not failed_tests)


def test_gpu_targets_are_judged_from_the_benchmark_rows():
    lines = '\n'.join(gpu_check.gpu_targets(BENCHMARK_ROWS))
    assert '| BRA stage 3, maskrcnn: triton >= 5.0x as fast as gather | 6.00x | True |' in lines
    assert '| same, <= 0.2x its memory | 0.100x | True |' in lines
    assert '| BRA stage 3, maskrcnn: triton >= 1.0x as fast as sdpa | 1.50x | True |' in lines
    assert '| biformer_s backbone step: triton >= 2.0x as fast as gather | 1.80x | False |' \
        in lines
    assert '| same, <= 0.5x its memory | 0.400x | True |' in lines


def test_a_gpu_target_without_rows_is_reported_not_measured():
    """A target whose rows are missing or failed is listed as not met, not left out."""
    rows = [r for r in BENCHMARK_ROWS if r['impl'] != 'sdpa']
    lines = '\n'.join(gpu_check.gpu_targets(rows))
    assert ('| BRA stage 3, maskrcnn: triton >= 1.0x as fast as sdpa | not measured (no triton '
            'or sdpa row without an error) | False |') in lines


def test_multiscale_sizes_are_the_padded_batches_of_the_coco_recipe():
    sizes = triton_aot.multiscale_batch_sizes()
    assert all(h % 32 == 0 and w % 32 == 0 and max(h, w) <= 1344 for h, w in sizes)
    # a landscape and a portrait image at the short-side limit, and mixed batches.
    assert {(800, 1216), (1216, 800), (1216, 1216), (800, 800), (1344, 1344)} <= set(sizes)
    assert (32, 32) not in sizes
