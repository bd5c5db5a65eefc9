# The toy shapes dataset (3 classes, 256x256 images, train/val splits; generate it with
# tools/dataset/make_toy_coco.py) for configs/detection/toy/*.py. Those configs list this
# file next to the one they inherit and take the values by name
# (`train_dataloader = _base_.toy_train_dataloader`): mmengine refuses one key in two
# bases, and the configs they inherit set these keys already.
toy_data_root = 'data/toy_coco/'
toy_image_scale = (256, 256)
toy_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=toy_image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
toy_test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=toy_image_scale, keep_ratio=True),
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
        metainfo=dict(
            classes=('rectangle', 'ellipse', 'triangle'),
            palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)]),
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

# The 8 epochs of ../_base_/from_scratch.py on the default 48 training images (192
# iterations at batch size 2), validated at the end. With another train_cfg.max_epochs,
# move param_scheduler.1.milestones with it (tools/run_demo.sh and
# tools/toy_learning_curve.py det do).
toy_train_cfg = dict(max_epochs=8, val_interval=8)
# Drawn predictions (tools/test.py --show-dir) keep scores of at least 0.7: after the
# short schedule a shape is often also proposed, less confidently, as another class.
toy_default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=2),
    visualization=dict(score_thr=0.7))
