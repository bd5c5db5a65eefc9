# Mask R-CNN + BiFormer-T on the toy shapes dataset (3 classes, 256x256 images, train/val
# splits; generate it with tools/dataset/make_toy_coco.py), trained from scratch with a
# short fp32 schedule for CPUs: the config of maskrcnn_biformer_t.py with the toy data.
#
#   python tools/dataset/make_toy_coco.py
#   python tools/train.py configs/detection/toy/maskrcnn_biformer_t_toy_coco.py
#
# Another backbone size: inherit this file and set model.backbone (and model.neck) as
# configs/detection/maskrcnn_biformer_s.py / _b.py do.
_base_ = ['../maskrcnn_biformer_t.py', '../_base_/toy_coco.py']

# The toy data (../_base_/toy_coco.py).
data_root = _base_.toy_data_root
train_pipeline = _base_.toy_train_pipeline
test_pipeline = _base_.toy_test_pipeline
train_dataloader = _base_.toy_train_dataloader
val_dataloader = test_dataloader = _base_.toy_val_dataloader
val_evaluator = test_evaluator = _base_.toy_val_evaluator

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

# The short from-scratch schedule and optimizer (../_base_/toy_coco.py).
train_cfg = _base_.toy_train_cfg
param_scheduler = _base_.toy_param_scheduler
optim_wrapper = _base_.toy_optim_wrapper
default_hooks = _base_.toy_default_hooks
