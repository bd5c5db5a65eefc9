"""Specification of tools/analysis/get_flops.py, and of mmdet's own get_flops.py counting
our detectors right once their config imports biformer_mm."""
import json
import os.path as osp
import re
import sys

import mmdet
import pytest
import torch

from biformer_mm import BiFormer
from biformer_mm.analysis import FLOP_HANDLES, count_complexity, default_input_size
from biformer_mm.engine import load_config
from conftest import REPO_ROOT, load_tool, run

get_flops = load_tool('analysis/get_flops.py')
CONFIGS = osp.join(REPO_ROOT, 'configs')
RETINANET = osp.join(CONFIGS, 'detection', 'retinanet_biformer_t.py')
RETINANET_TOY = osp.join(CONFIGS, 'detection', 'toy', 'retinanet_biformer_t_toy_coco.py')
UPERNET = osp.join(CONFIGS, 'segmentation', 'upernet_biformer_t.py')
# 4x4 regions: at the toy's 256x256 the routed attention is a sizeable share of the
# count, so a count that misses it cannot pass for one that has it.
SMALL_REGIONS = ['--cfg-options', 'model.backbone.n_win=4']


def backbone_of(cfg) -> BiFormer:
    """The BiFormer of a config, built alone (no pretrained weights)."""
    kwargs = {k: v for k, v in cfg.model.backbone.to_dict().items()
              if k not in ('type', 'init_cfg')}
    return BiFormer(**kwargs).eval()


@pytest.mark.parametrize('config,args,input_shape', [
    (RETINANET_TOY, [], [1, 3, 256, 256]),
    (UPERNET, ['--shape', '100', '150'], [1, 3, 100, 150]),
], ids=['mmdet-retinanet-toy-test-size', 'mmseg-upernet-shape'])
def test_json_reports_the_model_and_its_backbone(config, args, input_shape, capsys):
    result = get_flops.main([config, '--json'] + args)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == result
    assert result['input_shape'] == input_shape
    cfg = load_config(config)
    backbone = count_complexity(backbone_of(cfg), (torch.randn(*input_shape), ))
    assert result['parts']['backbone'] == dict(flops=backbone['flops'],
                                               params=backbone['params'],
                                               by_operator=backbone['by_operator'])
    heads = {'neck', 'bbox_head'} if 'retinanet' in config else {'decode_head'}
    assert set(result['parts']) == {'backbone'} | heads, 'auxiliary heads are training-only'
    # Ops a model runs outside its parts' calls (mmseg calls decode_head.forward directly)
    # count for the whole model only.
    assert result['flops'] >= sum(part['flops'] for part in result['parts'].values())
    assert result['params'] == sum(part['params'] for part in result['parts'].values())
    assert not set(result['uncounted_ops']) & set(FLOP_HANDLES)


# The paper's first table: fvcore's count of the official classifiers at 1x3x224x224
# (GFLOPs, to the digits it was measured to) and their exact parameter counts.
PAPER_TABLE = {'tiny': (2.228, 13_142_760), 'small': (4.487, 25_536_232),
               'base': (9.795, 56_804_968)}


@pytest.mark.parametrize('arch', list(PAPER_TABLE))
def test_arch_reproduces_the_paper_table(arch, capsys):
    gflops, params = PAPER_TABLE[arch]
    result = get_flops.main(['--arch', arch, '--json'])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert result['input_shape'] == [1, 3, 224, 224]
    assert result['flops'] / 1e9 == pytest.approx(gflops, rel=0.01)
    assert round(result['flops'] / 1e9, 3) == gflops
    assert result['params'] == params
    assert set(result['parts']) == {'stages', 'head'}
    assert result['params'] == sum(part['params'] for part in result['parts'].values())
    for part in result['parts'].values():
        assert sum(part['by_operator'].values()) == part['flops']


@pytest.mark.parametrize('argv,message', [
    ([], 'give either CONFIG or --arch'),
    ([RETINANET, '--arch', 'tiny'], 'give either CONFIG or --arch'),
    (['--arch', 'tiny', '--cfg-options', 'model.backbone.n_win=4'],
     '--cfg-options applies to CONFIG, not --arch'),
], ids=['neither', 'both', 'options-with-arch'])
def test_arch_and_config_are_exclusive(argv, message, capsys):
    with pytest.raises(SystemExit):
        get_flops.main(argv)
    assert f'error: {message}' in capsys.readouterr().err


def test_default_size_is_the_test_pipeline_resize_scale():
    cfg = load_config(osp.join(CONFIGS, 'detection', 'maskrcnn_biformer_s.py'))
    assert default_input_size(cfg) == (800, 1333)
    cfg = load_config(osp.join(CONFIGS, 'segmentation', 'fpn_biformer_s.py'))
    assert default_input_size(cfg) == (512, 2048)
    del cfg.test_dataloader.dataset.pipeline[1]
    with pytest.raises(ValueError, match='give the size explicitly'):
        default_input_size(cfg)


def test_table_lists_parts_and_what_the_convention_leaves_out(capsys):
    get_flops.main([UPERNET, '--shape', '64', '64'])
    out = capsys.readouterr().out
    assert re.search(r'\| whole model \| \d+\.\d{3} \| \d+\.\d\d \|', out)
    assert '| backbone |' in out and 'Not counted (fvcore convention): ' in out
    assert 'aten::topk' in out


def test_mmdet_get_flops_counts_our_attention(toy_coco_workdir, tmp_path):
    """mmdet's tools/analysis_tools/get_flops.py, unchanged, on our config (it imports
    biformer_mm through custom_imports) gives our count, which the attention
    handles raise measurably."""
    config = tmp_path / 'retinanet_biformer_t_toy.py'
    load_config(RETINANET_TOY).dump(str(config))
    tool = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'analysis_tools',
                    'get_flops.py')
    output = run([sys.executable, tool, str(config), '--num-images', '1'] + SMALL_REGIONS,
                 cwd=toy_coco_workdir)
    assert 'Input shape: (256, 256)' in output, output[-2000:]
    mmdet_gflops = float(re.search(r'Flops: ([\d.]+)G', output).group(1))

    ours = get_flops.main([str(config), '--json'] + SMALL_REGIONS)
    assert mmdet_gflops == pytest.approx(ours['flops'] / 1e9, abs=1e-3)
    model = backbone_of(load_config(str(config), cfg_options={'model.backbone.n_win': 4}))
    by_operator = count_complexity(model, (torch.randn(1, 3, 256, 256), ))['by_operator']
    ours_only = {name.split('::', 1)[1] for name in FLOP_HANDLES}
    attention = sum(n for op, n in by_operator.items() if op in ours_only)
    assert attention > 0.03 * ours['flops'], 'the check above would not see missing handles'
