# Mask R-CNN + BiFormer-T on the toy shapes dataset (3 classes, 256x256 images, train/val
# splits; generate it with tools/dataset/make_toy_coco.py), trained from scratch in fp32
# on a CPU: the own-data config ../custom/maskrcnn_biformer_t_custom_scratch.py (the
# model of ../maskrcnn_biformer_t.py, the schedule of ../_base_/from_scratch.py) pointed
# at the toy data.
#
#   python tools/dataset/make_toy_coco.py
#   python tools/train.py configs/detection/toy/maskrcnn_biformer_t_toy_coco.py
#
# Another backbone size: inherit this file and set model.backbone (and model.neck) as
# configs/detection/maskrcnn_biformer_s.py / _b.py do.
_base_ = ['../custom/maskrcnn_biformer_t_custom_scratch.py', '../_base_/toy_coco.py']

# The toy data (../_base_/toy_coco.py) in every dataloader and evaluator; the variables
# of the own-data config's dataset block (classes, image_scale, ...) stay as they are,
# unused.
data_root = _base_.toy_data_root
test_pipeline = _base_.toy_test_pipeline  # what mmdeploy reads
train_dataloader = _base_.toy_train_dataloader
val_dataloader = test_dataloader = _base_.toy_val_dataloader
val_evaluator = test_evaluator = _base_.toy_val_evaluator

# 3 classes; fewer proposals and RoIs than for COCO keep a CPU step short.
model = dict(
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))

# Validated at the end only; logs every 10 iterations (../_base_/toy_coco.py).
train_cfg = _base_.toy_train_cfg
default_hooks = _base_.toy_default_hooks
