"""Specification: tools/train.py and tools/test.py check, before building the Runner, that
the config's dataset is there and fits the config; if not, one message (no traceback, exit
status 2) names the problem and the fix: every missing path, with the variable that moves
the data root, the standard layout and the command that trains on the built-in toy data
instead (for our COCO and ADE20K configs only); images or label maps missing on disk;
classes that match no category; heads whose num_classes is not the number of classes;
label values beyond num_classes. Images that filter_cfg drops and lr schedules longer
than the run are warnings. tools/train.py checks the backbone's ImageNet checkpoint the
same way. --skip-data-check skips the dataset check."""
import logging
import os
import os.path as osp
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mmengine.fileio import LocalBackend, register_backend

from biformer_mm.engine import DatasetNotFoundError, cli, dataset_check
from conftest import (DET_CONFIG, DET_TOY, REPO_ROOT, SEG_CONFIG, SEG_TOY, make_layout,
                      model_state_dict, write_coco)

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
    assert 'python tools/train.py configs/detection/toy/maskrcnn_biformer_t_toy_coco.py' \
        in message


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
    shutil.rmtree(osp.join(root, 'val2017'))
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


def test_segmentation_names_ade20k_root_its_layout_and_the_toy_config(tmp_path,
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
    assert 'python tools/train.py configs/segmentation/toy/fpn_biformer_t_toy_ade20k.py' \
        in message
    monkeypatch.setenv('ADE20K_ROOT', make_layout(str(tmp_path / 'ade'), 'ADE20KDataset'))
    cli.train_config(cli.train_parser().parse_args(
        [SEG_CONFIG, '--cfg-options', 'model.backbone.init_cfg=None']))


# Your own data: a 3-class COCO-format dataset, as docs/detection.md describes it.
OWN_CLASSES = ['coin', 'bolt', 'nut']


def own_coco(root, train=('a.jpg', 'b.jpg', 'c.jpg'), sizes=None) -> str:
    """A tiny COCO-format dataset under ``root`` (empty image files) and a config for it
    that inherits the toy Mask R-CNN config; returns the config's path."""
    for split, names in (('train', train), ('val', ('v.jpg', ))):
        write_coco(str(root / 'annotations' / f'{split}.json'), list(names), OWN_CLASSES,
                   sizes)
        (root / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / split / name).write_bytes(b'')
    config = root / 'my_maskrcnn.py'
    config.write_text(f"""_base_ = [{DET_TOY!r}]
data_root = '{root}/'
metainfo = dict(classes={tuple(OWN_CLASSES)!r})
train_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=metainfo, ann_file='annotations/train.json',
    data_prefix=dict(img='train/')))
val_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=metainfo, ann_file='annotations/val.json',
    data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
""")
    return str(config)


def stops(capsys, *argv) -> str:
    """Run tools/train.py's logic on ``argv``; assert it ends with status 2 before the
    Runner; return its message."""
    with pytest.raises(SystemExit) as error:
        cli.config_or_exit(cli.train_parser(), cli.train_config, list(argv))
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert 'Traceback' not in message
    return message


@pytest.fixture
def logged(monkeypatch) -> list:
    """The (message, level) of everything the dataset check logs."""
    records = []
    monkeypatch.setattr(dataset_check, 'print_log',
                        lambda msg, logger=None, level=0: records.append((msg, level)))
    return records


def warnings_of(logged: list) -> str:
    return '\n'.join(msg for msg, level in logged if level == logging.WARNING)


def test_own_coco_data_that_fits_passes(tmp_path, logged):
    cfg = cli.train_config(cli.train_parser().parse_args([own_coco(tmp_path)]))
    assert cfg.train_dataloader.dataset.metainfo.classes == tuple(OWN_CLASSES)
    assert 'filter_cfg' not in warnings_of(logged)


def test_num_classes_left_at_80_names_each_head_and_the_fix(tmp_path, capsys):
    config = own_coco(tmp_path)
    message = stops(capsys, config, '--cfg-options', 'model.roi_head.bbox_head.num_classes=80',
                    'model.roi_head.mask_head.num_classes=80')
    assert 'DatasetMismatchError' in message
    assert ('model.roi_head.bbox_head.num_classes=80 and model.roi_head.mask_head.num_classes='
            "80, but train_dataloader.dataset has 3 classes ('coin', 'bolt', 'nut')") in message
    assert ('--cfg-options model.roi_head.bbox_head.num_classes=3 '
            'model.roi_head.mask_head.num_classes=3') in message
    assert 'COCO_ROOT' not in message


def test_images_missing_on_disk_are_counted_and_named(tmp_path, capsys):
    config = own_coco(tmp_path, train=[f'{i}.jpg' for i in range(8)])
    for i in range(1, 8):
        (tmp_path / 'train' / f'{i}.jpg').unlink()
    message = stops(capsys, config)
    assert 'DatasetNotFoundError' in message
    assert f'7 of the 8 images listed in {tmp_path}/annotations/train.json of ' \
        'train_dataloader.dataset are missing' in message
    assert f'{tmp_path}/train/1.jpg' in message and f'{tmp_path}/train/5.jpg' in message
    assert f'{tmp_path}/train/6.jpg' not in message, 'the first few are named'
    assert 'COCO_ROOT' not in message and 'make_toy_coco' not in message


def test_metainfo_classes_that_match_no_category_list_the_file_categories(tmp_path, capsys):
    config = own_coco(tmp_path)
    message = stops(capsys, config, '--cfg-options',
                    'train_dataloader.dataset.metainfo.classes=[coin,bolts,nut]')
    assert "The metainfo classes 'bolts' of train_dataloader.dataset are no category of " \
        f"{tmp_path}/annotations/train.json, whose categories are: 'coin', 'bolt', 'nut'" \
        in message


@pytest.mark.parametrize('classes,in_file_order', [
    ('[bolt,coin,nut]', "('coin', 'bolt', 'nut',)"), ('[nut,coin]', "('coin', 'nut',)")])
def test_classes_in_another_order_than_the_file_categories_are_refused(
        tmp_path, capsys, classes, in_file_order):
    """mmdet labels the categories in the file's order and names label i classes[i]."""
    config = own_coco(tmp_path)
    message = stops(capsys, config, '--cfg-options', f'train_dataloader.dataset.metainfo.'
                    f'classes={classes}', f'val_dataloader.dataset.metainfo.classes={classes}')
    assert 'mmdet numbers the labels in the order of the categories listed in ' \
        f'{tmp_path}/annotations/train.json' in message
    assert f'metainfo=dict(classes={in_file_order})' in message


def test_a_data_root_option_that_moves_no_dataset_is_a_warning(tmp_path, logged):
    config = own_coco(tmp_path)
    cli.train_config(cli.train_parser().parse_args([config]))
    assert 'data_root' not in warnings_of(logged)
    cli.train_config(cli.train_parser().parse_args(
        [config, '--cfg-options', 'data_root=data/elsewhere/']))
    assert f"data_root='data/elsewhere/' of {config} is the data_root of none of its " \
        f'datasets ({tmp_path})' in warnings_of(logged)
    logged.clear()  # datasets moved one by one leave the top-level value unused, knowingly
    copy = shutil.copytree(tmp_path, tmp_path.parent / f'{tmp_path.name}_copy')
    cli.train_config(cli.train_parser().parse_args(
        [config, '--cfg-options', *(f'{split}_dataloader.dataset.data_root={copy}/'
                                    for split in ('train', 'val'))]))
    assert 'data_root' not in warnings_of(logged)


def test_no_metainfo_says_to_name_the_classes(tmp_path, capsys):
    config = own_coco(tmp_path)
    text = open(config).read().replace('metainfo=metainfo, ', 'metainfo=None, ')
    open(config, 'w').write(text)
    message = stops(capsys, config)
    assert 'train_dataloader.dataset gives no metainfo, so it reads the 80 classes of ' \
        'CocoDataset' in message
    assert "metainfo=dict(classes=('coin', 'bolt', 'nut',))" in message
    assert 'num_classes=3, but' not in message, 'the heads are checked once the classes are right'


def test_images_that_filter_cfg_drops_are_a_warning(tmp_path, logged):
    config = own_coco(tmp_path, sizes={'b.jpg': (24, 16)})
    cli.train_config(cli.train_parser().parse_args([config]))
    assert "filter_cfg={'filter_empty_gt': True, 'min_size': 32} of train_dataloader.dataset " \
        'drops 1 of its 3 training images: 0 without annotations of its classes ' \
        '(filter_empty_gt), 1 smaller than min_size=32 px (b.jpg 24x16)' in warnings_of(logged)


def test_warm_up_longer_than_the_run_and_late_milestones_are_warnings(tmp_path, logged):
    # 3 images at batch size 2: 2 iterations per epoch.
    config = own_coco(tmp_path)
    cli.train_config(cli.train_parser().parse_args(
        [config, '--cfg-options', 'train_cfg.max_epochs=4']))
    warnings = warnings_of(logged)
    assert ('The warm-up param_scheduler[0] (LinearLR) ends at iteration 20, but the whole '
            'run is 8 iterations (4 epochs x 2 iterations of 3 images at batch size 2, on one '
            'process)') in warnings
    assert 'param_scheduler.0.end=' in warnings
    assert ('param_scheduler[1] (MultiStepLR) has milestones [6] at or after the end of the '
            'run (4 epochs)') in warnings
    logged.clear()
    cli.train_config(cli.train_parser().parse_args(
        [config, '--cfg-options', 'param_scheduler.0.end=4']))
    assert warnings_of(logged) == '', 'the toy schedule fits 8 epochs of 3 images'


def test_a_single_scheduler_is_named_by_the_key_that_fixes_it(tmp_path, logged):
    # param_scheduler as one dict, not a list: the fix the warning names must work.
    config = own_coco(tmp_path)
    with open(config, 'a') as f:
        f.write("\nparam_scheduler = dict(_delete_=True, type='LinearLR', start_factor=0.01, "
                "by_epoch=False, begin=0, end=20)\n")
    cli.train_config(cli.train_parser().parse_args(
        [config, '--cfg-options', 'train_cfg.max_epochs=4']))
    warnings = warnings_of(logged)
    assert 'The warm-up param_scheduler (LinearLR) ends at iteration 20' in warnings
    assert '--cfg-options param_scheduler.end=' in warnings
    logged.clear()
    cli.train_config(cli.train_parser().parse_args(
        [config, '--cfg-options', 'train_cfg.max_epochs=4', 'param_scheduler.end=4']))
    assert warnings_of(logged) == ''


def test_a_typo_in_a_custom_ann_file_gives_no_coco_advice(tmp_path, capsys):
    config = own_coco(tmp_path)
    message = stops(capsys, config, '--cfg-options',
                    'train_dataloader.dataset.ann_file=annotations/trian.json')
    assert f'missing: {tmp_path}/annotations/trian.json  (train_dataloader.dataset.ann_file)' \
        in message
    assert 'COCO_ROOT' not in message and 'make_toy_coco' not in message
    assert 'Check data_root, ann_file and data_prefix' in message


def test_an_annotation_file_that_is_no_json_and_an_unknown_type_are_one_message(tmp_path,
                                                                             capsys):
    config = own_coco(tmp_path)
    (tmp_path / 'annotations' / 'train.json').write_text('{"images": [')
    message = stops(capsys, config)
    assert 'DatasetMismatchError: The files of train_dataloader.dataset cannot be read as a ' \
        'CocoDataset: JSONDecodeError' in message
    message = stops(capsys, config, '--cfg-options', 'train_dataloader.dataset.type=CocoDatset')
    assert 'train_dataloader.dataset cannot be built: KeyError' in message
    assert 'CocoDatset' in message


def test_missing_toy_data_names_the_generator(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    message = stops(capsys, DET_TOY)
    assert 'missing: data/toy_coco/annotations/instances_train.json' in message
    assert 'Generate the toy data first:\n  python tools/dataset/make_toy_coco.py' in message
    assert 'COCO_ROOT' not in message


def test_skip_data_check_skips_it_with_a_warning(tmp_path, monkeypatch, logged):
    monkeypatch.chdir(tmp_path)
    cfg = cli.train_config(cli.train_parser().parse_args([DET_TOY, '--skip-data-check']))
    assert cfg.train_dataloader.dataset.data_root == 'data/toy_coco/'
    cli.test_config(cli.test_parser().parse_args(
        [DET_TOY, str(make_checkpoint(tmp_path)), '--skip-data-check']))
    with pytest.raises(DatasetNotFoundError):
        cli.test_config(cli.test_parser().parse_args([DET_TOY, str(make_checkpoint(tmp_path))]))


def make_checkpoint(tmp_path) -> str:
    path = tmp_path / 'epoch_1.pth'
    torch.save({'state_dict': model_state_dict(DET_TOY)}, path)
    return str(path)


class MappedBackend(LocalBackend):
    """A file backend like petrel's with ``path_mapping``: it reads mapped local paths."""

    def __init__(self, path_mapping: dict) -> None:
        self.path_mapping = path_mapping

    def _map(self, path) -> str:
        for src, dst in self.path_mapping.items():
            path = str(path).replace(src, dst)
        return path

    def exists(self, filepath) -> bool:
        return super().exists(self._map(filepath))


def with_backend(config: str, data_root: str, backend_args: dict) -> str:
    """A child of ``config`` that reads its data from ``data_root`` through
    ``backend_args``, as OpenMMLab's cluster configs do; returns its path."""
    child = osp.join(osp.dirname(config), 'with_backend.py')
    args = {**backend_args, '_delete_': True}  # the base's backend_args are None
    with open(child, 'w') as f:
        f.write(f"""_base_ = [{config!r}]
data_root = {data_root!r}
train_dataloader = dict(dataset=dict(data_root=data_root, backend_args={args!r}))
val_dataloader = dict(dataset=dict(data_root=data_root, backend_args={args!r}))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json', backend_args={args!r})
test_evaluator = val_evaluator
""")
    return child


def test_paths_read_through_a_backend_are_checked_through_it(tmp_path, capsys, logged):
    """A config whose data_root is mapped by backend_args (as petrel's path_mapping in
    OpenMMLab's cluster configs) passes where the mapped files exist, and still stops
    where they do not."""
    register_backend('h_data_mapped', MappedBackend, force=True)
    config = with_backend(own_coco(tmp_path), 'cluster:/own/', dict(
        backend='h_data_mapped', path_mapping={'cluster:/own/': f'{tmp_path}/'}))
    cfg = cli.train_config(cli.train_parser().parse_args([config]))
    assert cfg.train_dataloader.dataset.data_root == 'cluster:/own/'

    shutil.rmtree(tmp_path / 'train')
    message = stops(capsys, config)
    assert 'missing: cluster:/own/train/  (train_dataloader.dataset.data_prefix.img)' in message


def test_a_backend_that_cannot_be_reached_here_is_logged_not_fatal(tmp_path, logged):
    config = with_backend(own_coco(tmp_path), 'data/own/', dict(
        backend='petrel', path_mapping={'data/own/': 's3://bucket/own/'}))
    cli.train_config(cli.train_parser().parse_args([config]))
    assert 'data/own/annotations/train.json (train_dataloader.dataset.ann_file) was not ' \
        'checked: its file backend' in warnings_of(logged)


def test_tools_train_py_stops_on_a_mistake_before_the_runner(tmp_path):
    config = own_coco(tmp_path)
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config, '--cfg-options',
         'model.roi_head.bbox_head.num_classes=80'],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
        env={**os.environ, 'PYTHONPATH': REPO_ROOT})
    assert proc.returncode == 2 and 'Traceback' not in proc.stderr
    assert 'model.roi_head.bbox_head.num_classes=80, but' in proc.stderr
    assert not (tmp_path / 'work_dirs').exists(), 'nothing ran before the check'


# Your own segmentation data: ADE20K layout, 0 = "other" (reduce_zero_label).
def own_ade(root, label_values=(0, 1, 150)) -> dict:
    """Two images and label maps under ``root`` in the ADE20K layout; returns
    --cfg-options pointing the toy FPN config there."""
    for split, names in (('training', ('a', 'b')), ('validation', ('v', ))):
        (root / 'images' / split).mkdir(parents=True)
        (root / 'annotations' / split).mkdir(parents=True)
        for name in names:
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
                root / 'images' / split / f'{name}.jpg')
            label = np.zeros((8, 8), np.uint8)
            label[0, :len(label_values)] = label_values
            Image.fromarray(label).save(root / 'annotations' / split / f'{name}.png')
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]


def test_own_segmentation_data_that_fits_passes(tmp_path):
    # 255 stays the ignore index under reduce_zero_label, as in mmseg's LoadAnnotations.
    cli.train_config(cli.train_parser().parse_args(
        [SEG_TOY, '--cfg-options', *own_ade(tmp_path, (0, 1, 150, 255))]))


def test_label_values_beyond_num_classes_name_the_file_and_the_fix(tmp_path, capsys):
    message = stops(capsys, SEG_TOY, '--cfg-options', *own_ade(tmp_path, (0, 5, 151, 200)))
    assert 'DatasetMismatchError' in message
    assert ('2 of the 2 label maps read from train_dataloader.dataset hold values that are '
            'neither a class (0..149, num_classes=150) nor the ignore index 255 after '
            'reduce_zero_label (0 -> ignore, v -> v-1), e.g. [150, 199] in '
            f'{tmp_path}/annotations/training/a.png') in message
    assert 'ADE20K_ROOT' not in message


def test_a_missing_label_map_is_named(tmp_path, capsys):
    options = own_ade(tmp_path)
    (tmp_path / 'annotations' / 'training' / 'b.png').unlink()
    message = stops(capsys, SEG_TOY, '--cfg-options', *options)
    assert f'1 of the 2 label maps (in {tmp_path}/annotations/training, named as the images ' \
        "with seg_map_suffix='.png') of train_dataloader.dataset are missing, e.g. " \
        f'{tmp_path}/annotations/training/b.png' in message


def test_segmentation_images_that_the_suffixes_miss_are_named_with_the_suffix(
        tmp_path, capsys):
    options = own_ade(tmp_path)
    message = stops(capsys, SEG_TOY, '--cfg-options', *options,
                    'train_dataloader.dataset.img_suffix=.png')
    assert "train_dataloader.dataset finds no image: no file ending in img_suffix='.png' in " \
        f'{tmp_path}/images/training' in message
    message = stops(capsys, SEG_TOY, '--cfg-options', *options,
                    'train_dataloader.dataset.seg_map_suffix=_mask.png')
    assert f'2 of the 2 label maps (in {tmp_path}/annotations/training, named as the images ' \
        "with seg_map_suffix='_mask.png') of train_dataloader.dataset are missing" in message
    assert 'check seg_map_suffix' in message


@pytest.mark.parametrize('broken', ['colour', 'size'])
def test_label_maps_in_colour_or_of_another_size_than_the_image_are_refused(
        tmp_path, capsys, broken):
    options = own_ade(tmp_path)
    path = tmp_path / 'annotations' / 'training' / 'b.png'
    shape = (8, 8, 3) if broken == 'colour' else (8, 6)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    message = stops(capsys, SEG_TOY, '--cfg-options', *options)
    assert f'The label map {path} of train_dataloader.dataset ' + (
        'has 3 channels' if broken == 'colour' else
        f'is 6x8 pixels, its image {tmp_path}/images/training/b.jpg 8x8') in message


def test_an_image_that_cannot_be_read_is_named_without_a_traceback(tmp_path, capsys):
    options = own_ade(tmp_path)
    (tmp_path / 'images' / 'training' / 'b.jpg').write_bytes(b'not an image')
    message = stops(capsys, SEG_TOY, '--cfg-options', *options)
    assert 'The files of train_dataloader.dataset cannot be read as a ADE20KDataset: ' \
        'UnidentifiedImageError' in message
    assert f'{tmp_path}/images/training/b.jpg' in message


def test_reduce_zero_label_with_zero_as_a_class_is_a_warning(tmp_path, logged):
    """Values 0..N-1 for N classes: 0 is a class, which reduce_zero_label would ignore."""
    classes = 'train_dataloader.dataset.metainfo.classes=[wall,building,sky]'
    cli.train_config(cli.train_parser().parse_args(
        [SEG_TOY, '--cfg-options', *own_ade(tmp_path, (0, 1, 2)), classes,
         classes.replace('train_', 'val_'), 'model.decode_head.num_classes=3']))
    assert 'The label maps read from train_dataloader.dataset hold every value 0..2 and ' \
        "none 3, but reduce_zero_label=True ignores 0 and makes value v class v-1: class " \
        "'sky' never occurs" in warnings_of(logged)
    assert 'set reduce_zero_label=False' in warnings_of(logged)


def test_segmentation_num_classes_must_match_the_classes(tmp_path, capsys):
    message = stops(capsys, SEG_TOY, '--cfg-options', *own_ade(tmp_path),
                    'model.decode_head.num_classes=19')
    assert 'model.decode_head.num_classes=19, but train_dataloader.dataset has 150 classes' \
        in message
