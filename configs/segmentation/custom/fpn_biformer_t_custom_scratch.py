# Semantic FPN, BiFormer-T backbone, on your own segmentation dataset
# (./fpn_biformer_t_custom.py: set the dataset there), trained from scratch: no ImageNet
# weights, for small datasets. The optimizer, schedule and norms are those of
# ../_base_/from_scratch.py, which the toy configs (configs/segmentation/toy/) train
# with. If you copy fpn_biformer_t_custom.py, copy this file too and point the first
# _base_ at your copy (and, elsewhere than this folder, the second at our
# ../_base_/from_scratch.py).
#
#   python tools/train.py configs/segmentation/custom/fpn_biformer_t_custom_scratch.py
_base_ = ['./fpn_biformer_t_custom.py', '../_base_/from_scratch.py']

# BN instead of the recipe's SyncBN in the backbone and the head (../_base_/from_scratch.py).
norm_cfg = _base_.scratch_norm_cfg
model = dict(
    backbone=dict(
        # No ImageNet weights: start from random initialisation (no checkpoint needed).
        init_cfg=None,
        norm_cfg=norm_cfg,
        # The BatchNorm statistics must learn: there are no pretrained ones to keep.
        norm_eval=False),
    decode_head=dict(norm_cfg=norm_cfg))

# The schedule of ../_base_/from_scratch.py (a 50-iteration warm-up, then linear decay
# to 1e-5) with its lengths set here; validation and the checkpoint at the end. With
# another max_iters, set warmup_iters and val_interval with it (train_cfg,
# param_scheduler and the checkpoint hook were built from the values of the file that
# defines them: here).
max_iters = 500
warmup_iters = 50
val_interval = max_iters
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
param_scheduler = [
    dict(_base_.scratch_param_scheduler[0], end=warmup_iters),
    dict(_base_.scratch_param_scheduler[1], begin=warmup_iters, end=max_iters),
]
# AdamW at lr 5e-4 with gradient clipping, fp32: ../_base_/from_scratch.py gives the
# reasons. --auto-scale-lr scales the lr from the batch it was set for: 4 images on one
# GPU.
optim_wrapper = _base_.scratch_optim_wrapper
auto_scale_lr = dict(base_batch_size=4)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=val_interval, max_keep_ckpts=1))
