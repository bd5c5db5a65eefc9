# UperNet + BiFormer-T on the toy ADE20K-layout street scenes (generate them with
# tools/dataset/make_toy_ade20k.py), read by mmseg's ADE20KDataset at 128x128 crops,
# trained from scratch in fp32 on a CPU: the config of ../upernet_biformer_t.py with the
# toy data (../_base_/toy_ade20k.py) and the from-scratch norms, optimizer and schedule
# (../_base_/from_scratch.py).
#
#   python tools/dataset/make_toy_ade20k.py
#   python tools/train.py configs/segmentation/toy/upernet_biformer_t_toy_ade20k.py
#
# Another backbone size: inherit this file and set model.backbone (and for B the
# in_channels of decode_head and auxiliary_head) as configs/segmentation/upernet_biformer_s.py
# / _b.py do.
_base_ = [
    '../upernet_biformer_t.py', '../_base_/toy_ade20k.py', '../_base_/from_scratch.py'
]

data_root = _base_.toy_data_root
test_pipeline = _base_.toy_test_pipeline
train_dataloader = _base_.toy_train_dataloader
val_dataloader = test_dataloader = _base_.toy_val_dataloader

# No ImageNet weights: the backbone starts from scratch. BN instead of SyncBN in the
# backbone and both heads.
norm_cfg = _base_.scratch_norm_cfg
model = dict(
    data_preprocessor=dict(size=_base_.toy_crop_size),
    backbone=dict(init_cfg=None, norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=dict(norm_cfg=norm_cfg))

optim_wrapper = _base_.scratch_optim_wrapper
param_scheduler = _base_.scratch_param_scheduler
train_cfg = _base_.toy_train_cfg
default_hooks = _base_.toy_default_hooks
