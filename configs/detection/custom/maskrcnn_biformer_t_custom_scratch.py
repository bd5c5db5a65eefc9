# Mask R-CNN + FPN, BiFormer-T backbone, on your own COCO-format dataset
# (./maskrcnn_biformer_t_custom.py: set the dataset there), trained from scratch: no
# ImageNet weights, for small datasets. The optimizer and schedule are those of
# ../_base_/from_scratch.py, which the toy configs (configs/detection/toy/) train with;
# docs/own_data.md has the measurements. If you copy maskrcnn_biformer_t_custom.py, copy
# this file too and point the first _base_ at your copy (and, elsewhere than this folder,
# the second at our ../_base_/from_scratch.py).
#
#   python tools/train.py configs/detection/custom/maskrcnn_biformer_t_custom_scratch.py
_base_ = ['./maskrcnn_biformer_t_custom.py', '../_base_/from_scratch.py']

model = dict(
    backbone=dict(
        # No ImageNet weights: start from random initialisation (no checkpoint needed).
        init_cfg=None,
        # The fine-tuning recipe freezes the BatchNorm statistics (of the stem and the
        # downsampling layers) at their ImageNet values; from scratch there are none,
        # so they must learn.
        norm_eval=False))

# The schedule of ../_base_/from_scratch.py (8 epochs, lr x0.1 for the last 2, a
# 20-iteration warm-up) with its lengths set here, validated after every epoch. With
# another max_epochs, set milestones with it (train_cfg and param_scheduler were built
# from the values of the file that defines them: here).
max_epochs = 8
milestones = [max_epochs - 2]
warmup_iters = 20
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(_base_.scratch_param_scheduler[0], end=warmup_iters),
    dict(_base_.scratch_param_scheduler[1], milestones=milestones),
]
# AdamW at lr 1e-3 with gradient clipping, fp32: ../_base_/from_scratch.py gives the
# reasons. --auto-scale-lr scales the lr from the batch it was set for: 2 images on one
# GPU.
optim_wrapper = _base_.scratch_optim_wrapper
auto_scale_lr = dict(base_batch_size=2)
# Keep the last two epochs' checkpoints (the COCO runtime keeps them all).
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
