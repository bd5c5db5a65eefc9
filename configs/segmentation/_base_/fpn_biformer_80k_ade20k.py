# Semantic FPN with a BiFormer backbone on ADE20K, 512x512 crops, 80k iterations: the
# official BiFormer recipe (semantic_segmentation/configs/ade20k/sfpn.biformer_*.py,
# mmseg 0.x) in mmseg 1.x terms; tests/test_recipes.py checks it against the official
# facts in ../shared/reference/official_recipes.json. The architecture-specific values are
# those of BiFormer-S; the T/S/B configs next to this directory set their own.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_80k.py',
    'mmseg::_base_/default_runtime.py',
]
# biformer_mm registers BiFormer; biformer_mm.engine lets mmengine's weights-only loads
# (torch>=2.6) read the training checkpoints these configs write (also for
# `mim test mmseg`).
custom_imports = dict(imports=['biformer_mm', 'biformer_mm.engine'], allow_failed_imports=False)
default_scope = 'mmseg'

# ADE20K root: data/ade/ADEChallengeData2016 (relative to the working directory) unless
# the environment variable ADE20K_ROOT is set.
data_root = '{{$ADE20K_ROOT:data/ade/ADEChallengeData2016}}'
crop_size = (512, 512)
# Test images are resized keeping their ratio, then to a multiple of 32 (the official
# recipe's AlignResize).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=32),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=4, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

# The backbone and the decode head use SyncBN, as the official recipe (whose wrapper
# converts the backbone's BatchNorms to SyncBN): the Runner turns it into BN on a single
# device; multi-process CPU runs need BN (docs/segmentation.md).
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='BiFormer',
        arch='small',
        # 8x8 routing windows at 512x512 as in the official recipe; auto_pad pads each
        # feature map to a multiple of the window count, so whole-image inference takes
        # any image size.
        n_win=8,
        auto_pad=True,
        drop_path_rate=0.15,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        # Official ImageNet-1k weights, relative to the working directory. A missing file
        # stops tools/train.py before training, naming the expected path; set init_cfg=None
        # to train from scratch.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/biformer_small_best.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))

# AdamW (lr 2e-4, weight decay 1e-4 on every parameter: the official Semantic FPN exempts
# none); fp16 mixed precision with a static loss scale of 512 (tools/train.py falls back
# to fp32 without a GPU); cosine annealing to 1e-8 x lr after a 1000-iteration linear
# warm-up from 0.1 x lr.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='float16',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-8, by_epoch=False, begin=1000,
         end=80000),
]
# Checkpoint and evaluate every 4000 iterations (mmseg's 80k schedule says 8000), keeping
# the best by mIoU, as the official recipe, and one regular checkpoint.
train_cfg = dict(val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000, max_keep_ckpts=1, save_best='mIoU'))

# The lr is for 8 GPUs x 4 images; --auto-scale-lr rescales it to the actual batch.
auto_scale_lr = dict(enable=False, base_batch_size=32)
