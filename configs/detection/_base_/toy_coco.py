# The toy shapes dataset (3 classes, 256x256 images, train/val splits; generate it with
# tools/dataset/make_toy_coco.py) and the short from-scratch fp32 schedule for CPUs that
# configs/detection/toy/*.py train with. Those configs list this file next to their model
# config and take the toy_* values by name (`train_dataloader = _base_.toy_train_dataloader`):
# mmengine does not allow one key in two bases, and the model configs already set these.
metainfo = dict(
    classes=('rectangle', 'ellipse', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)])
image_scale = (256, 256)

toy_data_root = 'data/toy_coco/'
toy_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
toy_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Loading in the main process: the images are tiny and the cores do the training.
toy_train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=toy_data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=toy_train_pipeline))
toy_val_dataloader = dict(
    toy_train_dataloader,
    dataset=dict(
        toy_train_dataloader['dataset'],
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=toy_test_pipeline))
toy_val_evaluator = dict(ann_file=toy_data_root + 'annotations/instances_val.json')

# 8 epochs of the default 48 training images (192 iterations at batch size 2), validated
# at the end: after a 20-iteration warm-up the lr is constant, then x0.1 for the last 2
# epochs. With another train_cfg.max_epochs, move param_scheduler.1.milestones with it
# (tools/run_demo.sh and tools/toy_learning_curve_det.py do).
max_epochs = 8
toy_train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
toy_param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=True, milestones=[max_epochs - 2], gamma=0.1),
]
# Drawn predictions (tools/test.py --show-dir) keep scores of at least 0.7: after the
# short schedule a shape is often also proposed, less confidently, as another class.
toy_default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=2),
    visualization=dict(score_thr=0.7))
# fp32 (no AMP), AdamW at lr 1e-3, 10x the fine-tuning lr since random weights need larger
# steps; gradients clipped to norm 10, which keeps the first, large-loss iterations of a
# random network from diverging; no weight decay on norms and the position embedding.
toy_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
