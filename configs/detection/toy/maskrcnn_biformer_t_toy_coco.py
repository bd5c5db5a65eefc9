# Mask R-CNN + BiFormer-T on the toy shapes dataset (3 classes, 256x256 images, train/val
# splits; generate it with tools/dataset/make_toy_coco.py), trained from scratch with a
# short fp32 schedule for CPUs: the config of maskrcnn_biformer_t.py with the toy data.
#
#   python tools/dataset/make_toy_coco.py
#   python tools/train.py configs/detection/toy/maskrcnn_biformer_t_toy_coco.py
#
# Another backbone size: inherit this file and set model.backbone (and model.neck) as
# configs/detection/maskrcnn_biformer_s.py / _b.py do.
_base_ = '../maskrcnn_biformer_t.py'

data_root = 'data/toy_coco/'
metainfo = dict(
    classes=('rectangle', 'ellipse', 'triangle'),
    palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)])
image_scale = (256, 256)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
# Loading in the main process: the images are tiny and the cores do the training.
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# No ImageNet weights: the backbone starts from scratch, so its BatchNorms learn their
# statistics (the COCO recipe keeps pretrained statistics frozen with norm_eval=True).
# 3 classes; fewer proposals and RoIs than for COCO keep a CPU step short.
model = dict(
    backbone=dict(init_cfg=None, norm_eval=False),
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

# 8 epochs of the default 48 training images (192 iterations at batch size 2), validated
# at the end: after a 20-iteration warm-up the lr is constant, then x0.1 for the last 2
# epochs. With another train_cfg.max_epochs, move param_scheduler.1.milestones with it
# (tools/run_demo.sh and tools/toy_learning_curve_det.py do).
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=True, milestones=[max_epochs - 2], gamma=0.1),
]
# fp32 (no AMP), AdamW with a higher lr than the COCO recipe since nothing is pretrained.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
# Drawn predictions (tools/test.py --show-dir) keep scores of at least 0.7: after the
# short schedule a shape is often also proposed, less confidently, as another class.
default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=1, max_keep_ckpts=2),
    visualization=dict(score_thr=0.7))
