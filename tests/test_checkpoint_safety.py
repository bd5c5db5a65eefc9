"""Specification: no checkpoint load runs code from the file, through any entry point,
while every checkpoint our tools write still loads; ``trusted://`` is the explicit
opt-in for a file the user trusts."""
import argparse
import fractions
import io
import os.path as osp
import pickle
import re
import shutil
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest
import torch
from mmengine import fileio
from mmengine.runner import CheckpointLoader, load_checkpoint
from mmengine.utils import digit_version

import biformer_mm.engine  # noqa: F401  (the allow-list our configs import)
from biformer_mm import BiFormer
from biformer_mm.engine import cli
from biformer_mm.engine.inference import build_inferencer
from biformer_mm.safe_load import (WEIGHTS_ONLY_PREFIX, UnsafeCheckpointError,
                                   read_checkpoint, training_checkpoint_globals)
from conftest import REPO_ROOT, Payload, load_tool, model_state_dict, save_scan_bypass

pytestmark = pytest.mark.classic

TORCH_LOADS_WEIGHTS_ONLY = digit_version(torch.__version__) >= digit_version('2.6.0')
"""torch.load's default, which mmengine's own loaders use."""
needs_weights_only_default = pytest.mark.skipif(
    not TORCH_LOADS_WEIGHTS_ONLY,
    reason=f'torch {torch.__version__} loads in full by default: mmengine\'s own loaders '
    f'(mmdet\'s and mmseg\'s tools) are unprotected there, as docs/checkpoints.md says')

CONFIG = osp.join(REPO_ROOT, 'configs', 'detection', 'maskrcnn_biformer_t.py')
TOY_CONFIG = osp.join(REPO_ROOT, 'configs', 'detection', 'toy',
                      'maskrcnn_biformer_t_toy_coco.py')


@pytest.fixture
def payload_checkpoint(tmp_path):
    """A checkpoint that looks like ours (weights, meta) with a payload in its meta."""
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1, 'iter': 2, 'note': Payload(marker)},
                'state_dict': BiFormer(arch='tiny').state_dict()}, path)
    return str(path), marker


def run_tool(*args, cwd):
    env = dict(__import__('os').environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@needs_weights_only_default
def test_mmengine_loaders_refuse_the_payload(payload_checkpoint):
    """What mmdet's/mmseg's own tools (mim test mmdet/mmseg) and the Runner call."""
    path, marker = payload_checkpoint
    with pytest.raises(Exception, match='Weights only load failed'):
        CheckpointLoader.load_checkpoint(path)
    with pytest.raises(Exception, match='Weights only load failed'):
        load_checkpoint(BiFormer(arch='tiny'), path)
    assert not marker.exists()


def test_weights_only_scheme_refuses_the_payload_on_every_torch(payload_checkpoint):
    """What tools/train.py and tools/test.py hand the Runner, and what configs may use
    for mmdet's and mmseg's own tools on torch < 2.6."""
    path, marker = payload_checkpoint
    with pytest.raises(UnsafeCheckpointError, match='builtins.exec'):
        CheckpointLoader.load_checkpoint(WEIGHTS_ONLY_PREFIX + path)
    with pytest.raises(UnsafeCheckpointError, match='builtins.exec'):
        load_checkpoint(BiFormer(arch='tiny'), WEIGHTS_ONLY_PREFIX + path)
    assert not marker.exists()


def test_tools_hand_the_runner_weights_only_paths(tmp_path, coco_layout,
                                                  imagenet_checkpoints):
    checkpoint = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': model_state_dict(CONFIG)}, checkpoint)
    for args in ([CONFIG, '--resume', str(checkpoint)],
                 [CONFIG, '--cfg-options', f'load_from={checkpoint}']):
        cfg = cli.train_config(cli.train_parser().parse_args(args))
        assert cfg.load_from == f'{WEIGHTS_ONLY_PREFIX}{checkpoint}'
    cfg = cli.test_config(cli.test_parser().parse_args([CONFIG, str(checkpoint)]))
    assert cfg.load_from == f'{WEIGHTS_ONLY_PREFIX}{checkpoint}'
    trusted = cli.test_config(cli.test_parser().parse_args([CONFIG, f'trusted://{checkpoint}']))
    assert trusted.load_from == f'trusted://{checkpoint}'


def test_resume_without_a_path_checks_the_latest_checkpoint_of_the_work_dir(
        payload_checkpoint, coco_layout):
    path, marker = payload_checkpoint
    work_dir = osp.dirname(path)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(path)
    args = cli.train_parser().parse_args([CONFIG, '--resume', '--work-dir', work_dir])
    with pytest.raises(UnsafeCheckpointError, match='builtins.exec'):
        cli.train_config(args)
    assert not marker.exists()


def test_pretrained_init_cfg_refuses_the_payload_and_names_the_opt_in(payload_checkpoint):
    path, marker = payload_checkpoint
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(UnsafeCheckpointError) as error:
        model.init_weights()
    assert not marker.exists()
    message = str(error.value)
    assert 'builtins.exec' in message
    assert f'trusted://{path}' in message and 'init_cfg.checkpoint' in message


@pytest.mark.parametrize('tool', ['train', 'test'])
def test_train_resume_and_test_py_refuse_the_payload_before_running(payload_checkpoint,
                                                                    tool, tmp_path):
    path, marker = payload_checkpoint
    if tool == 'train':
        args = ['tools/train.py', TOY_CONFIG, '--resume', path]
    else:
        args = ['tools/test.py', TOY_CONFIG, path]
    proc = run_tool(*args, '--work-dir', str(tmp_path / 'work'), cwd=REPO_ROOT)
    assert proc.returncode != 0
    assert 'UnsafeCheckpointError' in proc.stderr and 'builtins.exec' in proc.stderr
    assert 'trusted://' in proc.stderr
    assert not marker.exists()


def test_load_from_in_the_config_is_checked_too(payload_checkpoint, tmp_path):
    path, marker = payload_checkpoint
    proc = run_tool('tools/train.py', TOY_CONFIG, '--work-dir',
                    str(tmp_path / 'work'), '--cfg-options', f'load_from={path}',
                    cwd=REPO_ROOT)
    assert proc.returncode != 0 and 'UnsafeCheckpointError' in proc.stderr
    assert not marker.exists()


def assert_holds_weights_of(model: BiFormer, source: BiFormer) -> None:
    """Every tensor of ``source`` but the output norms (which loading ignores) arrived."""
    loaded = model.state_dict()
    compared = [k for k in source.state_dict() if not k.startswith('out_norms.')]
    assert compared and all(torch.equal(loaded[k], source.state_dict()[k]) for k in compared)


def test_official_imagenet_files_load_weights_only(tmp_path):
    """The official files pickle argparse.Namespace beside the weights: allowed for
    backbone weights, nothing more."""
    path = tmp_path / 'biformer_tiny_best.pth'
    source = BiFormer(arch='tiny')
    torch.save({'model': source.state_dict(),
                'args': argparse.Namespace(model='biformer_tiny', lr=5e-4)}, path)
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert_holds_weights_of(model, source)


def test_trusted_prefix_loads_a_file_beyond_the_allow_list(tmp_path):
    """A harmless type outside the allow-list is refused, and loads with trusted://
    through the backbone and through mmengine's loader (load_from, --resume,
    tools/test.py)."""
    path = tmp_path / 'custom.pth'
    source = BiFormer(arch='tiny')
    torch.save({'state_dict': source.state_dict(),
                'meta': {'ratio': fractions.Fraction(1, 3)}}, path)
    model = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(UnsafeCheckpointError, match='fractions.Fraction'):
        model.init_weights()
    trusted = BiFormer(arch='tiny', init_cfg=dict(type='Pretrained',
                                                  checkpoint=f'trusted://{path}'))
    trusted.init_weights()
    assert_holds_weights_of(trusted, source)
    loaded = CheckpointLoader.load_checkpoint(f'trusted://{path}')
    assert loaded['meta']['ratio'] == fractions.Fraction(1, 3)


def test_trusted_prefix_of_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        CheckpointLoader.load_checkpoint(f'trusted://{tmp_path}/missing.pth')


def amp_checkpoint(checkpoint: dict) -> dict:
    """``checkpoint`` as AmpOptimWrapper writes it: its state_dict adds the loss
    scaler's state to the optimizer's (static loss scale 512, as our recipes)."""
    if not hasattr(torch.amp, 'GradScaler'):
        pytest.skip(f'torch {torch.__version__} has no CPU GradScaler to write the AMP '
                    f'state with (torch.amp.GradScaler is torch >= 2.3)')
    scaler = torch.amp.GradScaler('cpu', init_scale=512.)
    scaler.scale(torch.ones(1, requires_grad=True))  # initialises the scale tensor
    checkpoint['optimizer']['loss_scaler'] = scaler.state_dict()
    return checkpoint


@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'amp'])
def test_training_checkpoints_of_our_tools_load_weights_only(trained_checkpoints, amp,
                                                             tmp_path):
    """What tools/train.py wrote for detection and segmentation loads weights-only, in a
    fresh process that only imports biformer_mm.engine (as the configs' custom_imports
    do): through the weights-only:// scheme our tools use and, where torch.load is
    weights-only by default (torch >= 2.6), through mmengine's own loader."""
    paths = []
    for task, path in trained_checkpoints.items():
        if amp:
            full = torch.load(path, map_location='cpu', weights_only=False)
            path = str(tmp_path / f'{task}_amp.pth')
            torch.save(amp_checkpoint(full), path)
        paths += [WEIGHTS_ONLY_PREFIX + path] + ([path] if TORCH_LOADS_WEIGHTS_ONLY else [])
    code = ('import sys\n'
            'import biformer_mm.engine\n'
            'from mmengine.runner import CheckpointLoader\n'
            'for path in sys.argv[1:]:\n'
            '    ckpt = CheckpointLoader.load_checkpoint(path)\n'
            "    print(sorted(ckpt), ckpt['optimizer'].get('loss_scaler'))\n")
    proc = subprocess.run([sys.executable, '-c', code, *paths], capture_output=True,
                          text=True, env=dict(__import__('os').environ, PYTHONPATH=REPO_ROOT))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith('[')]
    assert len(lines) == len(paths)
    for line in lines:
        assert line.startswith(
            "['message_hub', 'meta', 'optimizer', 'param_schedulers', 'state_dict']")
        assert ("'scale': 512.0" in line) == amp


def test_the_scan_bypass_fixture_is_a_working_payload(tmp_path):
    """What the tests below refuse really runs code when unpickled in full."""
    marker = tmp_path / 'payload_ran'
    with zipfile.ZipFile(save_scan_bypass(tmp_path / 'probe.pth', marker)) as archive:
        data = next(archive.read(n) for n in archive.namelist() if n.endswith('/data.pkl'))
    pickle.loads(data)
    assert marker.exists()


@pytest.mark.parametrize('kind', ['payload', 'scan-bypass'])
def test_infer_and_visualize_routing_refuse_the_payload_on_every_torch(
        payload_checkpoint, kind, tmp_path, capsys):
    """tools/infer.py and visualize_routing.py CONFIG --checkpoint read the checkpoint
    weights-only (mmdet's inferencer alone unpickles in full before torch 2.6)."""
    path, marker = payload_checkpoint
    if kind == 'scan-bypass':
        path = save_scan_bypass(tmp_path / 'bypass.pth', marker)
    image = str(tmp_path / 'image.png')
    cv2.imwrite(image, np.full((64, 64, 3), 90, dtype=np.uint8))
    infer = load_tool('infer.py')
    with pytest.raises(SystemExit) as error:  # the message, not a traceback
        infer.main([image, CONFIG, path, '--out-dir', str(tmp_path / 'out'),
                    '--device', 'cpu'])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith('infer.py: error: UnsafeCheckpointError: ')
    assert f'trusted://{path}' in message
    assert kind == 'scan-bypass' or 'builtins.exec' in message
    visualize_routing = load_tool('analysis/visualize_routing.py')
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f'trusted://{path}')):
        visualize_routing.main([image, CONFIG, '--checkpoint', path,
                                '--out', str(tmp_path / 'routing.png')])
    assert not marker.exists()


def test_test_py_and_infer_refuse_a_checkpoint_that_does_not_fit_the_model(
        tmp_path, coco_layout, capsys):
    """mmengine's Runner and the inferencers load what fits and run the rest as
    initialised: another head size (another num_classes), a missing or an extra key."""
    state_dict = dict(model_state_dict(CONFIG))
    state_dict['roi_head.bbox_head.fc_cls.weight'] = torch.zeros(4, 1024)
    del state_dict['neck.fpn_convs.0.conv.bias']
    state_dict['backbone.extra_norms.0.weight'] = torch.ones(64)
    path = str(tmp_path / 'other.pth')
    torch.save({'state_dict': state_dict}, path)
    with pytest.raises(SystemExit) as error:
        cli.config_or_exit(cli.test_parser(), cli.test_config, [CONFIG, path])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert 'CheckpointMismatchError' in message and 'Traceback' not in message
    for part in ('1 of the model\'s', 'neck.fpn_convs.0.conv.bias',
                 'roi_head.bbox_head.fc_cls.weight: checkpoint (4, 1024) vs model (81, 1024)',
                 'backbone.extra_norms.0.weight', f'Give a checkpoint trained with {CONFIG}'):
        assert part in message
    image = str(tmp_path / 'image.png')
    cv2.imwrite(image, np.full((64, 64, 3), 90, dtype=np.uint8))
    with pytest.raises(SystemExit) as error:
        load_tool('infer.py').main([image, CONFIG, path, '--out-dir', str(tmp_path / 'out'),
                                    '--device', 'cpu'])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert 'CheckpointMismatchError' in message
    assert 'roi_head.bbox_head.fc_cls.weight: checkpoint (4, 1024)' in message
    assert not osp.exists(tmp_path / 'out' / 'vis' / 'image.png')


@pytest.fixture
def served(tmp_path, monkeypatch):
    """``{url: local file}`` that torch.hub's download serves, with no network; the
    list of the URLs downloaded, in order."""
    files, downloads = {}, []

    def download(url, dst, *args, **kwargs):
        downloads.append(url)
        shutil.copy(files[url], dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    return files, downloads


def test_urls_with_the_same_file_name_are_different_files(served, tmp_path):
    """The official BiFormer links all end in /root/content."""
    files, downloads = served
    urls = ['https://one.example/biformer/root/content',
            'https://two.example/other/root/content']
    for i, url in enumerate(urls):
        files[url] = tmp_path / f'{i}.pth'
        torch.save({'model': {'w': torch.tensor(float(i))}}, files[url])
    assert [read_checkpoint(url)['model']['w'].item() for url in urls] == [0., 1.]
    assert read_checkpoint(urls[0])['model']['w'].item() == 0.
    assert downloads == urls, 'each URL is downloaded once'


def test_test_py_and_infer_take_checkpoint_urls_and_read_them_weights_only(
        served, coco_layout, tmp_path):
    """As mmdet's own tools do, and weights-only: a payload behind a URL is refused by
    the inferencer's load itself (nothing is read before it for a URL)."""
    files, _ = served
    url = 'https://models.example/maskrcnn/root/content'
    files[url] = tmp_path / 'epoch_1.pth'
    meta = {'dataset_meta': {'classes': ('ring', 'square')}}
    torch.save({'state_dict': model_state_dict(CONFIG), 'meta': meta}, files[url])
    cfg = cli.test_config(cli.test_parser().parse_args([CONFIG, url]))
    assert cfg.load_from == WEIGHTS_ONLY_PREFIX + url
    assert CheckpointLoader.load_checkpoint(cfg.load_from)['meta'] == meta
    inferencer = build_inferencer(CONFIG, url, device='cpu')
    assert inferencer.model.dataset_meta['classes'] == ('ring', 'square')

    evil = 'https://models.example/evil/root/content'
    marker = tmp_path / 'payload_ran'
    files[evil] = save_scan_bypass(tmp_path / 'evil.pth', marker)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f'trusted://{evil}')):
        build_inferencer(CONFIG, evil, device='cpu')
    assert not marker.exists()


class MemoryBackend(fileio.BaseStorageBackend):
    """An mmengine file backend (prefix ``memory://``) holding files in a dict."""
    files: dict = {}

    def get(self, filepath):
        return self.files[filepath]

    def get_text(self, filepath, encoding='utf-8'):
        return self.get(filepath).decode(encoding)


def test_test_py_takes_mmengine_backend_paths_and_reads_them_weights_only(coco_layout):
    fileio.register_backend('biformer_test_memory', MemoryBackend, force=True,
                            prefixes='memory')
    buffer = io.BytesIO()
    state_dict = model_state_dict(CONFIG)
    torch.save({'state_dict': state_dict}, buffer)
    MemoryBackend.files['memory://bucket/epoch_1.pth'] = buffer.getvalue()
    cfg = cli.test_config(cli.test_parser().parse_args([CONFIG,
                                                        'memory://bucket/epoch_1.pth']))
    assert cfg.load_from == WEIGHTS_ONLY_PREFIX + 'memory://bucket/epoch_1.pth'
    loaded = CheckpointLoader.load_checkpoint(cfg.load_from)['state_dict']
    assert loaded.keys() == state_dict.keys()
    assert all(torch.equal(loaded[k], state_dict[k]) for k in state_dict)


@pytest.mark.skipif(digit_version(np.__version__) < digit_version('2.0.0'),
                    reason='numpy 1 has no numpy._core.multiarray to pick')
def test_numpy_versions_compare_as_versions(monkeypatch):
    """numpy 10 is newer than 2 (a string comparison says otherwise): its multiarray is
    numpy._core's, without numpy.core, which numpy 2 deprecated."""
    monkeypatch.setattr(np, '__version__', '10.0.0')
    monkeypatch.setattr(np, 'core', None)
    assert (np._core.multiarray._reconstruct, 'numpy.core.multiarray._reconstruct') in \
        training_checkpoint_globals()
