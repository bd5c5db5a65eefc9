"""Specification: tools/train.py and tools/test.py check, before building the Runner, that
the config's dataset is there; if it is not, one message (no traceback) names every
missing path, the variable that moves the data root, the standard layout and the command
that trains on the built-in toy data instead. tools/train.py checks the backbone's
ImageNet checkpoint the same way."""
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from biformer_mm.engine import DatasetNotFoundError, cli
from conftest import DET_CONFIG, REPO_ROOT, SEG_CONFIG, make_layout

pytestmark = pytest.mark.classic

DESIGN_CARD_CONFIG = osp.join('configs', 'detection', 'maskrcnn_biformer_s.py')


def test_design_card_command_without_coco_prints_where_and_how_without_a_traceback(
        tmp_path):
    """``python tools/train.py configs/detection/maskrcnn_biformer_s.py`` on a machine
    without COCO."""
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'),
         osp.join(REPO_ROOT, DESIGN_CARD_CONFIG)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != 'COCO_ROOT'},
             'PYTHONPATH': REPO_ROOT})
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    message = proc.stderr
    assert 'DatasetNotFoundError' in message
    for missing in ('data/coco/annotations/instances_train2017.json', 'data/coco/train2017',
                    'data/coco/annotations/instances_val2017.json', 'data/coco/val2017'):
        assert f'missing: {missing}' in message
    assert str(tmp_path) in message, 'relative paths are explained'
    assert 'COCO_ROOT=' in message
    assert 'data/coco/annotations/instances_train2017.json' in message.split('layout')[-1]
    assert 'python tools/dataset/make_toy_coco.py' in message
    assert 'tools/train.py' in message and \
        '--overlay configs/detection/toy/maskrcnn_toy_coco.py' in message


def test_coco_root_that_lacks_the_layout_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv('COCO_ROOT', f'{tmp_path}/coco/')
    args = cli.train_parser().parse_args([DET_CONFIG, '--work-dir', str(tmp_path / 'w')])
    with pytest.raises(DatasetNotFoundError) as error:
        cli.train_config(args)
    assert f'missing: {tmp_path}/coco/annotations/instances_train2017.json' in \
        str(error.value)


def test_a_complete_layout_passes_and_only_what_is_missing_is_named(tmp_path, coco_layout):
    root = coco_layout.rstrip('/')
    args = cli.train_parser().parse_args([DET_CONFIG, '--work-dir', str(tmp_path / 'w'),
                                          '--cfg-options', 'model.backbone.init_cfg=None'])
    cli.train_config(args)
    os.rmdir(osp.join(root, 'val2017'))
    with pytest.raises(DatasetNotFoundError) as error:
        cli.train_config(args)
    assert [line for line in str(error.value).splitlines() if 'missing:' in line] == \
        [f'  missing: {root}/val2017/  (val_dataloader.dataset.data_prefix.img)']


def test_design_card_command_with_coco_but_no_imagenet_checkpoint_names_the_download(
        tmp_path, coco_layout, monkeypatch):
    """The same command where COCO is in place but ``checkpoints/`` is empty: one message,
    before the Runner is built, naming the path, the download and ``init_cfg=None``."""
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'),
         osp.join(REPO_ROOT, DESIGN_CARD_CONFIG)],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
        env={**os.environ, 'PYTHONPATH': REPO_ROOT})
    assert proc.returncode == 2
    assert 'Traceback' not in proc.stderr
    message = proc.stderr
    assert f'Checkpoint {tmp_path}/checkpoints/biformer_small_best.pth does not exist' \
        in message
    assert 'https://github.com/rayleizhu/BiFormer' in message
    assert 'model.backbone.init_cfg=None' in message
    assert not (tmp_path / 'work_dirs').exists(), 'nothing ran before the check'

    (tmp_path / 'checkpoints').mkdir()
    torch.save({}, tmp_path / 'checkpoints' / 'biformer_small_best.pth')
    args = cli.train_parser().parse_args([osp.join(REPO_ROOT, DESIGN_CARD_CONFIG)])
    monkeypatch.chdir(tmp_path)
    cli.train_config(args)  # present: the check passes (the loading checks the contents)


def test_test_py_checks_the_test_data(tmp_path, monkeypatch):
    checkpoint = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': {}}, checkpoint)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('COCO_ROOT', raising=False)
    args = cli.test_parser().parse_args([DET_CONFIG, str(checkpoint)])
    with pytest.raises(DatasetNotFoundError, match='instances_val2017.json'):
        cli.test_config(args)


def test_segmentation_names_ade20k_root_its_layout_and_the_toy_overlay(tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('ADE20K_ROOT', raising=False)
    args = cli.train_parser().parse_args([SEG_CONFIG])
    with pytest.raises(DatasetNotFoundError) as error:
        cli.train_config(args)
    message = str(error.value)
    assert 'missing: data/ade/ADEChallengeData2016/images/training' in message
    assert 'ADE20K_ROOT=' in message
    assert 'data/ade/ADEChallengeData2016/annotations/validation/*.png' in message
    assert 'python tools/dataset/make_toy_ade20k.py' in message
    assert '--overlay configs/segmentation/toy/fpn_toy_ade20k.py' in message
    monkeypatch.setenv('ADE20K_ROOT', make_layout(str(tmp_path / 'ade'), 'ADE20KDataset'))
    cli.train_config(cli.train_parser().parse_args(
        [SEG_CONFIG, '--cfg-options', 'model.backbone.init_cfg=None']))
