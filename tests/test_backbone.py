"""Specification of the BiFormer backbone: exactness, arguments, training behaviour."""
import importlib
import subprocess
import sys

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from biformer_mm import BiFormer, convert_official_state_dict
from _reference import fixture_arch, load_fixture, load_manifest

biformer_module = importlib.import_module('biformer_mm.models.backbones.biformer')

pytestmark = pytest.mark.classic

ARCHS = ('tiny', 'small', 'base')


@pytest.fixture(scope='module')
def fixture():
    return load_fixture()


@pytest.mark.parametrize('attn_impl', ['torch', 'gather', 'auto'])
def test_official_weights_reproduce_official_outputs(fixture, attn_impl):
    model = BiFormer(**fixture_arch(fixture), attn_impl=attn_impl).eval()
    model.load_state_dict(convert_official_state_dict(fixture['state_dict']), strict=True)
    with torch.no_grad():
        outs = model(fixture['input'])
    assert len(outs) == len(fixture['outputs']) == 4
    for ours, official in zip(outs, fixture['outputs']):
        assert ours.shape == official.shape
        assert (ours - official).abs().max() < 1e-4


@pytest.mark.parametrize('arch', ARCHS)
def test_every_official_key_converts_to_our_key_with_its_shape(arch):
    entry = load_manifest()[f'biformer_{arch}']
    official = {k: torch.empty(shape) for k, shape in entry['state_dict'].items()}
    converted = convert_official_state_dict({'model': official})
    ours = BiFormer(arch=arch).state_dict()
    backbone_keys = [k for k in official if not k.startswith(('head.', 'norm.'))]
    assert len(converted) == len(backbone_keys)
    for key, value in converted.items():
        assert key in ours, key
        assert ours[key].shape == value.shape, key
    # Everything we have that the official classifier lacks is our per-output norms.
    assert {k for k in ours if k not in converted} == {
        f'out_norms.{i}.{p}' for i in range(4) for p in ('weight', 'bias')}


@pytest.mark.parametrize('arch', ARCHS)
def test_parameter_count_matches_official(arch):
    entry = load_manifest()[f'biformer_{arch}']
    model = BiFormer(arch=arch)
    total = sum(p.numel() for p in model.parameters())
    out_norms = sum(p.numel() for p in model.out_norms.parameters())
    assert total - out_norms == entry['num_params_without_head']


@pytest.mark.parametrize('arch,channels', [('tiny', (64, 128, 256, 512)),
                                           ('small', (64, 128, 256, 512)),
                                           ('base', (96, 192, 384, 768))])
def test_named_arch_trains_on_odd_sizes(arch, channels):
    torch.manual_seed(0)
    model = BiFormer(arch=arch, n_win=4, auto_pad=True, drop_path_rate=0.1).train()
    x = torch.randn(1, 3, 97, 131)
    outs = model(x)
    sizes = [(25, 33), (13, 17), (7, 9), (4, 5)]  # ceil(97/s) x ceil(131/s)
    assert [tuple(o.shape) for o in outs] == [(1, c, *s) for c, s in zip(channels, sizes)]
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f'parameters without gradient: {no_grad}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_out_indices_select_stages_and_only_their_norms():
    model = BiFormer(arch='tiny', out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]
    assert sorted(model.out_norms.keys()) == ['1', '3']


def test_frozen_stages_stop_gradients_and_stay_in_eval():
    model = BiFormer(arch='tiny', n_win=4, frozen_stages=2).train()
    frozen = [model.stem, model.stages[0], model.downsamples[0], model.stages[1],
              model.out_norms['0'], model.out_norms['1']]
    trainable = [model.downsamples[1], model.stages[2], model.stages[3], model.out_norms['2']]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for f in frozen for m in f.modules())
    assert all(p.requires_grad for m in trainable for p in m.parameters())
    stem_bn_mean = model.stem[1].running_mean.clone()
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    assert torch.equal(model.stem[1].running_mean, stem_bn_mean)
    assert all(p.grad is not None for m in trainable for p in m.parameters())


def test_frozen_stage_zero_freezes_only_the_stem():
    model = BiFormer(arch='tiny', frozen_stages=0).train()
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert all(p.requires_grad for p in model.stages[0].parameters())


def test_norm_eval_keeps_batchnorm_statistics_fixed():
    model = BiFormer(arch='tiny', n_win=4, norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not bn.training for bn in bns)
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns))
    assert all(m.training for m in model.stages.modules())


def test_with_cp_gives_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = BiFormer(arch='tiny', n_win=4).train()
    ckpt = BiFormer(arch='tiny', n_win=4, with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 96)
    grads = []
    for model in (plain, ckpt):
        outs = model(x)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        grads.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    for a, b in zip(grads[0][0], grads[1][0]):
        torch.testing.assert_close(a, b)
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grad, grads[1][1][name], msg=name)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_registry_builds_backbone_from_config(scope):
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    model = registry.build(dict(type='BiFormer', arch='tiny', n_win=4, out_indices=(2, 3)))
    assert isinstance(model, BiFormer)
    assert [o.shape[1] for o in model(torch.randn(1, 3, 64, 64))] == [256, 512]


@pytest.mark.parametrize('missing', ['mmseg', 'mmdet'])
def test_import_works_with_only_one_of_mmdet_and_mmseg(missing):
    present = {'mmseg': 'mmdet', 'mmdet': 'mmseg'}[missing]
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            f"import biformer_mm\n"
            f"from {present}.registry import MODELS\n"
            f"assert MODELS.get('BiFormer') is biformer_mm.BiFormer\n")
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='huge'), "Unknown BiFormer arch 'huge'"),
    (dict(arch=dict(depths=[1, 1, 1, 1])), r'missing keys \[.embed_dims'),
    (dict(arch=dict(BiFormer.arch_zoo['tiny'], depths=[1, 1, 1])),
     r"arch\['depths'\] must have one value per stage"),
    (dict(arch=dict(BiFormer.arch_zoo['tiny'], embed_dims=[64, 100, 256, 512])),
     r'embed_dims\[1\]=100 is not divisible by head_dim=32'),
    (dict(arch=dict(BiFormer.arch_zoo['tiny'], qk_dims=[64, 128, 250, 512])),
     r'qk_dims\[2\]=250 is not divisible by head_dim=32'),
    # The global stage's q and k have its width: another qk_dims would be ignored.
    (dict(arch=dict(BiFormer.arch_zoo['tiny'], qk_dims=[64, 128, 256, 128])),
     r'qk_dims\[3\]=128 must equal embed_dims\[3\]=512: stage 3 has global attention'),
    (dict(arch='tiny', n_win=3), r'topk=16 must be in \[1, n_win\*\*2=9\]'),
    (dict(arch='tiny', out_indices=(0, 4)), r'out_indices=\(0, 4\) must be'),
    (dict(arch='tiny', frozen_stages=5), r'frozen_stages=5 must be in \[-1, 4\]'),
    (dict(arch='tiny', attn_impl='cuda'), r"attn_impl must be one of"),
])
def test_bad_arguments_fail_at_construction_with_the_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BiFormer(**kwargs)


@pytest.mark.parametrize('shape,match', [
    ((3, 64, 64), r'expects a 4-D \(N, C, H, W\) tensor, got shape \(3, 64, 64\)'),
    ((1, 1, 64, 64), r'expects 3 input channels, got 1'),
])
def test_bad_input_fails_at_forward(shape, match):
    with pytest.raises(ValueError, match=match):
        BiFormer(arch='tiny', n_win=4)(torch.randn(*shape))


def test_map_not_divisible_by_n_win_without_auto_pad_names_the_fix():
    model = BiFormer(arch='tiny', n_win=4, auto_pad=False)
    model(torch.randn(1, 3, 128, 128))  # 32x32 stage-1 map: divisible
    with pytest.raises(ValueError, match=r'30x32 map that does not divide by n_win=4: set '
                                         r'auto_pad=True'):
        model(torch.randn(1, 3, 120, 128))


def test_default_init_is_truncated_normal_for_linear_layers():
    model = BiFormer(arch='tiny')
    model.init_weights()
    qkv = model.stages[0][0].attn.qkv
    assert 0.015 < qkv.weight.std() < 0.025
    assert torch.count_nonzero(qkv.bias) == 0


def test_second_init_weights_keeps_the_weights():
    model = BiFormer(arch='tiny')
    model.init_weights()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.init_weights()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_with_cp_checkpoints_blocks_behind_a_frozen_stem():
    """Activation checkpointing recomputes each block in the backward, also when the
    block input needs no gradient (the stem is frozen)."""
    model = BiFormer(arch='tiny', n_win=4, frozen_stages=0, with_cp=True).train()
    calls = []
    model.stages[0][0].register_forward_pre_hook(lambda *args: calls.append(1))
    sum(o.mean() for o in model(torch.randn(1, 3, 64, 64))).backward()
    assert len(calls) == 2, 'the block ran once: it was not checkpointed'
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert len(calls) == 3


def test_norm_cfg_and_act_cfg_build_the_stem_downsampling_and_mlp_layers():
    model = BiFormer(arch='tiny', norm_cfg=dict(type='SyncBN'), act_cfg=dict(type='ReLU'))
    norms = [model.stem[1], model.stem[4]] + [d[1] for d in model.downsamples]
    assert all(isinstance(m, torch.nn.SyncBatchNorm) for m in norms)
    assert type(model.stem[2]) is torch.nn.ReLU
    assert type(model.stages[2][0].mlp.act) is torch.nn.ReLU
    default = BiFormer(arch='tiny')
    assert type(default.stem[1]) is torch.nn.BatchNorm2d
    assert type(default.stem[2]) is torch.nn.GELU
    assert type(default.stages[2][0].mlp.act) is torch.nn.GELU
    # The state dict keys do not depend on the layer types.
    assert model.state_dict().keys() == default.state_dict().keys()


def test_norm_eval_without_batchnorm_says_it_does_nothing(monkeypatch):
    logged = []
    monkeypatch.setattr(biformer_module, 'print_log', lambda msg, **kwargs: logged.append(msg))
    BiFormer(arch='tiny', norm_cfg=dict(type='GN', num_groups=8), norm_eval=True)
    assert any('norm_eval=True has no effect' in m for m in logged), logged
    logged.clear()
    BiFormer(arch='tiny', norm_eval=True)  # BatchNorm: it applies
    assert not any('norm_eval' in m for m in logged), logged
