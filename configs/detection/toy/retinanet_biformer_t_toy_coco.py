# RetinaNet + BiFormer-T on the toy shapes dataset (3 classes, 256x256 images, train/val
# splits; generate it with tools/dataset/make_toy_coco.py), trained from scratch in fp32
# on a CPU: the config of ../retinanet_biformer_t.py with the toy data
# (../_base_/toy_coco.py) and the from-scratch optimizer and schedule
# (../_base_/from_scratch.py).
#
#   python tools/dataset/make_toy_coco.py
#   python tools/train.py configs/detection/toy/retinanet_biformer_t_toy_coco.py
#
# Another backbone size: inherit this file and set model.backbone (and model.neck) as
# configs/detection/retinanet_biformer_s.py / _b.py do.
_base_ = ['../retinanet_biformer_t.py', '../_base_/toy_coco.py', '../_base_/from_scratch.py']

data_root = _base_.toy_data_root
test_pipeline = _base_.toy_test_pipeline  # what mmdeploy reads
train_dataloader = _base_.toy_train_dataloader
val_dataloader = test_dataloader = _base_.toy_val_dataloader
val_evaluator = test_evaluator = _base_.toy_val_evaluator

# No ImageNet weights: the backbone starts from scratch, so its BatchNorms learn their
# statistics (the COCO recipe keeps pretrained statistics frozen with norm_eval=True).
# 3 classes.
model = dict(backbone=dict(init_cfg=None, norm_eval=False), bbox_head=dict(num_classes=3))

optim_wrapper = _base_.scratch_optim_wrapper
param_scheduler = _base_.scratch_param_scheduler
train_cfg = _base_.toy_train_cfg
default_hooks = _base_.toy_default_hooks
