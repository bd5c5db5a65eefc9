"""Specification of the BiFormer ImageNet classifiers in timm: registration, official
weights through ``pretrained=True``, the pretrained cfg, timm's model and feature API,
and the stages shared with the mm backbone."""
import subprocess
import sys

import pytest
import timm
import torch
from timm.data import create_transform, resolve_data_config
from torch.nn.modules.batchnorm import _BatchNorm

from biformer_mm import BiFormer, BiFormerClassifier, convert_official_state_dict
from biformer_mm.models import BiFormerTrunk
from biformer_mm.safe_load import UnsafeCheckpointError
from _reference import (fixture_arch, load_cls_fixture, load_fixture, load_manifest,
                        save_official)

ARCH_CHANNELS = {'tiny': [64, 128, 256, 512], 'small': [64, 128, 256, 512],
                 'base': [96, 192, 384, 768]}
# A small arch for the API tests: 64x64 inputs give 16, 8, 4, 2 maps (the last padded).
TOY = dict(arch=dict(depths=[1, 1, 2, 1], embed_dims=[32, 64, 96, 128],
                     qk_dims=[32, 64, 96, 128], mlp_ratios=[3, 3, 3, 3],
                     topks=[1, 4, 16, -2], head_dim=32), n_win=4)


@pytest.fixture(scope='module')
def cls_fixture():
    return load_cls_fixture()


@pytest.fixture
def official_file(cls_fixture, tmp_path):
    """The official tiny classifier saved as the official training script saves."""
    return save_official(tmp_path / 'biformer_fixture_best.pth', cls_fixture['state_dict'])


def create_official(cls_fixture, file, **kwargs):
    """The fixture's classifier through timm, its weights read from ``file``."""
    kwargs = {**fixture_arch(cls_fixture), 'num_classes': 10, **kwargs}
    return timm.create_model('biformer_tiny', pretrained=True, pretrained_cfg_overlay=dict(
        file=file, num_classes=cls_fixture['arch']['num_classes']), **kwargs).eval()


def test_importing_biformer_mm_registers_the_three_classifiers():
    code = ("import timm\n"
            "assert timm.list_models('biformer_*') == []\n"
            "import biformer_mm\n"
            "assert timm.list_models('biformer_*') == "
            "['biformer_base', 'biformer_small', 'biformer_tiny']\n")
    subprocess.run([sys.executable, '-c', code], check=True)


def test_the_classifiers_need_neither_mmcv_nor_mmdet_nor_mmseg():
    """A timm user installs torch, timm and what setup.py declares (mmengine): the
    classifiers build, run and train without mmcv, mmdet or mmseg importable."""
    code = ("import sys\n"
            "for name in ('mmcv', 'mmdet', 'mmseg'):\n"
            "    sys.modules[name] = None  # importing it raises ImportError\n"
            "import timm, torch\n"
            "import biformer_mm\n"
            "model = timm.create_model('biformer_tiny', num_classes=5)\n"
            "model(torch.randn(2, 3, 64, 64)).sum().backward()\n"
            "assert not any(m.split('.')[0] in ('mmcv', 'mmdet', 'mmseg')\n"
            "               for m, mod in sys.modules.items() if mod is not None)\n")
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_named_models_have_the_official_keys_parameters_and_feature_info(arch):
    model = timm.create_model(f'biformer_{arch}')
    entry = load_manifest()[f'biformer_{arch}']
    assert sum(p.numel() for p in model.parameters()) == entry['num_params']
    official = {k: torch.empty(s) for k, s in entry['state_dict'].items()}
    converted = convert_official_state_dict(official, keep_classifier=True)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in converted.items()}
    assert model.feature_info == [
        dict(num_chs=c, reduction=r, module=f'stages.{i}')
        for i, (c, r) in enumerate(zip(ARCH_CHANNELS[arch], (4, 8, 16, 32)))]
    assert model.num_features == model.head_hidden_size == ARCH_CHANNELS[arch][-1]


def test_official_classifier_reproduces_the_official_logits(cls_fixture, official_file):
    model = create_official(cls_fixture, official_file)
    with torch.no_grad():
        logits = model(cls_fixture['input'])
    assert (logits - cls_fixture['logits']).abs().max() < 1e-4
    # The pretrained cfg names the file; the weights live in the model only.
    assert model.pretrained_cfg['file'] == official_file
    assert 'state_dict' not in model.pretrained_cfg


def test_other_num_classes_or_in_chans_drop_or_adapt_only_the_affected_layer(
        cls_fixture, official_file):
    official = create_official(cls_fixture, official_file)
    five = create_official(cls_fixture, official_file, num_classes=5)
    x = cls_fixture['input']
    with torch.no_grad():
        assert torch.equal(five.forward_head(five.forward_features(x), pre_logits=True),
                           official.forward_head(official.forward_features(x), pre_logits=True))
        assert five(x).shape == (2, 5)
    gray = create_official(cls_fixture, official_file, in_chans=1)
    # timm's input-conv adaptation: the RGB filters summed.
    assert torch.allclose(gray.stem[0].weight, official.stem[0].weight.sum(1, keepdim=True))
    assert torch.equal(gray.head.weight, official.head.weight)


def test_features_only_pretrained_returns_the_official_stage_outputs(
        cls_fixture, official_file):
    official = create_official(cls_fixture, official_file)
    features = timm.create_model(
        'biformer_tiny', pretrained=True, features_only=True, out_indices=(1, 3),
        pretrained_cfg_overlay=dict(file=official_file), **fixture_arch(cls_fixture)).eval()
    x = cls_fixture['input']
    with torch.no_grad():
        expected = official.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
        outputs = features(x)
    assert features.feature_info.channels() == [64, 128]
    assert features.feature_info.reduction() == [8, 32]
    assert len(outputs) == len(expected) == 2
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected))
    assert all('state_dict' not in m.pretrained_cfg for m in (features, features.model))


def test_a_pickled_payload_is_refused_without_running_it(cls_fixture, tmp_path):
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'biformer_tiny_best.pth'
    torch.save({'model': cls_fixture['state_dict'], 'payload': Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as error:
        create_official(cls_fixture, str(path))
    assert not marker.exists()
    message = str(error.value)
    assert 'builtins.exec' in message
    assert f"prefixing pretrained_cfg_overlay['file'] with 'trusted://'" in message

    # The documented opt-in loads a file the user trusts in full.
    model = create_official(cls_fixture, f'trusted://{path}')
    assert marker.exists()
    with torch.no_grad():
        assert (model(cls_fixture['input']) - cls_fixture['logits']).abs().max() < 1e-4


class Payload:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return exec, (f'open({self.path!r}, "w").close()', )


def test_pretrained_without_a_file_names_the_download_and_the_overlay():
    with pytest.raises(ValueError, match=r"Download biformer_\{tiny,small,base\}_best\.pth "
                                         r"\(linked from https://github\.com/rayleizhu/"
                                         r"BiFormer\) and pass pretrained_cfg_overlay="
                                         r"dict\(file=PATH\)"):
        timm.create_model('biformer_tiny', pretrained=True)
    with pytest.raises(FileNotFoundError, match=r"missing\.pth does not exist\. Download "):
        timm.create_model('biformer_tiny', pretrained=True,
                          pretrained_cfg_overlay=dict(file='missing.pth'))


def test_a_checkpoint_that_does_not_fit_fails_with_the_keys(tmp_path):
    """The official dense fixture: no classifier norm, per-output norms instead."""
    fixture = load_fixture()
    path = save_official(tmp_path / 'dense.pth', fixture['state_dict'])
    with pytest.raises(ValueError) as error:
        timm.create_model('biformer_tiny', pretrained=True, num_classes=10,
                          pretrained_cfg_overlay=dict(file=path), **fixture_arch(fixture))
    message = str(error.value)
    assert 'does not fit this BiFormerClassifier' in message
    assert 'missing from the checkpoint: norm.weight' in message
    assert 'have no place in the model: out_norms.0.weight' in message
    assert 'official ImageNet classification checkpoint of this arch' in message


def test_pretrained_cfg_is_the_official_evaluation():
    model = timm.create_model('biformer_small')
    cfg = model.pretrained_cfg
    assert cfg['input_size'] == (3, 224, 224)
    assert cfg['interpolation'] == 'bicubic' and cfg['crop_pct'] == 0.875
    assert cfg['mean'] == (0.485, 0.456, 0.406) and cfg['std'] == (0.229, 0.224, 0.225)
    assert cfg['num_classes'] == 1000 and cfg['pool_size'] == (7, 7)
    assert model.get_submodule(cfg['first_conv']) is model.stem[0]
    assert model.get_submodule(cfg['classifier']) is model.get_classifier() is model.head
    assert 'top-1 83.8%' in cfg['notes'][0]
    transform = create_transform(**resolve_data_config({}, model=model))
    resize, crop = transform.transforms[:2]
    assert resize.size == 256 and resize.interpolation.value == 'bicubic'
    assert crop.size == (224, 224)


def test_forward_features_head_and_reset_classifier():
    model = timm.create_model('biformer_tiny', num_classes=7, **TOY).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        assert features.shape == (2, 128, 2, 2)
        assert torch.allclose(pooled, features.mean((2, 3)))
        assert torch.equal(model(x), model.head(pooled))
        model.reset_classifier(0)
        assert model.num_classes == 0 and torch.equal(model(x), pooled)
        model.reset_classifier(0, '')
        assert torch.equal(model(x), features)
        model.reset_classifier(3, 'catavgmax')
        assert model.head_hidden_size == 256 and model(x).shape == (2, 3)


def test_forward_intermediates_in_timm_form():
    model = timm.create_model('biformer_tiny', **TOY).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x))
        assert [tuple(s.shape[1:]) for s in stages] == [(32, 16, 16), (64, 8, 8), (96, 4, 4),
                                                       (128, 2, 2)]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert len(last_two) == 2 and all(torch.equal(a, b) for a, b in zip(last_two, stages[2:]))
        _, early = model.forward_intermediates(x, indices=[0, 1], stop_early=True)
        assert len(early) == 2 and all(torch.equal(a, b) for a, b in zip(early, stages[:2]))
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
        assert torch.equal(normed[0], final)
    with pytest.raises(ValueError, match="NCHW maps, got output_fmt='NHWC'"):
        model.forward_intermediates(x, output_fmt='NHWC')


def test_features_only_default_returns_the_four_stages():
    model = timm.create_model('biformer_base', features_only=True).eval()
    assert model.feature_info.channels() == [96, 192, 384, 768]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[1:]) for o in outputs] == [(96, 16, 24), (192, 8, 12), (384, 4, 6),
                                                    (768, 2, 3)]


@pytest.mark.parametrize('feature_cls', ['hook', 'fx'])
def test_features_only_with_timm_s_other_feature_classes(feature_cls):
    x = torch.randn(1, 3, 64, 64)
    outputs = []
    for kwargs in (dict(), dict(feature_cls=feature_cls)):
        torch.manual_seed(0)
        model = timm.create_model('biformer_tiny', features_only=True, out_indices=(1, 3),
                                  **kwargs, **TOY).eval()
        with torch.no_grad():
            out = model(x)
        outputs.append(list(out.values()) if isinstance(out, dict) else out)
    getter, other = outputs
    assert len(getter) == len(other) == 2
    assert all(torch.equal(a, b) for a, b in zip(getter, other))


def test_grad_checkpointing_recomputes_blocks_with_the_same_gradients():
    torch.manual_seed(0)
    plain = timm.create_model('biformer_tiny', num_classes=5, **TOY).train()
    ckpt = timm.create_model('biformer_tiny', num_classes=5, **TOY).train()
    ckpt.load_state_dict(plain.state_dict())
    ckpt.set_grad_checkpointing()
    calls = []
    ckpt.stages[0][0].register_forward_pre_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 3, 64, 64)
    for model in (plain, ckpt):
        model(x).square().sum().backward()
    assert len(calls) == 2, 'the block ran once: it was not checkpointed'
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_both_batchnorms_follow_train_and_eval():
    model = timm.create_model('biformer_tiny', **TOY)
    stem_bn, final_bn = model.stem[1], model.norm
    assert isinstance(stem_bn, _BatchNorm) and isinstance(final_bn, _BatchNorm)
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        alone = model(x[:1])
        assert torch.allclose(model(x)[:1], alone, atol=1e-5)  # no batch statistics
    assert int(stem_bn.num_batches_tracked) == int(final_bn.num_batches_tracked) == 0
    model.train()
    model(x)
    assert int(stem_bn.num_batches_tracked) == int(final_bn.num_batches_tracked) == 1


def test_classifier_and_mm_backbone_share_the_stages(cls_fixture):
    """Both are a BiFormerTrunk: the classifier's trunk weights load into the backbone
    and give the same stage outputs."""
    kwargs = fixture_arch(cls_fixture)
    classifier = timm.create_model('biformer_tiny', num_classes=10, **kwargs).eval()
    backbone = BiFormer(**kwargs).eval()
    assert isinstance(classifier, BiFormerClassifier)
    assert isinstance(classifier, BiFormerTrunk) and isinstance(backbone, BiFormerTrunk)
    trunk = {k: v for k, v in classifier.state_dict().items()
             if not k.startswith(('norm.', 'head.'))}
    result = backbone.load_state_dict(trunk, strict=False)
    assert result.unexpected_keys == []
    assert all(k.startswith('out_norms.') for k in result.missing_keys)
    x = cls_fixture['input'][:1]
    with torch.no_grad():
        stages = classifier.forward_intermediates(x, intermediates_only=True)
        _, backbone_stages = backbone.forward_stages(x, take=range(4))
    assert len(stages) == len(backbone_stages) == 4
    assert all(torch.equal(a, b) for a, b in zip(stages, backbone_stages))


@pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning')  # shape-specific, as expected
def test_traces_with_torch_jit_in_eval_mode():
    model = timm.create_model('biformer_tiny', **TOY).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        assert torch.equal(traced(x), model(x))


def test_backbone_arguments_reach_the_blocks():
    model = timm.create_model('biformer_tiny', n_win=4, attn_impl='gather',
                              drop_path_rate=0.2, drop_rate=0.3, global_pool='max')
    attn = model.stages[0][0].attn
    assert attn.n_win == 4 and attn.attn_impl == 'gather' and attn.auto_pad
    assert model.stages[3][-1].drop_path.drop_prob == pytest.approx(0.2)
    assert model.head_drop.p == 0.3 and model.global_pool.pool_type == 'max'
    with pytest.raises(ValueError, match="Unknown BiFormer arch 'huge'"):
        timm.create_model('biformer_tiny', arch='huge')
