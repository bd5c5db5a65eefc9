# Mask R-CNN + FPN, BiFormer-T backbone, on your own COCO-format dataset
# (./maskrcnn_biformer_t_custom.py: set the dataset there), trained from scratch: no
# ImageNet weights, for small datasets. These are the settings of the toy configs
# (configs/detection/toy/), which learn in a few epochs on a few dozen images where the
# fine-tuning recipe barely moves (docs/own_data.md has the measurements). If you copy
# maskrcnn_biformer_t_custom.py, copy this file too and point _base_ at your copy.
#
#   python tools/train.py configs/detection/custom/maskrcnn_biformer_t_custom_scratch.py
_base_ = './maskrcnn_biformer_t_custom.py'

model = dict(
    backbone=dict(
        # No ImageNet weights: start from random initialisation (no checkpoint needed).
        init_cfg=None,
        # The fine-tuning recipe freezes the BatchNorm statistics (of the stem and the
        # downsampling layers) at their ImageNet values; from scratch there are none,
        # so they must learn.
        norm_eval=False))

# 8 epochs, lr x0.1 for the last 2, after a 20-iteration linear warm-up: one epoch of
# 40 images at batch size 2, short enough for any run on such data (the COCO recipe's
# 500 iterations outlast 8 epochs of 40 images). Validation after every epoch. With
# another max_epochs, set milestones with it (train_cfg and param_scheduler were built
# from the values of the file that defines them: here).
max_epochs = 8
milestones = [max_epochs - 2]
warmup_iters = 20
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=milestones,
         gamma=0.1),
]
# AdamW at lr 1e-3, 10x the fine-tuning lr: random weights need larger steps. Gradients
# are clipped to norm 10, which keeps the first, large-loss iterations of a random
# network from diverging. No weight decay on norms and the position embedding. fp32
# (no AMP), as measured.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
# --auto-scale-lr scales the lr from the batch it was set for: 2 images on one GPU.
auto_scale_lr = dict(base_batch_size=2)
# Keep the last two epochs' checkpoints (the COCO runtime keeps them all).
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
