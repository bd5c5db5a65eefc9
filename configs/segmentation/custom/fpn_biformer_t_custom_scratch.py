# Semantic FPN, BiFormer-T backbone, on your own segmentation dataset
# (./fpn_biformer_t_custom.py: set the dataset there), trained from scratch: no ImageNet
# weights, for small datasets. These are the settings of the toy configs
# (configs/segmentation/toy/), which learn in a few hundred iterations on a few hundred
# small images. If you copy fpn_biformer_t_custom.py, copy this file too and point _base_
# at your copy.
#
#   python tools/train.py configs/segmentation/custom/fpn_biformer_t_custom_scratch.py
_base_ = './fpn_biformer_t_custom.py'

# BN instead of the recipe's SyncBN in the backbone and the head: identical on one GPU,
# and multi-process CPU runs need it.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        # No ImageNet weights: start from random initialisation (no checkpoint needed).
        init_cfg=None,
        norm_cfg=norm_cfg,
        # The BatchNorm statistics must learn: there are no pretrained ones to keep.
        norm_eval=False),
    decode_head=dict(norm_cfg=norm_cfg))

# 500 iterations: a 50-iteration linear warm-up from 0.1 x lr, then linear decay to
# 1e-5; validation and the checkpoint at the end. With another max_iters, set
# warmup_iters and val_interval with it (train_cfg, param_scheduler and the checkpoint
# hook were built from the values of the file that defines them: here).
max_iters = 500
warmup_iters = 50
val_interval = max_iters
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, by_epoch=False, begin=warmup_iters,
         end=max_iters),
]
# AdamW at lr 5e-4, 2.5x the fine-tuning lr: random weights need larger steps. Gradients
# are clipped to norm 10, which keeps the first, large-loss iterations of a random
# network from diverging. No weight decay on norms and the position embedding. fp32 (no
# AMP), as in the toy configs.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
# --auto-scale-lr scales the lr from the batch it was set for: 4 images on one GPU.
auto_scale_lr = dict(base_batch_size=4)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=val_interval, max_keep_ckpts=1))
