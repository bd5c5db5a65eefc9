"""Specification of tools/gpu_check.py, the one-command GPU verification, as far as a
machine without a GPU can check it: the no-CUDA exit, the ahead-of-time compilation of
the kernels (--compile-only), the CPU dry run of every step (--device cpu --quick, with
the kernels' self-check in Triton's CPU interpreter), and the logic that judges GPU
results (loss agreement, GPU targets) on synthetic results."""
import json
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
import gpu_check  # noqa: E402
import triton_aot  # noqa: E402

TOOL = osp.join(REPO_ROOT, 'tools', 'gpu_check.py')
HAS_TRITON = gpu_check.importable('triton')


def run_tool(args, tmp_path, timeout=600, env=None):
    env = dict(os.environ, **(env or {}))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, (REPO_ROOT, env.get('PYTHONPATH'))))
    env.pop('TRITON_INTERPRET', None)
    return subprocess.run([sys.executable, TOOL, '--out-dir', str(tmp_path)] + args,
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def read_report(tmp_path, name):
    assert (tmp_path / f'{name}.md').is_file()
    return json.loads((tmp_path / f'{name}.json').read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the machine without CUDA')
def test_without_cuda_it_exits_at_once_and_says_what_to_do(tmp_path):
    start = time.monotonic()
    proc = run_tool([], tmp_path)
    assert proc.returncode == 2
    assert 'no CUDA GPU is visible' in proc.stderr and '--compile-only' in proc.stderr
    assert time.monotonic() - start < 60
    assert not list(tmp_path.iterdir()), 'nothing was run, so no report is written'


@pytest.mark.skipif(not HAS_TRITON, reason='Triton is not installed')
def test_compile_only_compiles_forward_and_backward_for_sm80_and_sm90(tmp_path):
    """A representative subset through the tool's own code path: BiFormer-T at the Mask
    R-CNN input in bf16 (the dtype of mixed-precision training), into an empty Triton
    cache. The tool's default runs T/S/B x Mask R-CNN/UperNet/classification x
    fp32/fp16/bf16 (324 launches, under a minute here)."""
    proc = run_tool(['--compile-only', '--models', 'tiny', '--inputs', 'maskrcnn', '--dtypes',
                     'bf16'], tmp_path,
                    env=dict(TRITON_CACHE_DIR=str(tmp_path / 'triton_cache')))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    step = read_report(tmp_path, 'compile_only')['steps']['compile']
    rows = step['rows']
    # 3 routed stages x 2 architectures x forward/backward.
    assert len(rows) == 12 and not any('error' in r for r in rows)
    assert {(r['w'], r['topk'], r['heads']) for r in rows} == {(247, 1, 2), (70, 4, 4),
                                                               (20, 16, 8)}
    assert {r['arch'] for r in rows} == {80, 90}
    assert {r['kernel'] for r in rows} == {'forward', 'backward'}
    assert all(r['new'] and r['shared_bytes'] > 0 for r in rows)
    assert step['distinct_compilations'] == {'80': 6, '90': 6}
    # 'auto''s first-use self-check compiles exactly what the model's call compiles.
    assert not any(r['self_check_compiles'] for r in rows)


def test_compile_only_fails_loudly(tmp_path, monkeypatch, capsys):
    def broken(launch, arch, seen):
        raise RuntimeError('PTXASError: ptxas fatal: Unresolved extern function')

    monkeypatch.setattr(triton_aot, 'compile_for_target', broken)
    code = gpu_check.main(['--compile-only', '--models', 'tiny', '--inputs', 'cls',
                           '--dtypes', 'bf16', '--archs', '90', '--out-dir', str(tmp_path)])
    assert code == 1
    assert 'FAILED tiny cls stage 1 bf16 sm_90 forward: RuntimeError: PTXASError' in \
        capsys.readouterr().err
    step = read_report(tmp_path, 'compile_only')['steps']['compile']
    assert step['status'] == 'failed' and '6 failures' in step['summary']


def test_compile_only_without_a_usable_triton_fails(tmp_path, monkeypatch):
    from biformer_mm.ops import bra_triton
    monkeypatch.setattr(bra_triton, 'TRITON_UNAVAILABLE', 'Triton 2.3.1 is older than 3.0')
    assert gpu_check.main(['--compile-only', '--out-dir', str(tmp_path)]) == 1
    assert 'older than 3.0' in read_report(tmp_path, 'compile_only')['steps']['compile'][
        'summary']


@pytest.mark.skipif(not HAS_TRITON, reason='the self-check runs the kernels in Triton')
def test_cpu_dry_run_runs_the_steps_and_writes_both_reports(tmp_path):
    """Every step but the benchmark, whose tool test_benchmark.py runs (and
    test_benchmark_step_reads_the_benchmark_and_judges_the_targets below its report)."""
    steps = [s for s in gpu_check.STEPS if s != 'benchmark']
    proc = run_tool(['--device', 'cpu', '--quick', '--steps', ','.join(steps)], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    steps = read_report(tmp_path, 'gpu_check')['steps']
    status = {name: step['status'] for name, step in steps.items()}
    assert status == dict(environment='passed', self_check='passed', tests='skipped',
                          training='passed', maskrcnn='skipped')
    # The kernels ran forward and backward in the interpreter and agreed with 'torch'.
    assert {d: r['result'] for d, r in steps['self_check']['dtypes'].items()} == \
        dict(fp32='passed', fp16='passed', bf16='passed')
    assert 'interpreter' in steps['self_check']['summary']
    assert 'no CUDA' in steps['tests']['summary'] and steps['tests']['skipped'] == 34
    training = steps['training']['results']
    assert len(training['torch']['losses']) == gpu_check.QUICK_TRAINING['steps']
    assert 'skipped' in training['triton']
    assert steps['maskrcnn']['summary'] == 'needs CUDA (mmcv CUDA ops)'
    markdown = (tmp_path / 'gpu_check.md').read_text()
    assert '| training | passed |' in markdown and '| maskrcnn | skipped |' in markdown


def test_benchmark_step_reads_the_benchmark_and_judges_the_targets(tmp_path, monkeypatch):
    commands = []
    rows = [dict(case='BRA stage 3, maskrcnn 2x3x800x1216, n_win 16', impl='gather',
                 fwd_bwd_ms=60.0),
            dict(case='BRA stage 3, maskrcnn 2x3x800x1216, n_win 16', impl='triton',
                 fwd_bwd_ms=10.0, speedup_fwd_bwd=6.0, memory_ratio=0.1),
            dict(case='BRA stage 1, maskrcnn 2x3x800x1216, n_win 16', impl='gather',
                 error='skipped: the gather backward alone needs 74 GiB'),
            dict(case='swin_t backbone step, 2x3x800x1216', impl='mmdet',
                 error="ModuleNotFoundError: No module named 'mmdet'")]

    def benchmark(cmd, **kwargs):
        commands.append(cmd)
        out = cmd[cmd.index('--out') + 1]
        with open(out, 'w') as f:
            json.dump(dict(rows=rows), f)
        return subprocess.CompletedProcess(cmd, 0, '| case | impl |', '')

    monkeypatch.setattr(gpu_check.subprocess, 'run', benchmark)
    args = gpu_check.parse_args(['--out-dir', str(tmp_path)])
    args.step_timeout = 100
    result = gpu_check.benchmark_step(args)
    assert commands[0][-8:] == ['--out', str(tmp_path / 'benchmark_bra_cuda.json'),
                                '--warmup', '3', '--repeats', '10', '--timeout', '120']
    assert result['status'] == 'passed'
    assert "Swin-T reference row: ModuleNotFoundError" in result['summary']
    assert '| Mask R-CNN stage 3: triton >= 5.0x faster than gather | 6.00x | True |' in \
        result['markdown']
    rows.append(dict(case='BRA stage 2, upernet 2x3x512x512, n_win 8', impl='triton',
                     error='RuntimeError: CUDA error: misaligned address'))
    assert gpu_check.benchmark_step(args)['status'] == 'failed'
    args = gpu_check.parse_args(['--device', 'cpu', '--quick', '--out-dir', str(tmp_path)])
    args.step_timeout = 100
    gpu_check.benchmark_step(args)
    assert commands[-1][-6:] == ['--only', 'BRA stage 3, cls', '--warmup', '0', '--repeats',
                                 '1']


def test_maskrcnn_run_needs_mmdet_and_mmcv_cuda_ops(monkeypatch):
    args = gpu_check.parse_args([])
    monkeypatch.setattr(gpu_check, 'importable', lambda name: name != 'mmdet')
    assert gpu_check.maskrcnn_step(args)['summary'] == 'mmdet not importable'
    monkeypatch.setattr(gpu_check, 'importable', lambda name: True)
    monkeypatch.setattr(gpu_check, 'mmcv_cuda_ops', lambda: 'mmcv was built without CUDA ops')
    result = gpu_check.maskrcnn_step(args)
    assert (result['status'], result['summary']) == ('skipped', 'mmcv was built without CUDA ops')


def test_cpu_needs_quick(capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(['--device', 'cpu'])
    assert 'add --quick' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.parse_args(['--steps', 'tests,everything'])


def test_steps_out_of_budget_are_reported_as_skipped(tmp_path):
    args = gpu_check.parse_args(['--device', 'cpu', '--quick', '--steps', 'maskrcnn',
                                 '--budget', '0', '--out-dir', str(tmp_path)])
    assert gpu_check.run_checks(args) == 0
    step = read_report(tmp_path, 'gpu_check')['steps']['maskrcnn']
    assert step == dict(status='skipped', summary='the 0 s budget was spent', markdown=[])


def fake_training(losses_by_impl):
    def run(fn, args, timeout):
        losses = losses_by_impl[args[0]]
        return dict(losses=losses, step_ms=100.0, first_step_ms=900.0, peak_mb=1000.0) \
            if isinstance(losses, list) else dict(error=losses)
    return run


@pytest.mark.parametrize('triton_losses,status', [
    ([2.0, 1.5, 1.2], 'passed'),
    ([2.0, 1.5, 1.3], 'failed'),         # 8% off at the last step
    ([2.0, float('nan'), 1.2], 'failed'),
    ('RuntimeError: CUDA error: an illegal memory access', 'failed'),
])
def test_training_losses_must_agree_step_by_step(monkeypatch, triton_losses, status):
    import benchmark_bra
    monkeypatch.setattr(benchmark_bra, 'run_in_fresh_process', fake_training(dict(
        gather=[2.0, 1.5, 1.2], torch=[2.001, 1.499, 1.2005], triton=triton_losses)))
    args = gpu_check.parse_args(['--steps', 'training'])
    args.step_timeout = 100
    result = gpu_check.training_step(args)
    assert result['status'] == status, result['summary']


def test_gpu_targets_are_judged_from_the_benchmark_rows():
    rows = [
        dict(case='BRA stage 3, maskrcnn 2x3x800x1216, n_win 16', impl='gather',
             fwd_bwd_ms=60.0),
        dict(case='BRA stage 3, maskrcnn 2x3x800x1216, n_win 16', impl='torch',
             fwd_bwd_ms=15.0),
        dict(case='BRA stage 3, maskrcnn 2x3x800x1216, n_win 16', impl='triton',
             fwd_bwd_ms=10.0, speedup_fwd_bwd=6.0, memory_ratio=0.1),
        dict(case='biformer_s backbone step, 2x3x800x1216', impl='gather', fwd_bwd_ms=900.0),
        dict(case='biformer_s backbone step, 2x3x800x1216', impl='triton', fwd_bwd_ms=500.0,
             speedup_fwd_bwd=1.8, memory_ratio=0.4, vs_swin_t_fwd_bwd=1.3),
    ]
    lines = '\n'.join(gpu_check.gpu_targets(rows))
    assert '| Mask R-CNN stage 3: triton >= 5.0x faster than gather | 6.00x | True |' in lines
    assert '| same, <= 0.2x its memory | 0.100x | True |' in lines
    assert '| same, triton faster than torch | 10.0 vs 15.0 ms | True |' in lines
    assert '| BiFormer-S step >= 2.0x faster than gather | 1.80x | False |' in lines
    assert "| stretch: BiFormer-S step as fast as Swin-T's | 1.30x Swin-T's time | False |" \
        in lines


def test_multiscale_sizes_are_the_padded_batches_of_the_coco_recipe():
    sizes = triton_aot.multiscale_batch_sizes()
    assert all(h % 32 == 0 and w % 32 == 0 and max(h, w) <= 1344 for h, w in sizes)
    # a landscape and a portrait image at the short-side limit, and mixed batches.
    assert {(800, 1216), (1216, 800), (1216, 1216), (800, 800), (1344, 1344)} <= set(sizes)
    assert (800, 1216) in sizes and (32, 32) not in sizes
