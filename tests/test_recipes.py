"""Specification: every detection and segmentation config trains with the official
BiFormer recipe, as recorded from the official configs in
``../shared/reference/official_recipes.json``.

Each config is built (model and optimizer) and compared with those facts; the T configs
follow S's recipe, since no official T configs exist.
"""
import copy
import functools
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

from biformer_mm import BiFormer, convert_official_state_dict
from biformer_mm.engine import fall_back_to_fp32, load_config
from _reference import REFERENCE_DIR, load_fixture, load_manifest
from conftest import REPO_ROOT

pytestmark = pytest.mark.classic

RECIPES = json.loads((REFERENCE_DIR / 'official_recipes.json').read_text())
CONFIGS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'detection', '*_biformer_[tsb].py')) +
                 glob.glob(osp.join(REPO_ROOT, 'configs', 'segmentation', '*_biformer_[tsb].py')))
ARCHS = {'t': 'tiny', 's': 'small', 'b': 'base'}

# The official schedules as the facts word them, and what they are in mmengine terms.
SCHEDULES = {
    '1x: 12 epochs, step at 8 and 11, linear warm-up 500 iters ratio 0.001': dict(
        max_epochs=12, milestones=[8, 11], warmup_iters=500, warmup_ratio=0.001),
    'cosine annealing, linear warm-up 1000 iters ratio 0.1, min_lr_ratio 1e-8': dict(
        decay='CosineAnnealingLR', eta_min_ratio=1e-8, warmup_iters=1000,
        warmup_ratio=0.1),
    'poly power 1.0 min_lr 0, linear warm-up 1500 iters ratio 1e-6': dict(
        decay='PolyLR', power=1.0, eta_min=0., warmup_iters=1500, warmup_ratio=1e-6),
}
BATCHES = {'8 GPUs x 2 images': 2, '8 GPUs x 4 images': 4}


def name_of(config: str) -> str:
    return osp.splitext(osp.basename(config))[0]


def task_of(config: str) -> str:
    return 'detection' if '/detection/' in config else 'segmentation'


def official_recipe(config: str) -> dict:
    """The official facts for a config: ``{family}_{S|B}``, T taking S's; B entries
    complete S's where the facts list only what differs."""
    family, _, size = name_of(config).split('_')
    recipes = RECIPES[task_of(config)]
    recipe = dict(recipes[f'{family}_S'])
    if size == 'b':
        recipe.update(recipes[f'{family}_B'])
    schedule = recipe.get('schedule') or recipe.get('lr_schedule')
    if schedule == '1x':  # spelled out once, in maskrcnn_S
        schedule = next(r['schedule'] for r in recipes.values()
                        if isinstance(r, dict) and r.get('schedule', '').startswith('1x:'))
    recipe['schedule'] = SCHEDULES[schedule]
    recipe['batch_per_gpu'] = BATCHES[recipe.get('batch') or recipes['batch']]
    return recipe


def official_backbone_names() -> dict:
    """Our backbone parameter names -> the official ones, from the official T/S/B
    manifest and the official dense layout (extra_norms) of the fixture."""
    names = {}
    official = [k for entry in load_manifest().values() for k in entry['state_dict']]
    official += [k for k in load_fixture()['state_dict'] if k.startswith('extra_norms.')]
    for key in official:
        for ours in convert_official_state_dict({key: torch.empty(0)}):
            names[ours] = key
    return names


OFFICIAL_NAMES = official_backbone_names()


@functools.lru_cache(maxsize=None)
def build(config: str) -> dict:
    """The config, its model (no ImageNet weights), and its optimizer built as on a
    CPU (fp32 wrapper, same parameter groups)."""
    cfg = load_config(config, cfg_options={'model.backbone.init_cfg': None})
    scope = cfg.default_scope
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    torch.manual_seed(0)
    model = registry.build(cfg.model)
    cpu_cfg = copy.deepcopy(cfg)
    fall_back_to_fp32(cpu_cfg)
    optimizer = build_optim_wrapper(model, cpu_cfg.optim_wrapper).optimizer
    return dict(config=config, cfg=cfg, model=model, optimizer=optimizer,
                recipe=official_recipe(config))


@pytest.fixture(params=CONFIGS, ids=name_of)
def built(request) -> dict:
    return build(request.param)


@pytest.fixture(scope='module', autouse=True)
def release_built_models():
    yield
    build.cache_clear()


def test_all_twelve_configs_are_checked():
    assert len(CONFIGS) == 12


def test_backbone_is_the_official_architecture(built):
    cfg, backbone, recipe = built['cfg'], built['model'].backbone, built['recipe']
    common, task = RECIPES['backbone_common'], RECIPES[task_of(built['config'])]
    size = name_of(built['config'])[-1]
    assert isinstance(backbone, BiFormer)
    assert cfg.model.backbone.arch == ARCHS[size]
    if size != 't':
        assert backbone.arch['depths'] == common[f'depths_{size.upper()}']
        assert backbone.embed_dims == common[f'embed_dims_{size.upper()}']
    assert backbone.arch['topks'] == common['topks']
    assert backbone.arch['head_dim'] == common['head_dim']
    assert backbone.arch['mlp_ratios'] == common['mlp_ratios']
    assert backbone.arch['side_dwconv'] == common['side_dwconv']
    assert backbone.n_win == task['n_win']
    assert cfg.model.backbone.auto_pad is common['auto_pad']
    # Stochastic depth rises linearly to drop_path_rate at the last block.
    assert backbone.stages[-1][-1].drop_path.drop_prob == pytest.approx(
        recipe['drop_path_rate'])


def test_backbone_batchnorms_follow_the_official_wrapper(built):
    backbone = built['model'].backbone
    norms = [backbone.stem[1], backbone.stem[4]] + [d[1] for d in backbone.downsamples]
    if task_of(built['config']) == 'detection':
        assert RECIPES['detection']['backbone_norm_eval'] is True
        built['model'].train()
        assert all(not m.training for m in norms), 'norm_eval: BatchNorms stay in eval mode'
        assert all(m.training for m in backbone.stages.modules())
    else:
        assert RECIPES['segmentation']['backbone_sync_bn'] is True
        assert all(isinstance(m, nn.SyncBatchNorm) for m in norms)


def test_optimizer_and_weight_decay_exemptions_are_official(built):
    recipe, model = built['recipe'], built['model']
    exempt = recipe.get('decay_mult_0_for_param_names_containing', [])
    groups = built['optimizer'].param_groups
    assert type(built['optimizer']).__name__ == recipe['optimizer']
    assert {g['lr'] for g in groups} == {recipe['lr']}
    assert {tuple(g['betas']) for g in groups} == {tuple(recipe.get('betas', (0.9, 0.999)))}
    decay = {id(p): g['weight_decay'] for g in groups for p in g['params']}
    checked = 0
    for name, param in model.named_parameters():
        if name.startswith('backbone.'):
            official = 'backbone.' + OFFICIAL_NAMES[name[len('backbone.'):]]
        else:
            official = name  # necks and heads: the same mmdet/mmseg modules
        expected = 0. if any(s in official for s in exempt) else recipe['weight_decay']
        assert decay[id(param)] == expected, f'{name} (official {official})'
        checked += 1
    assert checked == len(list(model.parameters()))
    # The rule exempts exactly the block LayerNorms and the output norms of the backbone.
    exempted = {n.split('.')[-2] for n, p in model.named_parameters() if decay[id(p)] == 0}
    assert exempted == ({'norm1', 'norm2', *map(str, range(4))} if exempt else set())


def test_mixed_precision_is_fp16_with_the_official_static_loss_scale(built):
    wrapper = built['cfg'].optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper'
    assert wrapper.dtype == 'float16'
    assert wrapper.loss_scale == built['recipe']['fp16_loss_scale']


def test_schedule_and_batch_are_official(built):
    cfg, recipe = built['cfg'], built['recipe']
    schedule = recipe['schedule']
    warmup, decay = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and warmup.by_epoch is False
    assert (warmup.start_factor, warmup.end) == (schedule['warmup_ratio'],
                                                 schedule['warmup_iters'])
    assert cfg.train_dataloader.batch_size == recipe['batch_per_gpu']
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=8 *
                                     recipe['batch_per_gpu'])
    if task_of(built['config']) == 'detection':
        assert cfg.train_cfg.max_epochs == schedule['max_epochs']
        assert (decay.type, decay.milestones) == ('MultiStepLR', schedule['milestones'])
        return
    assert cfg.train_cfg.max_iters == recipe['max_iters'] == decay.end
    assert decay.type == schedule['decay'] and decay.begin == warmup.end
    if decay.type == 'PolyLR':
        assert (decay.power, decay.eta_min) == (schedule['power'], schedule['eta_min'])
    else:
        assert decay.eta_min_ratio == schedule['eta_min_ratio']
    assert cfg.default_hooks.checkpoint.save_best == recipe['save_best'] == 'mIoU'
    interval = recipe.get('checkpoint_and_eval_interval')
    if interval:
        assert cfg.train_cfg.val_interval == cfg.default_hooks.checkpoint.interval == interval


@pytest.mark.parametrize('config', [c for c in CONFIGS if 'retinanet' in c], ids=name_of)
def test_retinanet_neck_takes_stages_one_to_three_with_extra_convs_on_input(config):
    built = build(config)
    assert RECIPES['detection']['retinanet_S']['neck'] == \
        'FPN start_level 1, add_extra_convs on_input'
    cfg, backbone = built['cfg'], built['model'].backbone
    # Our backbone returns stages 1-3 only, so the FPN starts at its first input.
    assert backbone.out_indices == (1, 2, 3) and cfg.model.neck.start_level == 0
    assert cfg.model.neck.in_channels == backbone.embed_dims[1:]
    assert cfg.model.neck.add_extra_convs == 'on_input' and cfg.model.neck.num_outs == 5


@pytest.mark.parametrize('config', [c for c in CONFIGS if '/fpn_' in c], ids=name_of)
def test_semantic_fpn_tests_at_the_official_resize(config):
    built = build(config)
    assert built['recipe']['test_resize'] == \
        'img_scale (2048, 512) keep ratio, aligned to a multiple of 32'
    pipeline = built['cfg'].test_dataloader.dataset.pipeline
    assert dict(type='Resize', scale=(2048, 512), keep_ratio=True) in pipeline
    assert dict(type='ResizeToMultiple', size_divisor=32) in pipeline


@pytest.mark.parametrize('config', sorted(
    c for task in ('detection', 'segmentation')
    for c in glob.glob(osp.join(REPO_ROOT, 'configs', task, '**', '*.py'), recursive=True)
    if '_base_' not in c), ids=lambda c: osp.relpath(c, osp.join(REPO_ROOT, 'configs')))
def test_test_pipeline_is_the_one_the_config_tests_with(config):
    """The top-level ``test_pipeline``, which mmdeploy (``create_input``) and mmseg's
    ``inference_model`` read, is the pipeline of ``test_dataloader``: a toy config that
    kept its parent's 1333x800 one made mmdeploy resize toy images 3.6x."""
    cfg = Config.fromfile(config)
    # mmengine tags the transforms of a base file with its scope (``_scope_``).
    steps = [[{k: v for k, v in step.items() if k != '_scope_'} for step in pipeline]
             for pipeline in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline)]
    assert steps[0] == steps[1]
