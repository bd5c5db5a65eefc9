# The toy ADE20K-layout street scenes (generate them with tools/dataset/make_toy_ade20k.py),
# read by mmseg's ADE20KDataset at 128x128 crops, and the short from-scratch fp32 schedule
# for CPUs that configs/segmentation/toy/*.py train with. Those configs list this file next
# to their model config and take the toy_* values by name
# (`train_dataloader = _base_.toy_train_dataloader`): mmengine does not allow one key in
# two bases, and the model configs already set these.
toy_data_root = 'data/toy_ade/ADEChallengeData2016'
toy_crop_size = (128, 128)
toy_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=toy_crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
toy_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# The dataloaders replace the config's whole (_delete_), whatever dataset it reads.
# Loading in the main process: the images are tiny and the cores do the training.
toy_train_dataloader = dict(
    _delete_=True,
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ADE20KDataset',
        data_root=toy_data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=toy_train_pipeline))
toy_val_dataloader = dict(
    toy_train_dataloader,
    batch_size=1,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        toy_train_dataloader['dataset'],
        data_prefix=dict(img_path='images/validation',
                         seg_map_path='annotations/validation'),
        pipeline=toy_test_pipeline))
toy_val_evaluator = dict(_delete_=True, type='IoUMetric', iou_metrics=['mIoU'])

# BN instead of SyncBN in the backbone and the heads, so that multi-process CPU runs work
# too.
toy_norm_cfg = dict(type='BN', requires_grad=True)

# Linear warm-up then linear decay.
max_iters = 500
toy_train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
toy_param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, by_epoch=False, begin=50, end=max_iters),
]
toy_default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
# fp32 (no AMP), AdamW at lr 5e-4, 2.5x the fine-tuning lr since random weights need larger
# steps; gradients clipped to norm 10, which keeps the first, large-loss iterations of a
# random network from diverging; no weight decay on norms and the position embedding.
toy_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
