"""Specification of training on one's own data (docs/own_data.md): the configs of
configs/detection/custom/ and configs/segmentation/custom/, copied and pointed at a
dataset by changing the lines of their "Your dataset" block, train from scratch to a real
metric with tools/train.py and evaluate with tools/test.py; every path follows
``data_root`` and every head follows ``classes``. The data are written by the toy
generators with other class names than the toy ones (``--classes``)."""
import ast
import os.path as osp
import re
import sys

import pytest
from mmengine.config import Config

from conftest import REPO_ROOT, TEST, TRAIN, load_tool, run

DET_CUSTOM = osp.join(REPO_ROOT, 'configs', 'detection', 'custom')
SEG_CUSTOM = osp.join(REPO_ROOT, 'configs', 'segmentation', 'custom')
DET_CLASSES = ('coin', 'bolt', 'nut')
SEG_CLASSES = ('background', 'coin', 'bolt', 'nut')
# The shipped dataloaders load with worker processes; the tiny test data load faster in
# the main process.
MAIN_PROCESS_LOADING = [f'{split}_dataloader.{key}'
                        for split in ('train', 'val', 'test')
                        for key in ('num_workers=0', 'persistent_workers=False')]


def copy_config(src: str, dest_dir: str, **lines: str) -> str:
    """Copy the config ``src`` into ``dest_dir``, replacing the assignment of each name
    in ``lines`` (exactly one line each, ``name = value``) by ``name = lines[name]``, as
    a user edits a copy; returns the copy's path."""
    with open(src) as f:
        text = f.read()
    for name, value in lines.items():
        text, count = re.subn(rf'^{name} = .*$', f'{name} = {value}', text, flags=re.M)
        assert count == 1, f'{src} assigns {name} {count} times, expected once'
    dest = osp.join(dest_dir, osp.basename(src))
    with open(dest, 'w') as f:
        f.write(text)
    return dest


def base_of(config: str) -> str:
    """The shipped config's ``_base_`` for a copy elsewhere, as docs/own_data.md says to
    set it: our configs by absolute path, a ``./`` sibling (the copied own-data config
    that a copied ``*_scratch.py`` inherits) as it is."""
    with open(config) as f:
        bases = ast.literal_eval(re.search(r'^_base_ = (.*)$', f.read(), flags=re.M).group(1))

    def located(base: str) -> str:
        return base if base.startswith('./') else osp.normpath(
            osp.join(osp.dirname(config), base))

    return repr(located(bases) if isinstance(bases, str) else [located(b) for b in bases])


@pytest.mark.classic
def test_generators_write_the_classes_and_sizes_asked_for(tmp_path):
    """The stand-in datasets of docs/own_data.md: the COCO categories carry the given
    names and image sizes vary in the given range; the label maps hold the values of
    the given classes only (0, the background, to len(classes) - 1)."""
    import json

    import cv2
    import numpy as np
    ann_files = load_tool('dataset/make_toy_coco.py').make_toy_coco(
        str(tmp_path / 'coco'), num_train=3, num_val=1, size=(64, 96), classes=DET_CLASSES)
    with open(ann_files['train']) as f:
        coco = json.load(f)
    assert [c['name'] for c in coco['categories']] == list(DET_CLASSES)
    assert {c['category_id'] for c in coco['annotations']} <= {1, 2, 3}
    sides = [side for image in coco['images'] for side in (image['width'], image['height'])]
    assert all(64 <= side <= 96 for side in sides) and len(set(sides)) > 1
    for image in coco['images']:
        shape = cv2.imread(str(tmp_path / 'coco' / 'train' / image['file_name'])).shape
        assert shape[:2] == (image['height'], image['width'])

    root = load_tool('dataset/make_toy_ade20k.py').make_toy_ade20k(
        str(tmp_path / 'seg'), num_train=3, num_val=1, classes=SEG_CLASSES)
    values = set()
    for path in (root / 'annotations' / 'training').glob('*.png'):
        values |= set(np.unique(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)).tolist())
    assert 0 in values and values <= set(range(len(SEG_CLASSES))) and len(values) > 2


@pytest.mark.classic
@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_paths_and_heads_follow_data_root_and_classes_of_the_copy(tmp_path, task):
    """Changing data_root and classes in a copy moves every path and every head."""
    src = osp.join(DET_CUSTOM if task == 'detection' else SEG_CUSTOM,
                   'maskrcnn_biformer_t_custom.py' if task == 'detection'
                   else 'fpn_biformer_t_custom.py')
    root = str(tmp_path / 'elsewhere') + '/'
    cfg = Config.fromfile(copy_config(src, str(tmp_path), _base_=base_of(src),
                                      data_root=repr(root), classes="('washer', 'screw')"))
    for split in ('train', 'val', 'test'):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert dataset.data_root == root
        assert dataset.metainfo == dict(classes=('washer', 'screw'))
    if task == 'detection':
        assert cfg.val_evaluator.ann_file == root + 'annotations/instances_val.json'
        assert cfg.test_evaluator.ann_file == cfg.val_evaluator.ann_file
        heads = cfg.model.roi_head.bbox_head, cfg.model.roi_head.mask_head
    else:
        heads = cfg.model.decode_head,
    assert [head.num_classes for head in heads] == [2] * len(heads)


@pytest.mark.classic
def test_a_child_config_that_sets_only_data_root_moves_nothing_and_is_warned(
        tmp_path, monkeypatch):
    """Why the configs say to copy them: mmengine builds the dataloaders from data_root
    when it reads the file that defines them, so a child's data_root comes too late; the
    dataset check says so."""
    from biformer_mm.engine import dataset_check
    child = tmp_path / 'child.py'
    child.write_text(f"_base_ = {osp.join(DET_CUSTOM, 'maskrcnn_biformer_t_custom.py')!r}\n"
                     "data_root = 'data/elsewhere/'\n")
    cfg = Config.fromfile(str(child))
    assert cfg.data_root == 'data/elsewhere/'
    assert cfg.train_dataloader.dataset.data_root == 'data/my_coco/'
    assert cfg.val_evaluator.ann_file.startswith('data/my_coco/')
    logged = []
    monkeypatch.setattr(dataset_check, 'print_log',
                        lambda msg, logger=None, level=0: logged.append(msg))
    dataset_check.warn_of_unused_data_root(cfg, str(child), ['train_dataloader'])
    assert f"data_root='data/elsewhere/' of {child} is the data_root of none of its " \
        'datasets (data/my_coco)' in logged[0]


def test_detection_from_scratch_trains_to_box_and_mask_map_and_tests(tmp_path):
    """One epoch (3 iterations) of the from-scratch Mask R-CNN on a 3-class COCO-format
    dataset, then tools/test.py on its checkpoint."""
    data_root = tmp_path / 'my_coco'
    load_tool('dataset/make_toy_coco.py').make_toy_coco(
        str(data_root), num_train=6, num_val=2, size=(128, 160), classes=DET_CLASSES)
    copy_config(osp.join(DET_CUSTOM, 'maskrcnn_biformer_t_custom.py'), str(tmp_path),
                _base_=base_of(osp.join(DET_CUSTOM, 'maskrcnn_biformer_t_custom.py')),
                data_root=repr(f'{data_root}/'), image_scale='(128, 128)')
    scratch = osp.join(DET_CUSTOM, 'maskrcnn_biformer_t_custom_scratch.py')
    config = copy_config(scratch, str(tmp_path), _base_=base_of(scratch), max_epochs='1',
                         milestones='[]', warmup_iters='2')
    work_dir = str(tmp_path / 'work_dir')
    # After 3 iterations no score may reach the default threshold (0.05): keep every
    # detection, so that the metric is computed.
    keep_all = ['model.test_cfg.rcnn.score_thr=0.']
    output = run([sys.executable, TRAIN, config, '--work-dir', work_dir, '--cfg-options',
                  'default_hooks.logger.interval=1', *keep_all, *MAIN_PROCESS_LOADING],
                 cwd=str(tmp_path))
    assert 'Epoch(train) [1][3/3]' in output
    assert re.search(r'coco/bbox_mAP: \d', output) and re.search(r'coco/segm_mAP: \d', output)

    output = run([sys.executable, TEST, config, osp.join(work_dir, 'epoch_1.pth'),
                  '--work-dir', work_dir, '--cfg-options', *keep_all, *MAIN_PROCESS_LOADING],
                 cwd=str(tmp_path))
    assert re.search(r'coco/bbox_mAP: \d', output) and re.search(r'coco/segm_mAP: \d', output)


def test_segmentation_from_scratch_trains_to_miou_and_tests(tmp_path):
    """4 iterations of the from-scratch Semantic FPN on a background + 3-class dataset in
    the ADE20K folder layout, then tools/test.py on its checkpoint."""
    data_root = tmp_path / 'my_seg'
    load_tool('dataset/make_toy_ade20k.py').make_toy_ade20k(
        str(data_root), num_train=4, num_val=2, classes=SEG_CLASSES)
    copy_config(osp.join(SEG_CUSTOM, 'fpn_biformer_t_custom.py'), str(tmp_path),
                _base_=base_of(osp.join(SEG_CUSTOM, 'fpn_biformer_t_custom.py')),
                data_root=repr(str(data_root)), crop_size='(128, 128)',
                image_scale='(512, 128)')
    scratch = osp.join(SEG_CUSTOM, 'fpn_biformer_t_custom_scratch.py')
    config = copy_config(scratch, str(tmp_path), _base_=base_of(scratch), max_iters='4',
                         warmup_iters='2')
    work_dir = str(tmp_path / 'work_dir')
    output = run([sys.executable, TRAIN, config, '--work-dir', work_dir, '--cfg-options',
                  'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
                  *MAIN_PROCESS_LOADING], cwd=str(tmp_path))
    assert 'Iter(train) [4/4]' in output
    assert re.search(r'mIoU: \d', output)
    # The per-class table names the dataset's classes, each with its IoU: a number, or
    # nan for a class that neither the two validation images nor the 4-iteration model's
    # predictions contain (which one that is varies with CPU rounding between runs).
    for name in SEG_CLASSES:
        assert re.search(rf'\|\s+{name}\s+\|\s+(\d|nan)', output), name

    output = run([sys.executable, TEST, config, osp.join(work_dir, 'iter_4.pth'),
                  '--work-dir', work_dir, '--cfg-options', *MAIN_PROCESS_LOADING],
                 cwd=str(tmp_path))
    assert re.search(r'mIoU: \d', output)
