# UperNet with a BiFormer backbone on ADE20K, 512x512 crops, 160k iterations: the
# official BiFormer recipe (semantic_segmentation/configs/ade20k/upernet.biformer_*.py,
# mmseg 0.x) in mmseg 1.x terms; tests/test_recipes.py checks it against the official
# facts in ../shared/reference/official_recipes.json. The architecture-specific values
# are those of BiFormer-S; the T/S/B configs next to this directory set their own.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/schedules/schedule_160k.py',
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
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader

# The backbone and both heads use SyncBN, as the official recipe (whose wrapper converts
# the backbone's BatchNorms to SyncBN): the Runner turns it into BN on a single device;
# multi-process CPU runs need BN (docs/segmentation.md).
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
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        # Official ImageNet-1k weights, relative to the working directory. A missing file
        # stops tools/train.py before training, naming the expected path; set init_cfg=None
        # to train from scratch.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/biformer_small_best.pth')),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    # Auxiliary FCN head on the stage-3 features.
    auxiliary_head=dict(in_channels=256, in_index=2, num_classes=150))

# AdamW (lr 6e-5, weight decay 0.01); fp16 mixed precision with a static loss scale of
# 512 (tools/train.py falls back to fp32 without a GPU); poly decay (power 1, to 0) after
# a 1500-iteration linear warm-up from 1e-6 x lr. No weight decay on parameters whose name
# contains 'norm', the official rule: it matches the block LayerNorms (norm1/norm2) and
# the per-output norms (out_norms, official extra_norms), not the BatchNorms of the stem,
# the downsampling layers or the heads (named bn), nor the position-embedding or LePE
# convs, which are decayed.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='float16',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0., power=1.0, by_epoch=False, begin=1500, end=160000),
]
# Checkpoints and evaluation every 16000 iterations (mmseg's 160k schedule; the official
# facts name no other interval), keeping the best by mIoU as the official recipe, and one
# regular checkpoint.
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1, save_best='mIoU'))

# The lr is for 8 GPUs x 2 images; --auto-scale-lr rescales it to the actual batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
