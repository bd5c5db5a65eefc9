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
_base_ = ['../fpn_biformer_t.py', '../_base_/toy_ade20k.py']

# The toy data (../_base_/toy_ade20k.py).
data_root = _base_.toy_data_root
crop_size = _base_.toy_crop_size
train_pipeline = _base_.toy_train_pipeline
test_pipeline = _base_.toy_test_pipeline
train_dataloader = _base_.toy_train_dataloader
val_dataloader = test_dataloader = _base_.toy_val_dataloader
val_evaluator = test_evaluator = _base_.toy_val_evaluator

# No ImageNet weights: the backbone starts from scratch. BN instead of SyncBN in the
# backbone and the head, so that multi-process CPU runs work too.
norm_cfg = _base_.toy_norm_cfg
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None, norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg))

# fp32 (no AMP), AdamW with a higher lr than the ADE20K recipes since nothing is
# pretrained, linear warm-up then linear decay (../_base_/toy_ade20k.py).
train_cfg = _base_.toy_train_cfg
param_scheduler = _base_.toy_param_scheduler
optim_wrapper = _base_.toy_optim_wrapper
default_hooks = _base_.toy_default_hooks
