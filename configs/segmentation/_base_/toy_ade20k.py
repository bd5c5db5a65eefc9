# The toy ADE20K-layout street scenes (generate them with tools/dataset/make_toy_ade20k.py),
# read by mmseg's ADE20KDataset at 128x128 crops, for configs/segmentation/toy/*.py. Those
# configs list this file next to the one they inherit and take the values by name
# (`train_dataloader = _base_.toy_train_dataloader`): mmengine refuses one key in two
# bases, and the configs they inherit set these keys already. The evaluator is the
# recipe's (mIoU).
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

# The 500 iterations of ../_base_/from_scratch.py, validated and checkpointed at the end.
toy_train_cfg = dict(type='IterBasedTrainLoop', max_iters=500, val_interval=500)
toy_default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=500, max_keep_ckpts=1))
