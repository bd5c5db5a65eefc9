"""Specification of ``init_cfg=dict(type='Pretrained', ...)`` on the BiFormer backbone:
official weights load fully, in every form mmengine users write, or fail loudly with
the fix."""
import contextlib
import functools
import http.server
import logging
import threading

import pytest
import torch
import torchvision
from mmengine.logging import MMLogger

from biformer_mm import BiFormer, convert_official_state_dict
from biformer_mm.safe_load import UnsafeCheckpointError, read_checkpoint
from _reference import fixture_arch, load_fixture, load_manifest, save_official
from conftest import Payload

pytestmark = pytest.mark.classic

OUT_NORMS = {f'out_norms.{i}.{p}' for i in range(4) for p in ('weight', 'bias')}


@pytest.fixture(scope='module')
def fixture():
    return load_fixture()


def official_classifier_state_dict(arch: str, fill=None) -> dict:
    """An official classification checkpoint's state dict (keys and shapes from the
    manifest), filled with random values, or ``fill``."""
    shapes = load_manifest()[f'biformer_{arch}']['state_dict']
    gen = torch.Generator().manual_seed(0)
    return {k: (torch.tensor(7) if k.endswith('num_batches_tracked') else
                torch.full(s, fill) if fill is not None else torch.randn(s, generator=gen))
            for k, s in shapes.items()}


def outputs(model, fixture):
    with torch.no_grad():
        return model.eval()(fixture['input'])


def assert_reproduces_official_outputs(model, fixture):
    ours = outputs(model, fixture)
    assert len(ours) == len(fixture['outputs'])
    for out, official in zip(ours, fixture['outputs']):
        assert (out - official).abs().max() < 1e-4


@pytest.mark.parametrize('init_cfg', [
    lambda path: dict(type='Pretrained', checkpoint=path),
    lambda path: [dict(type='Pretrained', checkpoint=path)],
    lambda path: [dict(type='Constant', layer='Linear', val=0.), dict(type='Pretrained',
                                                                     checkpoint=path)],
], ids=['dict', 'list', 'list-with-another-initialiser'])
def test_official_dense_checkpoint_loads_through_dict_and_list_init_cfg(
        fixture, tmp_path, init_cfg):
    path = save_official(tmp_path / 'official.pth', fixture['state_dict'])
    model = BiFormer(**fixture_arch(fixture), init_cfg=init_cfg(path))
    model.init_weights()
    assert_reproduces_official_outputs(model, fixture)


def test_official_classification_checkpoint_loads_everything_but_the_output_norms(tmp_path):
    official = official_classifier_state_dict('tiny')
    path = save_official(tmp_path / 'biformer_tiny_best.pth', official)
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    converted = convert_official_state_dict(official)
    ours = model.state_dict()
    assert set(ours) - set(converted) == OUT_NORMS
    assert all(torch.equal(ours[k], v) for k, v in converted.items())
    # The output norms keep their initialisation: ones and zeros.
    assert all(torch.equal(ours[k], torch.ones_like(ours[k]) if k.endswith('weight') else
                           torch.zeros_like(ours[k])) for k in OUT_NORMS)


def test_convert_official_state_dict_leaves_only_the_output_norms_missing():
    """What the README promises users of convert_official_state_dict."""
    model = BiFormer(arch='small')
    result = model.load_state_dict(
        convert_official_state_dict(official_classifier_state_dict('small')), strict=False)
    assert set(result.missing_keys) == OUT_NORMS
    assert result.unexpected_keys == []


def test_a_resnet_checkpoint_fails_with_the_counts_and_the_fix(tmp_path):
    path = tmp_path / 'resnet50.pth'
    torch.save(torchvision.models.resnet50().state_dict(), path)
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError) as error:
        model.init_weights()
    message = str(error.value)
    assert 'does not fit this BiFormer' in message
    assert 'of the model\'s 265 tensors are missing' in message
    assert 'stem.0.weight' in message and 'conv1.weight' in message
    assert 'init_cfg.prefix' in message and 'init_cfg.strict=False' in message


def test_a_checkpoint_of_a_deeper_arch_fails_on_its_extra_blocks(tmp_path):
    path = save_official(tmp_path / 'biformer_small_best.pth',
                         official_classifier_state_dict('small'))
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(ValueError, match=r'checkpoint tensors have no place in the model: '
                                         r'stages\.0\.2\.'):
        model.init_weights()


def test_a_checkpoint_of_a_wider_arch_lists_the_shape_mismatches(tmp_path):
    path = tmp_path / 'base.pth'
    torch.save({'state_dict': BiFormer(arch='base').state_dict()}, path)
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=r'shape mismatches:\n  stem\.0\.weight: checkpoint '
                                         r'\(48, 3, 3, 3\) vs model \(32, 3, 3, 3\)'):
        model.init_weights()


def test_strict_false_loads_what_fits_and_warns_about_the_rest(tmp_path):
    """A changed last stage (wider) keeps the pretrained weights of the others."""
    official = official_classifier_state_dict('tiny')
    path = save_official(tmp_path / 'biformer_tiny_best.pth', official)
    arch = dict(BiFormer.arch_zoo['tiny'], embed_dims=[64, 128, 256, 640],
                qk_dims=[64, 128, 256, 640])
    model = BiFormer(arch=arch, init_cfg=dict(type='Pretrained', checkpoint=path,
                                              strict=False))
    logger = MMLogger.get_instance('test_strict_false', log_file=str(tmp_path / 'log.txt'))
    model.init_weights()
    log = (tmp_path / 'log.txt').read_text()
    assert 'WARNING' in log and 'Partial load (strict=False)' in log
    assert 'stages.3.0.pos_embed.weight: checkpoint (512, 1, 3, 3) vs model (640, 1, 3, 3)' in log
    converted = convert_official_state_dict(official)
    assert torch.equal(model.state_dict()['stages.2.7.attn.qkv.weight'],
                       converted['stages.2.7.attn.qkv.weight'])
    del logger


def test_prefix_selects_a_nested_backbone_and_a_wrong_prefix_names_the_keys(
        fixture, tmp_path):
    # A whole-model checkpoint whose backbone sits under 'teacher.backbone.'.
    nested = {f'teacher.backbone.{k}': v for k, v in fixture['state_dict'].items()}
    nested['teacher.neck.conv.weight'] = torch.zeros(1)
    path = tmp_path / 'teacher.pth'
    torch.save({'state_dict': nested}, path)
    model = BiFormer(**fixture_arch(fixture), init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='teacher.backbone.'))
    model.init_weights()
    assert_reproduces_official_outputs(model, fixture)

    wrong = BiFormer(**fixture_arch(fixture), init_cfg=dict(
        type='Pretrained', checkpoint=str(path), prefix='student.'))
    with pytest.raises(KeyError, match=r"prefix 'student\.'.*\['teacher\.'\]"):
        wrong.init_weights()


@contextlib.contextmanager
def http_server(directory):
    """Serve ``directory`` over http on a free local port; yields the base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()


def test_a_url_is_downloaded_into_torchs_hub_cache_and_read_weights_only(
        fixture, tmp_path, monkeypatch):
    """An http(s) checkpoint is cached in torch's hub directory (where mmengine caches
    URLs) and converts like a local one."""
    served = tmp_path / 'served'
    served.mkdir()
    save_official(served / 'biformer_fixture.pth', fixture['state_dict'])
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    with http_server(served) as base:
        model = BiFormer(**fixture_arch(fixture),
                         init_cfg=dict(type='Pretrained',
                                       checkpoint=f'{base}/biformer_fixture.pth'))
        model.init_weights()
    assert_reproduces_official_outputs(model, fixture)
    assert list((tmp_path / 'torch_home').rglob('biformer_fixture.pth'))


def test_a_url_with_a_payload_is_refused_without_running_it(tmp_path, monkeypatch):
    """torch.hub's and mmengine's URL loaders unpickle in full, even on torch >= 2.6."""
    marker = tmp_path / 'payload_ran'
    served = tmp_path / 'served'
    served.mkdir()
    torch.save({'model': {}, 'args': Payload(marker)}, served / 'evil.pth')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    with http_server(served) as base:
        model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained',
                                                    checkpoint=f'{base}/evil.pth'))
        with pytest.raises(UnsafeCheckpointError, match='builtins.exec'):
            model.init_weights()
    assert not marker.exists()


def test_map_location_is_honoured(fixture, tmp_path):
    path = save_official(tmp_path / 'official.pth', fixture['state_dict'])
    loaded = read_checkpoint(path, map_location='meta')
    assert all(t.device.type == 'meta' for t in loaded['model'].values())


def test_a_missing_file_names_the_path_the_download_source_and_init_cfg_none(tmp_path):
    path = tmp_path / 'checkpoints' / 'biformer_small_best.pth'
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(FileNotFoundError) as error:
        model.init_weights()
    message = str(error.value)
    assert str(path) in message
    assert 'https://github.com/rayleizhu/BiFormer' in message
    assert 'init_cfg=None' in message


@pytest.mark.parametrize('init_cfg,match', [
    (dict(type='Pretrained', checkpont='x.pth'), r"needs checkpoint .* unknown keys: "
                                                 r"\['checkpont'\]"),
    ([dict(type='Pretrained', checkpoint='a.pth'), dict(type='Pretrained', checkpoint='b')],
     'has 2 Pretrained entries'),
])
def test_a_malformed_pretrained_entry_fails_at_construction(init_cfg, match):
    with pytest.raises(ValueError, match=match):
        BiFormer(arch='tiny', init_cfg=init_cfg)


def test_loading_is_logged_with_what_stayed_initialised(tmp_path, caplog):
    path = save_official(tmp_path / 'biformer_tiny_best.pth',
                         official_classifier_state_dict('tiny', fill=0.))
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=path))
    logger = MMLogger.get_instance('test_log', log_file=str(tmp_path / 'log.txt'),
                                   log_level=logging.INFO)
    model.init_weights()
    log = (tmp_path / 'log.txt').read_text()
    assert 'Loaded 257 of 265 tensors of BiFormer' in log
    assert 'left as initialised: out_norms.0.weight' in log
    del logger
