"""Specification of the detection configs in configs/detection/."""
import filecmp
import glob
import json
import os
import os.path as osp
import shutil

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope

from biformer_mm.engine import fall_back_to_fp32, load_config
from conftest import REPO_ROOT, load_tool

DET_DIR = osp.join(REPO_ROOT, 'configs', 'detection')
CONFIGS = sorted(glob.glob(osp.join(DET_DIR, '*_biformer_[tsb].py')))
ARCHS = {'t': 'tiny', 's': 'small', 'b': 'base'}
CHANNELS = {'t': [64, 128, 256, 512], 's': [64, 128, 256, 512], 'b': [96, 192, 384, 768]}


def config_id(path: str) -> str:
    return osp.splitext(osp.basename(path))[0]


def family(path: str) -> str:
    return config_id(path).split('_')[0]


def size(path: str) -> str:
    return config_id(path)[-1]


TOY_CONFIGS = sorted(glob.glob(osp.join(DET_DIR, 'toy', '*_toy_coco.py')))


def test_all_six_configs_exist():
    assert [config_id(c) for c in CONFIGS] == [
        f'{f}_biformer_{s}' for f in ('maskrcnn', 'retinanet') for s in 'bst']


@pytest.mark.classic
@pytest.mark.parametrize('config', CONFIGS, ids=config_id)
def test_config_reads_coco_and_the_imagenet_weights(config):
    """The training recipe itself is checked against the official one in
    test_recipes.py."""
    cfg = Config.fromfile(config)
    sz, fam = size(config), family(config)
    assert cfg.default_scope == 'mmdet'
    assert cfg.custom_imports == dict(imports=['biformer_mm', 'biformer_mm.engine'],
                                      allow_failed_imports=False)
    backbone = cfg.model.backbone
    assert backbone.type == 'BiFormer' and backbone.arch == ARCHS[sz]
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=f'checkpoints/biformer_{ARCHS[sz]}_best.pth')
    used = [CHANNELS[sz][i] for i in backbone.out_indices]
    assert cfg.model.neck.in_channels == used
    assert cfg.train_dataloader.dataset.data_root == 'data/coco/'
    assert cfg.val_evaluator.ann_file == 'data/coco/annotations/instances_val2017.json'
    assert cfg.val_evaluator.metric == (['bbox', 'segm'] if fam == 'maskrcnn' else 'bbox')


@pytest.mark.classic
def test_coco_root_environment_variable_moves_every_data_path(monkeypatch):
    monkeypatch.setenv('COCO_ROOT', '/datasets/coco2017/')
    cfg = Config.fromfile(osp.join(DET_DIR, 'maskrcnn_biformer_s.py'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == '/datasets/coco2017/'
    for evaluator in ('val_evaluator', 'test_evaluator'):
        assert cfg[evaluator].ann_file == \
            '/datasets/coco2017/annotations/instances_val2017.json'


def small_batch(with_mask: bool, num_classes: int = 80):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=[(3, 128, 160), (3, 96, 128)],
                          num_items=[2, 3], num_classes=num_classes, with_mask=with_mask)


@pytest.mark.classic
@pytest.mark.parametrize('config', CONFIGS, ids=config_id)
def test_config_builds_trains_one_step_and_predicts(config):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    cfg = load_config(config, cfg_options={'model.backbone.init_cfg': None})
    assert fall_back_to_fp32(cfg) == (not torch.cuda.is_available())
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = small_batch(with_mask=family(config) == 'maskrcnn')

    model.train()
    stem_before = model.backbone.stem[0].weight.detach().clone()
    log_vars = model.train_step(batch, optim_wrapper)
    assert torch.isfinite(log_vars['loss'])
    assert not torch.equal(stem_before, model.backbone.stem[0].weight), \
        'the backbone was not updated: gradients did not reach it'

    model.eval()
    with torch.no_grad():
        results = model.test_step(batch)
    assert len(results) == 2
    for result, inputs in zip(results, batch['data_samples']):
        pred = result.pred_instances
        assert pred.bboxes.shape[1] == 4 and len(pred.scores) == len(pred.labels)
        assert result.ori_shape == inputs.ori_shape
        if family(config) == 'maskrcnn':
            assert pred.masks.shape[1:] == inputs.ori_shape


@pytest.mark.classic
def test_missing_imagenet_checkpoint_says_where_to_put_it(tmp_path, monkeypatch):
    from mmdet.registry import MODELS
    init_default_scope('mmdet')
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(osp.join(DET_DIR, 'maskrcnn_biformer_t.py'))
    model = MODELS.build(cfg.model)
    with pytest.raises(FileNotFoundError) as error:
        model.init_weights()
    message = str(error.value)
    assert str(tmp_path / 'checkpoints' / 'biformer_tiny_best.pth') in message
    assert 'init_cfg=None' in message


@pytest.mark.classic
@pytest.mark.parametrize('config', TOY_CONFIGS, ids=config_id)
def test_toy_config_is_the_t_config_on_the_toy_data(config):
    assert [config_id(c) for c in TOY_CONFIGS] == [
        'maskrcnn_biformer_t_toy_coco', 'retinanet_biformer_t_toy_coco']
    real = Config.fromfile(osp.join(DET_DIR, f'{family(config)}_biformer_t.py'))
    cfg = load_config(config)
    assert cfg.train_dataloader.dataset.data_root == 'data/toy_coco/'
    assert cfg.train_dataloader.dataset.metainfo.classes == ('rectangle', 'ellipse',
                                                            'triangle')
    assert cfg.test_evaluator.ann_file == 'data/toy_coco/annotations/instances_val.json'
    assert cfg.model.backbone.init_cfg is None
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'loss_scale' not in cfg.optim_wrapper
    # The model is the inherited config's, but for the backbone's initialisation and
    # BatchNorm mode, the heads' classes and Mask R-CNN's proposal and RoI counts.
    toy, t = leaves(cfg.model.to_dict()), leaves(real.model.to_dict())
    absent = object()
    differing = {key for key in toy.keys() | t.keys() if toy.get(key, absent) != t.get(key, absent)}
    backbone = {'backbone.init_cfg', 'backbone.init_cfg.checkpoint', 'backbone.init_cfg.type',
                'backbone.norm_eval'}  # None here, the ImageNet weights there
    if family(config) == 'maskrcnn':
        assert differing == backbone | {
            'roi_head.bbox_head.num_classes', 'roi_head.mask_head.num_classes',
            'train_cfg.rpn_proposal.nms_pre', 'train_cfg.rpn_proposal.max_per_img',
            'train_cfg.rcnn.sampler.num', 'test_cfg.rpn.nms_pre', 'test_cfg.rpn.max_per_img'}
        assert cfg.model.roi_head.bbox_head.num_classes == 3
        assert cfg.model.roi_head.mask_head.num_classes == 3
        assert cfg.val_evaluator.metric == ['bbox', 'segm']
    else:
        assert differing == backbone | {'bbox_head.num_classes'}
        assert cfg.model.bbox_head.num_classes == 3
    assert cfg.model.backbone.arch == 'tiny'


def leaves(tree: dict, prefix: str = '') -> dict:
    """``{'a.b.c': leaf}`` of a nested dict (an empty or None value is a leaf)."""
    if not isinstance(tree, dict) or not tree:
        return {prefix[:-1]: tree}
    return {key: leaf for name, child in tree.items()
            for key, leaf in leaves(child, f'{prefix}{name}.').items()}


def test_toy_dataset_is_deterministic_coco(tmp_path):
    make = load_tool('dataset/make_toy_coco.py').make_toy_coco
    first = make(str(tmp_path / 'a'), num_train=3, num_val=2, seed=1)
    second = make(str(tmp_path / 'b'), num_train=3, num_val=2, seed=1)
    for split in ('train', 'val'):
        with open(first[split]) as f1, open(second[split]) as f2:
            coco = json.load(f1)
            assert coco == json.load(f2)
        assert [c['name'] for c in coco['categories']] == ['rectangle', 'ellipse',
                                                           'triangle']
        names = [image['file_name'] for image in coco['images']]
        assert sorted(os.listdir(tmp_path / 'a' / split)) == names
        assert sorted(os.listdir(tmp_path / 'b' / split)) == names
        _, mismatch, errors = filecmp.cmpfiles(tmp_path / 'a' / split, tmp_path / 'b' / split,
                                               names, shallow=False)
        assert not mismatch and not errors, 'the images of one seed differ'
        for ann in coco['annotations']:
            x, y, w, h = ann['bbox']
            polygon = ann['segmentation'][0]
            assert min(polygon[0::2]) == x and max(polygon[0::2]) == x + w - 1
            assert min(polygon[1::2]) == y and max(polygon[1::2]) == y + h - 1
            assert 0 < ann['area'] <= w * h


def write(path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def test_downstream_config_outside_the_repo_inherits_and_overrides(tmp_path):
    from mmdet.registry import MODELS
    # A project elsewhere with a cloned copy of our configs, inherited by relative path,
    # and one inheriting the checkout's config by absolute path.
    shutil.copytree(osp.join(REPO_ROOT, 'configs'), tmp_path / 'third_party' / 'configs')
    overrides = ("model = dict(backbone=dict(init_cfg=None, drop_path_rate=0.3),\n"
                 "             roi_head=dict(bbox_head=dict(num_classes=5),\n"
                 "                           mask_head=dict(num_classes=5)))\n"
                 "optim_wrapper = dict(optimizer=dict(lr=2e-4))\n"
                 "train_cfg = dict(max_epochs=24)\n")
    relative = write(tmp_path / 'project' / 'configs' / 'relative.py',
                     "_base_ = '../../third_party/configs/detection/maskrcnn_biformer_s.py'"
                     "\n" + overrides)
    absolute = write(tmp_path / 'project' / 'configs' / 'absolute.py',
                     f"_base_ = '{osp.join(DET_DIR, 'maskrcnn_biformer_s.py')}'\n"
                     + overrides)
    for child in (relative, absolute):
        cfg = Config.fromfile(child)
        # Overridden ...
        assert cfg.model.backbone.init_cfg is None
        assert cfg.model.backbone.drop_path_rate == 0.3
        assert cfg.model.roi_head.bbox_head.num_classes == 5
        assert cfg.optim_wrapper.optimizer.lr == 2e-4
        assert cfg.train_cfg.max_epochs == 24
        # ... and inherited.
        assert cfg.model.backbone.arch == 'small' and cfg.model.backbone.n_win == 16
        assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
        assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
        assert cfg.param_scheduler[-1].milestones == [8, 11]
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert type(model.backbone).__name__ == 'BiFormer'
    assert model.roi_head.bbox_head.num_classes == 5
