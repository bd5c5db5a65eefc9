"""The segmentation configs, the toy ADE20K data and the train/test tools on them.

Everything runs on the CPU: configs are built with BN heads (the documented override)
and without the ImageNet checkpoint.
"""
import filecmp
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from torch import nn

import biformer_mm  # noqa: F401  (registers BiFormer)
from biformer_mm.engine import load_config
from conftest import REPO_ROOT, load_tool

REPO = Path(REPO_ROOT)
SEG_CONFIGS = REPO / 'configs' / 'segmentation'
CONFIGS = sorted(p.name for p in SEG_CONFIGS.glob('*_biformer_*.py'))
TOY_CONFIGS = {
    'fpn': SEG_CONFIGS / 'toy' / 'fpn_biformer_t_toy_ade20k.py',
    'upernet': SEG_CONFIGS / 'toy' / 'upernet_biformer_t_toy_ade20k.py',
}
MAKE_TOY_ADE20K = REPO / 'tools' / 'dataset' / 'make_toy_ade20k.py'
# ADE20K label values drawn by make_toy_ade20k.py (0 is "other").
TOY_LABELS = {2, 3, 5, 7, 10, 13, 21}


def head_of(config: str) -> str:
    return config.split('_')[0]


def bn_options(config: str) -> Dict[str, str]:
    """The documented --cfg-options that replace SyncBN by BN in the backbone and the
    heads."""
    options = {'model.backbone.norm_cfg.type': 'BN', 'model.decode_head.norm_cfg.type': 'BN'}
    if head_of(config) == 'upernet':
        options['model.auxiliary_head.norm_cfg.type'] = 'BN'
    return options


def load(config: str, **options) -> Config:
    cfg = Config.fromfile(SEG_CONFIGS / config)
    cfg.merge_from_dict(options)
    return cfg


@pytest.fixture(autouse=True)
def mmseg_scope() -> None:
    """Build from mmseg's registries, as the configs' default_scope does."""
    init_default_scope('mmseg')


def build_segmentor(cfg: Config) -> nn.Module:
    return MODELS.build(cfg.model)


def make_batch(shapes: List[tuple], num_classes: int = 150) -> dict:
    """A data batch as the dataloader gives it: uint8 BGR images and label maps."""
    generator = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for h, w in shapes:
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                                    generator=generator))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, h, w), generator=generator))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def run_tool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a command line tool with this interpreter; fail with its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.fixture(scope='module')
def toy_ade20k(tmp_path_factory) -> Path:
    """A small toy dataset: 6 training and 2 validation images."""
    root = tmp_path_factory.mktemp('toy_ade') / 'ADEChallengeData2016'
    return load_tool('dataset/make_toy_ade20k.py').make_toy_ade20k(
        str(root), num_train=6, num_val=2, seed=0)


def toy_data_options(root: Path) -> Dict[str, str]:
    return {f'{split}_dataloader.dataset.data_root': str(root)
            for split in ('train', 'val', 'test')}


@pytest.mark.classic
@pytest.mark.parametrize('config', CONFIGS)
def test_config_trains_a_step_and_infers_whole_and_sliding_on_odd_sizes(config):
    cfg = load(config, **bn_options(config), **{
        'model.backbone.init_cfg': None,
        'model.data_preprocessor.size': (64, 64)
    })
    model = build_segmentor(cfg)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())

    model.train()
    data = model.data_preprocessor(make_batch([(48, 64), (64, 56)]), True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)

    # A size that is a multiple of neither 32 nor the 8x8 windows; sliding crops that
    # overlap in width and are higher than the image.
    model.eval()
    for test_cfg in (dict(mode='whole'),
                     dict(mode='slide', crop_size=(160, 128), stride=(85, 85))):
        model.test_cfg = Config(test_cfg)
        with torch.no_grad():
            [result] = model.test_step(make_batch([(157, 211)]))
        assert result.pred_sem_seg.shape == (157, 211)
        assert result.seg_logits.data.shape == (150, 157, 211)


@pytest.mark.classic
@pytest.mark.parametrize('config', CONFIGS)
def test_config_reads_ade20k_and_the_imagenet_weights(config):
    """The training recipe itself is checked against the official one in
    test_recipes.py."""
    cfg = load(config)
    size = config[-4]
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports.imports == ['biformer_mm', 'biformer_mm.engine']
    assert cfg.train_dataloader.dataset.data_root == 'data/ade/ADEChallengeData2016'
    backbone = cfg.model.backbone
    assert backbone.type == 'BiFormer'
    assert backbone.arch == {'t': 'tiny', 's': 'small', 'b': 'base'}[size]
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'checkpoints/biformer_{backbone.arch}_best.pth')
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.model.decode_head.norm_cfg.type == 'SyncBN'
    assert cfg.model.data_preprocessor.size == (512, 512)
    if head_of(config) == 'upernet':
        assert cfg.model.auxiliary_head.in_index == 2
        assert cfg.model.auxiliary_head.norm_cfg.type == 'SyncBN'


def test_fpn_test_images_keep_their_ratio_and_become_a_multiple_of_32(toy_ade20k):
    cfg = load('fpn_biformer_t.py', **{'test_dataloader.dataset.data_root': str(toy_ade20k)})
    sample = DATASETS.build(cfg.test_dataloader.dataset)[0]
    h, w = sample['inputs'].shape[1:]
    ori_h, ori_w = sample['data_samples'].ori_shape
    assert h % 32 == 0 and w % 32 == 0
    assert abs(h / w - ori_h / ori_w) < 0.05
    assert sample['data_samples'].gt_sem_seg.shape == (ori_h, ori_w)


@pytest.mark.classic
def test_data_root_follows_the_ade20k_root_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv('ADE20K_ROOT', str(tmp_path))
    cfg = load('upernet_biformer_t.py')
    for split in ('train', 'val', 'test'):
        assert cfg[f'{split}_dataloader'].dataset.data_root == str(tmp_path)


@pytest.mark.classic
def test_missing_imagenet_checkpoint_names_the_expected_file(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    model = build_segmentor(load('fpn_biformer_t.py', **bn_options('fpn_biformer_t.py')))
    with pytest.raises(FileNotFoundError, match='checkpoints/biformer_tiny_best.pth'):
        model.init_weights()


def test_config_outside_the_repo_inherits_ours_and_overrides_fields(tmp_path):
    config = tmp_path / 'upernet_biformer_s_cityscapes.py'
    config.write_text(
        f"_base_ = ['{SEG_CONFIGS / 'upernet_biformer_s.py'}']\n"
        "model = dict(decode_head=dict(num_classes=19), auxiliary_head=dict(num_classes=19))\n"
        "train_dataloader = dict(batch_size=4)\n"
        "train_cfg = dict(max_iters=80000)\n")
    cfg = Config.fromfile(config)
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.train_cfg.max_iters == 80000
    assert cfg.train_cfg.val_interval == 16000
    assert cfg.model.backbone.arch == 'small'
    assert cfg.model.decode_head.in_channels == [64, 128, 256, 512]
    cfg.merge_from_dict({**bn_options(config.name), 'model.backbone.init_cfg': None})
    model = build_segmentor(cfg)
    assert model.decode_head.conv_seg.out_channels == 19
    assert model.auxiliary_head.conv_seg.out_channels == 19


def test_toy_dataset_has_the_ade20k_layout_and_loads_with_reduce_zero_label(toy_ade20k):
    for split, prefix, count in (('training', 'train', 6), ('validation', 'val', 2)):
        images = sorted(p.stem for p in (toy_ade20k / 'images' / split).iterdir())
        labels = sorted(p.stem for p in (toy_ade20k / 'annotations' / split).iterdir())
        assert images == labels == [f'ADE_{prefix}_{i:08d}' for i in range(1, count + 1)]

        dataset = ADE20KDataset(
            data_root=str(toy_ade20k),
            data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', reduce_zero_label=True)])
        assert len(dataset) == count
        seen = set()
        for index in range(count):
            sample = dataset[index]
            assert sample['img'].shape[:2] == sample['gt_seg_map'].shape
            seen |= set(np.unique(sample['gt_seg_map']).tolist())
        # 0 ("other") becomes the ignore index, class v becomes v - 1.
        assert seen <= {255} | {v - 1 for v in TOY_LABELS}
        assert len(seen - {255}) >= 3


def test_toy_dataset_refuses_a_folder_with_files_it_would_not_write(tmp_path):
    """mmseg reads every file of the folders: a smaller second run must not leave the
    first run's extra images in the dataset. The same files again are fine."""
    make = load_tool('dataset/make_toy_ade20k.py').make_toy_ade20k
    make(str(tmp_path), num_train=3, num_val=1)
    make(str(tmp_path), num_train=3, num_val=1)
    with pytest.raises(FileExistsError, match='holds 2 files this run would not write'):
        make(str(tmp_path), num_train=2, num_val=1)


def test_toy_dataset_command_line_is_deterministic_for_a_seed(toy_ade20k, tmp_path):
    again = tmp_path / 'again'
    run_tool(str(MAKE_TOY_ADE20K), '--out', str(again), '--num-train', '6', '--num-val',
             '2', '--seed', '0', cwd=REPO)
    for sub in ('images/training', 'images/validation', 'annotations/training',
                'annotations/validation'):
        names = sorted(os.listdir(toy_ade20k / sub))
        assert names and sorted(os.listdir(again / sub)) == names
        _, mismatch, errors = filecmp.cmpfiles(toy_ade20k / sub, again / sub, names,
                                               shallow=False)
        assert not mismatch and not errors


def test_toy_configs_are_the_t_configs_on_the_toy_data_with_bn_heads_and_fp32(toy_ade20k):
    assert sorted(p.name for p in (SEG_CONFIGS / 'toy').glob('*.py')) == sorted(
        p.name for p in TOY_CONFIGS.values())
    cfg = load_config(str(TOY_CONFIGS['upernet']), toy_data_options(toy_ade20k))
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    assert cfg.model.backbone.init_cfg is None
    assert cfg.model.backbone.arch == 'tiny'
    assert cfg.model.backbone.drop_path_rate == \
        Config.fromfile(str(SEG_CONFIGS / 'upernet_biformer_t.py')).model.backbone.drop_path_rate
    assert cfg.model.data_preprocessor.size == (128, 128)
    assert cfg.train_cfg.max_iters == 500
    model = build_segmentor(cfg)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    assert isinstance(model.auxiliary_head.convs[0].bn, nn.BatchNorm2d)
    # RandomCrop gives at most 128x128 (less where the random resize shrank the image);
    # the data preprocessor pads every batch to the crop size.
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    samples = [dataset[i] for i in range(len(dataset))]
    assert all(max(s['inputs'].shape[1:]) <= 128 for s in samples)
    batch = model.data_preprocessor(pseudo_collate(samples), training=True)
    assert batch['inputs'].shape[2:] == (128, 128)

    cfg = load_config(str(TOY_CONFIGS['fpn']))
    assert cfg.train_dataloader.dataset.data_root == 'data/toy_ade/ADEChallengeData2016'
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    assert 'auxiliary_head' not in cfg.model


@pytest.mark.classic
def test_train_py_trains_resumes_and_test_py_reports_miou_on_toy_data(toy_ade20k, tmp_path):
    config = str(TOY_CONFIGS['fpn'])
    common = ['--work-dir', str(tmp_path)]
    data = [f'{k}={v}' for k, v in toy_data_options(toy_ade20k).items()]
    # Validation is left to tools/test.py.
    schedule = ['train_cfg.val_begin=100', 'default_hooks.checkpoint.interval=1']
    run_tool('tools/train.py', config, *common, '--cfg-options', 'train_cfg.max_iters=1',
             *schedule, *data, cwd=REPO)
    assert (tmp_path / 'iter_1.pth').is_file()

    result = run_tool('tools/train.py', config, *common, '--resume', '--cfg-options',
                      'train_cfg.max_iters=2', *schedule, *data, cwd=REPO)
    assert 'resumed epoch: 0, iter: 1' in result.stdout + result.stderr
    checkpoint = tmp_path / 'iter_2.pth'
    assert checkpoint.is_file()

    result = run_tool('tools/test.py', config, str(checkpoint), *common, '--show-dir',
                      str(tmp_path / 'vis'), '--cfg-options', *data, cwd=REPO)
    assert re.search(r'Iter\(test\).*aAcc: [\d.]+\s+mIoU: [\d.]+',
                     result.stdout + result.stderr)
    # --show-dir draws every validation image (2), not mmseg's every 50th.
    assert len(list((tmp_path / 'vis').rglob('*.png'))) == 2
