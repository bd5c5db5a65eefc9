"""Specification of tools/benchmark_bra.py: every kind of row it reports is measured,
each in its own process, on small shapes."""
import os.path as osp
import sys
from argparse import Namespace

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))  # spawned measurement processes import it
import benchmark_bra  # noqa: E402

ARGS = Namespace(device='cpu', dtype='fp32', warmup=0, repeats=1, timeout=300)
BRA = dict(kind='bra', input='cls', stage=3, batch=1)
TINY_BACKBONE = dict(kind='backbone', batch=1, size=(64, 96))


def test_cpu_compares_the_original_with_the_chunked_algorithm():
    assert benchmark_bra.available_impls('cpu') == ['gather', 'chunked']


def test_rows_name_the_algorithm_the_default_runs():
    assert benchmark_bra.auto_algorithm('cpu', 'fp32') == 'chunked'


@pytest.mark.parametrize('case,impl', [
    (BRA, 'gather'),
    (BRA, 'chunked'),
    (dict(TINY_BACKBONE, model='biformer_s', n_win=4), 'chunked'),
    (dict(TINY_BACKBONE, model='swin_t'), None),
], ids=['bra-gather', 'bra-chunked', 'biformer_s-step', 'swin_t-step'])
def test_every_row_kind_is_measured_in_a_fresh_process(case, impl):
    result = benchmark_bra.run_case(case, impl, ARGS)
    assert 'error' not in result, result.get('error')
    assert result['fwd_ms'] > 0 and result['fwd_bwd_ms'] > 0 and result['peak_mb'] >= 0


@pytest.mark.parametrize('model,backbone', [('maskrcnn', 'biformer_s'), ('upernet', 'swin_t')])
def test_whole_model_inference_rows_are_measured_in_a_fresh_process(model, backbone):
    case = dict(kind='model', model=model, backbone=backbone, size=(64, 96))
    result = benchmark_bra.run_case(case, None, ARGS)
    assert 'error' not in result, result.get('error')
    assert result['input_shape'] == [1, 3, 64, 96]
    assert result['images_per_s'] == pytest.approx(1e3 / result['fwd_ms'])
    assert result['peak_mb'] >= 0 and 'fwd_bwd_ms' not in result, 'inference only'


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


def test_compile_mode_measures_both_backbones_eager_and_compiled_in_one_run(tmp_path):
    """``--mode compile``: BiFormer-S and Swin-T, eager and compiled, each in a fresh
    process, with the first step (compilation included) and the step time. Dynamo's
    ``eager`` backend keeps this fast; the measurement itself uses inductor."""
    out = tmp_path / 'compile.json'
    report = benchmark_bra.main(['--device', 'cpu', '--mode', 'compile', '--size', '64', '96',
                                 '--compile-backend', 'eager', '--runs', '1', '--warmup', '0',
                                 '--repeats', '1', '--out', str(out)])
    rows = {(r['model'], r['mode']): r for r in report['rows']}
    assert set(rows) == {(m, mode) for m in ('biformer_s', 'swin_t')
                         for mode in ('eager', 'compile (eager)')}
    for row in report['rows']:
        assert 'error' not in row, row.get('error')
        assert row['first_step_s'] > 0 and row['step_ms'] > 0
    assert {r['algorithm'] for r in report['rows'] if r['model'] == 'biformer_s'} == \
        {'chunked'}
    assert out.exists()
