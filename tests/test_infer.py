"""Specification of tools/infer.py: a detector or segmentor trained by tools/train.py runs
on images of sizes it never saw, through mmdet's/mmseg's inferencers, and every image
gets a drawing and its predictions."""
import json
import os
import os.path as osp

import cv2
import mmcv
import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger

from conftest import DET_TOY, SEG_TOY, load_tool

infer = load_tool('infer.py')
SIZES = {'wide': (181, 263), 'tall': (300, 170)}  # (H, W); training used 256x256 / 128x128


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> str:
    """A folder of odd-sized images with shapes on them (and a file that is no image)."""
    folder = tmp_path_factory.mktemp('my_images')
    for name, (height, width) in SIZES.items():
        image = np.full((height, width, 3), 70, dtype=np.uint8)
        cv2.circle(image, (width // 3, height // 2), min(height, width) // 5, (40, 200, 230), -1)
        cv2.rectangle(image, (width // 2, height // 8), (width - 10, height // 2),
                      (200, 60, 60), -1)
        cv2.imwrite(str(folder / f'{name}.png'), image)
    (folder / 'notes.txt').write_text('not an image')
    return str(folder)


def test_detector_draws_and_writes_mmdet_predictions(images, trained_det, tmp_path):
    out = str(tmp_path / 'out')
    written = infer.main([images, DET_TOY, osp.join(trained_det['work_dir'], 'epoch_1.pth'),
                          '--out-dir', out, '--device', 'cpu',
                          '--score-thr', '0'])
    assert [osp.basename(f['image']) for f in written] == ['tall.png', 'wide.png']
    for files, (height, width) in zip(written, (SIZES['tall'], SIZES['wide'])):
        assert mmcv.imread(files['vis']).shape == (height, width, 3)
        with open(files['pred']) as f:
            pred = json.load(f)
        assert files['pred'] == osp.join(out, 'preds', osp.basename(files['image'])[:-4] +
                                         '.json')
        assert len(pred['labels']) == len(pred['scores']) == len(pred['bboxes']) == \
            len(pred['masks']) > 0
        boxes = np.array(pred['bboxes'])
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and \
            (boxes[:, 3] <= height).all(), 'boxes are in the pixels of the input image'
        assert pred['masks'][0]['size'] == [height, width]


def test_segmentor_draws_and_writes_the_class_map(images, trained_seg, tmp_path):
    out = str(tmp_path / 'out')
    written = infer.main([osp.join(images, 'w*.png'), osp.join(images, 'tall.png'),
                          SEG_TOY, osp.join(trained_seg, 'iter_1.pth'),
                          '--out-dir', out, '--device', 'cpu'])
    assert [osp.basename(f['image']) for f in written] == ['wide.png', 'tall.png']
    checkpoint = torch.load(osp.join(trained_seg, 'iter_1.pth'), weights_only=True)
    classes = checkpoint['meta']['dataset_meta']['classes']
    for files, (height, width) in zip(written, (SIZES['wide'], SIZES['tall'])):
        assert mmcv.imread(files['vis']).shape == (height, width, 3)
        label_map = mmcv.imread(files['label_map'], flag='unchanged')
        assert label_map.shape == (height, width)
        with open(files['pred']) as f:
            pred = json.load(f)
        assert pred['label_map'] == osp.basename(files['label_map'])
        assert (pred['height'], pred['width']) == (height, width)
        assert sum(pred['pixels'].values()) == height * width
        counts = np.bincount(label_map.ravel(), minlength=len(classes))
        assert pred['pixels'] == {classes[i]: int(n) for i, n in enumerate(counts) if n}


def test_images_are_files_folders_or_globs(images, tmp_path):
    tall, wide = osp.join(images, 'tall.png'), osp.join(images, 'wide.png')
    assert infer.list_images([images]) == [tall, wide]
    assert infer.list_images([osp.join(images, '*'), tall]) == [tall, wide]
    with pytest.raises(FileNotFoundError, match='names no image'):
        infer.list_images([osp.join(images, 'notes.txt')])
    with pytest.raises(FileNotFoundError, match='names no image'):
        infer.list_images([str(tmp_path / 'missing' / '*.jpg')])
    os.makedirs(tmp_path / 'other')
    cv2.imwrite(str(tmp_path / 'other' / 'tall.jpg'), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="share the names \\['tall'\\]"):
        infer.list_images([images, str(tmp_path / 'other')])


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_a_checkpoint_without_class_names_takes_those_of_the_config(
        task, trained_checkpoints, images, tmp_path):
    """mmdet and mmseg would name COCO's or Cityscapes' classes for a bare state dict."""
    from biformer_mm.engine.inference import build_inferencer
    trained = torch.load(trained_checkpoints[task], weights_only=True)
    bare = str(tmp_path / 'bare.pth')
    torch.save(trained['state_dict'], bare)
    config = DET_TOY if task == 'det' else SEG_TOY
    log = tmp_path / 'log.txt'
    logger = MMLogger.get_instance(f'bare_{task}', log_file=str(log))
    inferencer = build_inferencer(config, bare, device='cpu')
    classes = trained['meta']['dataset_meta']['classes']
    assert list(inferencer.model.dataset_meta['classes']) == list(classes)
    assert inferencer.visualizer.dataset_meta is inferencer.model.dataset_meta
    assert f'{bare} saves no class names' in log.read_text()
    del logger
    if task == 'seg':
        written = infer.main([osp.join(images, 'tall.png'), config, bare,
                              '--out-dir', str(tmp_path / 'out'), '--device', 'cpu'])
        with open(written[0]['pred']) as f:
            assert set(json.load(f)['pixels']) <= set(classes)
    saved = build_inferencer(config, trained_checkpoints[task], device='cpu')
    assert list(saved.model.dataset_meta['classes']) == list(classes)
