"""Specification of tools/benchmark_bra.py: every kind of row it reports is measured,
each in its own process, on small shapes."""
import math
import os.path as osp
import sys
from argparse import Namespace

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))  # spawned measurement processes import it
import benchmark_bra  # noqa: E402

ARGS = Namespace(device='cpu', dtype='fp32', warmup=0, repeats=1, timeout=300, profile=0)
BRA = dict(kind='bra', input='cls', stage=3, batch=1)
TINY_BACKBONE = dict(kind='backbone', batch=1, size=(64, 96))


def test_cpu_compares_the_original_with_the_chunked_and_fused_algorithms():
    assert benchmark_bra.available_impls('cpu') == ['gather', 'chunked', 'cpp']


def test_rows_name_the_algorithm_the_default_runs():
    assert benchmark_bra.auto_algorithm('cpu', 'fp32') == 'cpp'


@pytest.mark.parametrize('case,impl', [
    (BRA, 'gather'),
    (BRA, 'chunked'),
    (BRA, 'cpp'),
    (dict(TINY_BACKBONE, backbone='biformer_s', n_win=4), 'chunked'),
    (dict(TINY_BACKBONE, backbone='swin_t'), None),
], ids=['bra-gather', 'bra-chunked', 'bra-cpp', 'biformer_s-step', 'swin_t-step'])
def test_every_row_kind_is_measured_in_a_fresh_process(case, impl):
    result = benchmark_bra.run_case(case, impl, ARGS)
    assert 'error' not in result, result.get('error')
    assert result['fwd_ms'] > 0 and result['fwd_bwd_ms'] > 0 and 'peak_mb' in result


@pytest.mark.parametrize('model,backbone', [('maskrcnn', 'biformer_s'), ('upernet', 'swin_t')])
def test_whole_model_inference_rows_are_measured_in_a_fresh_process(model, backbone):
    case = dict(kind='model', model=model, backbone=backbone, size=(64, 96))
    result = benchmark_bra.run_case(case, None, ARGS)
    assert 'error' not in result, result.get('error')
    assert result['input_shape'] == [1, 3, 64, 96]
    assert result['fwd_ms'] > 0 and 'peak_mb' in result
    assert 'fwd_bwd_ms' not in result, 'inference only'


def test_every_inference_row_compares_biformer_s_with_swin_t_and_resnet_50():
    for device in ('cpu', 'cuda'):
        rows = {(c['model'], c['backbone']) for c in benchmark_bra.case_list(device)
                if c['kind'] == 'model'}
        assert rows == {(m, b) for m in ('maskrcnn', 'upernet')
                        for b in ('biformer_s', 'swin_t', 'r50')}


def test_cpu_case_list_compares_against_the_original_wherever_it_fits_in_memory():
    cases = [c for c in benchmark_bra.case_list('cpu') if c['kind'] == 'bra']
    assert all(benchmark_bra.gather_bytes(c) <= 12 * 2**30 for c in cases)
    assert {(c['input'], c['stage']) for c in cases} >= {('maskrcnn', 3), ('upernet', 1),
                                                         ('cls', 3)}


def test_only_selects_the_rows_matching_any_of_its_values():
    """``--only`` repeated: the rows whose name contains one of the values, e.g. those the
    GPU targets judge (tools/gpu_check.py)."""
    names = [benchmark_bra.case_name(c) for c in benchmark_bra.case_list('cuda')
             if benchmark_bra.selected(c, ['maskrcnn 2x3', 'backbone step'])]
    assert len(names) == 5  # the three BRA stages at Mask R-CNN, two backbone steps
    assert all(n.startswith(('BRA stage', 'biformer_s backbone', 'swin_t backbone'))
               for n in names)


def test_rows_whose_library_is_missing_are_skipped_naming_it(tmp_path, monkeypatch):
    """On a machine without mmdet (a bare GPU machine), the Swin-T and Mask R-CNN rows
    say that they need it instead of failing; BiFormer's own rows need only this
    package."""
    find_spec = benchmark_bra.importlib.util.find_spec
    monkeypatch.setattr(benchmark_bra.importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'mmdet' else find_spec(name, *a))
    report = benchmark_bra.main(['--device', 'cpu', '--only', 'swin_t backbone', '--only',
                                 'maskrcnn swin_t', '--out', str(tmp_path / 'rows.json')])
    assert [r['error'] for r in report['rows']] == ['skipped: needs mmdet, not installed'] * 2
    assert [benchmark_bra.missing_library(c) for c in (
        dict(kind='model', model='upernet', backbone='biformer_s'),
        dict(kind='backbone', backbone='biformer_s'), BRA)] == [None, None, None]


def test_runtimes_mode_measures_both_backbones_in_every_runtime_in_one_run(tmp_path):
    """``--mode runtimes``: BiFormer-S and Swin-T backbones in eager, torch.compile (also
    with freezing) and onnxruntime, each in a fresh process, with the first call
    (compilation or export included), the step time, the ratios within the run, the
    onnxruntime graph's difference from eager reported, and with ``--profile`` where each
    row's time went. Dynamo's ``eager`` backend keeps this fast; the measurement itself uses
    inductor."""
    out = tmp_path / 'runtimes.json'
    report = benchmark_bra.main(['--device', 'cpu', '--mode', 'runtimes', '--only', 'backbone',
                                 '--size', '64', '96', '--compile-backend', 'eager',
                                 '--runs', '1', '--warmup', '0', '--repeats', '1',
                                 '--profile', '3', '--out', str(out)])
    rows = {(r['backbone'], r['runtime']): r for r in report['rows']}
    assert set(rows) == {(b, runtime) for b in ('biformer_s', 'swin_t')
                         for runtime in benchmark_bra.RUNTIMES}
    for row in rows.values():
        assert 'error' not in row, row.get('error')
        assert row['first_s'] > 0 and row['fwd_ms'] > 0
        # Reported, not judged: this random BiFormer-S routes its 64x96 input with near
        # ties (relative margin 1.6e-6 by _export_cases.routing_margin), which two right
        # graphs may route apart; tests/test_onnx.py judges the exported graphs.
        assert math.isfinite(row['onnx_max_error']) if row['runtime'] == 'onnxruntime' \
            else 'onnx_max_error' not in row
        # The 3 operators that took the most self time, torch's or onnxruntime's own.
        assert len(row['op_ms']) == 3 and row['profiled_ms'] >= sum(row['op_ms'].values())
        assert all(ms > 0 for ms in row['op_ms'].values())
        if row['runtime'] not in ('compile', 'frozen'):  # torch's ns::op, or ONNX node types
            assert all('::' in op for op in row['op_ms']) == (row['runtime'] == 'eager'), \
                row['op_ms']
    assert {r['impl'] for r in report['rows'] if r['backbone'] == 'biformer_s'} == \
        {'auto: cpp'}
    for cell in report['summary']:
        assert len(cell['ms']) == len(cell['vs_eager']) == 1
        assert len(cell['vs_swin_t']) == (cell['backbone'] == 'biformer_s')
    assert out.exists()


def test_runtimes_mode_runs_mask_rcnn_in_every_runtime_torch_onnx_can_export():
    cases = benchmark_bra.runtime_cases((800, 1216), 'infer', benchmark_bra.RUNTIMES,
                                        'inductor')
    assert {(c.get('model', 'backbone'), c['backbone'], c['runtime']) for c in cases} == \
        {(net, b, r) for net in ('backbone', 'maskrcnn') for b in ('biformer_s', 'swin_t')
         for r in benchmark_bra.RUNTIMES if (net, r) != ('maskrcnn', 'onnxruntime')}
    assert all(c['kind'] == 'backbone' for c in benchmark_bra.runtime_cases(
        (800, 1216), 'train', ('eager', 'compile'), 'inductor'))


def test_runtimes_mode_times_a_backbone_training_step_with_each_algorithm(tmp_path):
    """``--step train``, and ``--impls``: BiFormer-S once per algorithm, each against the
    Swin-T row of its run."""
    report = benchmark_bra.main(['--device', 'cpu', '--mode', 'runtimes', '--step', 'train',
                                 '--runtimes', 'compile', '--size', '64', '96',
                                 '--compile-backend', 'eager', '--runs', '1', '--warmup', '0',
                                 '--repeats', '1', '--impls', 'chunked,cpp',
                                 '--out', str(tmp_path / 'train.json')])
    assert [(r['backbone'], r['runtime'], r['impl']) for r in report['rows']] == \
        [('biformer_s', 'compile', 'chunked'), ('biformer_s', 'compile', 'cpp'),
         ('swin_t', 'compile', 'mmdet')]
    for row in report['rows']:
        assert 'error' not in row, row.get('error')
        assert row['fwd_bwd_ms'] > 0 and 'fwd_ms' not in row
    assert [(c['backbone'], c['impl'], len(c['ms']), len(c['vs_swin_t']))
            for c in report['summary']] == \
        [('biformer_s', 'chunked', 1, 1), ('biformer_s', 'cpp', 1, 1), ('swin_t', 'mmdet', 1, 0)]


@pytest.mark.parametrize('runtimes,message', [
    ('eager,compile,onnxruntime', 'onnxruntime rows are CPU inference'),
    ('eager,frozen', 'frozen rows are inference')])
def test_onnxruntime_and_frozen_rows_refuse_a_training_step(runtimes, message, capsys):
    with pytest.raises(SystemExit):
        benchmark_bra.main(['--device', 'cpu', '--mode', 'runtimes', '--step', 'train',
                            '--runtimes', runtimes])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize('args,message', [
    (['--mode', 'runtimes', '--runtimes', 'eager,compiled'], "--runtimes: unknown ['compiled']"),
    (['--impls', 'cpp,fused'], "--impls: unknown ['fused']"),
    (['--only', 'mask-rcnn'], "selects no row"),
    (['--repeats', '0'], '--repeats must be at least 1'),
    (['--max-gather-gb', '-1'], '--max-gather-gb at least 0')])
def test_arguments_that_would_measure_something_else_or_nothing_are_refused(args, message,
                                                                          capsys):
    """A typo in a runtime was timed as eager under its name; an --only that matches no
    row wrote an empty report; 0 meant the default."""
    with pytest.raises(SystemExit):
        benchmark_bra.main(['--device', 'cpu', *args])
    assert message in capsys.readouterr().err


def test_a_failed_row_fails_the_command_and_a_skipped_one_does_not():
    assert benchmark_bra.failed_rows({'rows': [
        {'case': 'a'}, {'case': 'b', 'error': 'skipped: needs mmdet, not installed'}]}) == []
    failed = {'case': 'c', 'error': 'timed out after 60 s'}
    assert benchmark_bra.failed_rows({'rows': [{'case': 'a'}, failed]}) == [failed]


@pytest.mark.classic
def test_onnxruntime_row_runs_on_both_stacks(tmp_path):
    """The onnxruntime row exports with ``biformer_mm.onnx_export``, so it runs on
    the classic stack too, whose torch.onnx.export (torch 2.1) takes no ``dynamo=``."""
    report = benchmark_bra.main(['--device', 'cpu', '--mode', 'runtimes', '--only',
                                 'biformer_s backbone', '--runtimes', 'onnxruntime',
                                 '--size', '64', '96', '--runs', '1', '--warmup', '0',
                                 '--repeats', '1', '--out', str(tmp_path / 'rows.json')])
    (row, ) = report['rows']
    assert 'error' not in row, row.get('error')
    assert row['runtime'] == 'onnxruntime' and row['fwd_ms'] > 0
