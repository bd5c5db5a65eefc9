# Semantic FPN + BiFormer-T on the toy ADE20K-layout street scenes (generate them with
# tools/dataset/make_toy_ade20k.py), read by mmseg's ADE20KDataset at 128x128 crops,
# trained from scratch in fp32 on a CPU: the own-data config
# ../custom/fpn_biformer_t_custom_scratch.py (the model of ../fpn_biformer_t.py; BN, the
# optimizer and schedule of ../_base_/from_scratch.py) pointed at the toy data.
#
#   python tools/dataset/make_toy_ade20k.py
#   python tools/train.py configs/segmentation/toy/fpn_biformer_t_toy_ade20k.py
#
# Another backbone size: inherit this file and set model.backbone (and for B
# model.neck.in_channels) as configs/segmentation/fpn_biformer_s.py / _b.py do.
_base_ = ['../custom/fpn_biformer_t_custom_scratch.py', '../_base_/toy_ade20k.py']

# The toy data (../_base_/toy_ade20k.py) in every dataloader; the variables of the
# own-data config's dataset block (classes, crop_size, ...) stay as they are, unused.
data_root = _base_.toy_data_root
test_pipeline = _base_.toy_test_pipeline
train_dataloader = _base_.toy_train_dataloader
val_dataloader = test_dataloader = _base_.toy_val_dataloader

# ADE20K's 150 classes at 128x128 crops.
model = dict(data_preprocessor=dict(size=_base_.toy_crop_size),
             decode_head=dict(num_classes=150))

# Logs every 10 iterations (../_base_/toy_ade20k.py).
default_hooks = _base_.toy_default_hooks
