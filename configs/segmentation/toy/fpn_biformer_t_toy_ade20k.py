# Semantic FPN + BiFormer-T on the toy ADE20K-layout street scenes (generate them with
# tools/dataset/make_toy_ade20k.py), read by mmseg's ADE20KDataset at 128x128 crops; BN in
# the backbone and the head; trained from scratch with a short fp32 schedule for CPUs:
# the config of fpn_biformer_t.py with the toy data.
#
#   python tools/dataset/make_toy_ade20k.py
#   python tools/train.py configs/segmentation/toy/fpn_biformer_t_toy_ade20k.py
#
# Another backbone size: inherit this file and set model.backbone (and the head's
# in_channels) as configs/segmentation/fpn_biformer_s.py / _b.py do.
_base_ = '../fpn_biformer_t.py'

data_root = 'data/toy_ade/ADEChallengeData2016'
crop_size = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# The dataloaders replace the config's whole (_delete_), whatever dataset it reads.
# Loading in the main process: the images are tiny and the cores do the training.
train_dataloader = dict(
    _delete_=True,
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ADE20KDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    _delete_=True,
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ADE20KDataset',
        data_root=data_root,
        data_prefix=dict(img_path='images/validation',
                         seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# No ImageNet weights: the backbone starts from scratch. BN instead of SyncBN in the
# backbone and the head, so that multi-process CPU runs work too.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None, norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg))

# fp32 (no AMP), AdamW with a higher lr than the ADE20K recipes since nothing is
# pretrained, linear warm-up then linear decay.
max_iters = 500
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, by_epoch=False, begin=50, end=max_iters),
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
