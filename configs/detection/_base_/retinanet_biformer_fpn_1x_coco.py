# RetinaNet + FPN with a BiFormer backbone on COCO 2017, 1x schedule: the official
# BiFormer recipe (object_detection/configs/coco/retinanet.1x.biformer_*.py, mmdet 2.x) in
# mmdet 3.x terms; tests/test_recipes.py checks it against the official facts in
# ../shared/reference/official_recipes.json. The architecture-specific values are those of
# BiFormer-S; the T/S/B configs next to this directory set their own.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
# biformer_mm registers BiFormer; biformer_mm.engine lets mmengine's weights-only loads
# (torch>=2.6) read the training checkpoints these configs write (also for
# `mim test mmdet`).
custom_imports = dict(imports=['biformer_mm', 'biformer_mm.engine'], allow_failed_imports=False)
default_scope = 'mmdet'

# COCO 2017 root: data/coco/ (relative to the working directory) unless the environment
# variable COCO_ROOT is set (keep the trailing slash).
data_root = '{{$COCO_ROOT:data/coco/}}'
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

# The official FPN takes stages 1-3 (start_level=1) with extra convs on the input
# (P3-P7). Returning only those stages from the backbone builds the same network without
# a stage-0 output norm that nothing would use (so DDP needs no find_unused_parameters).
model = dict(
    backbone=dict(
        _delete_=True,
        type='BiFormer',
        arch='small',
        n_win=16,
        auto_pad=True,
        drop_path_rate=0.2,
        out_indices=(1, 2, 3),
        # The official detection backbone keeps every BatchNorm (stem and downsampling
        # layers) in eval mode while training: the ImageNet statistics stay frozen.
        norm_eval=True,
        # Official ImageNet-1k weights, relative to the working directory. A missing file
        # stops tools/train.py before training, naming the expected path; set init_cfg=None
        # to train from scratch.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/biformer_small_best.pth')),
    neck=dict(
        in_channels=[128, 256, 512],
        out_channels=256,
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))

# AdamW with weight decay 1e-4 on every parameter (the official RetinaNet exempts none);
# fp16 mixed precision with a static loss scale of 512 (tools/train.py falls back to fp32
# without a GPU). The 1x schedule (12 epochs, lr x0.1 at epochs 8 and 11, 500-iteration
# linear warm-up from 0.001 x lr) is mmdet's, as in the official config.
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    dtype='float16',
    loss_scale=512.,
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4))

# The lr is for 8 GPUs x 2 images; --auto-scale-lr rescales it to the actual batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)
