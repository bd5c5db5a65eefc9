# Training from random initialisation on a small dataset: the optimizer and schedule that
# custom/maskrcnn_biformer_t_custom_scratch.py and the toy configs (toy/*.py) share. They
# learn in a few epochs on a few dozen images, where the fine-tuning recipe barely moves
# (docs/own_data.md). A config lists this file next to the one it inherits and takes the
# values by name (`optim_wrapper = _base_.scratch_optim_wrapper`): mmengine refuses one
# key in two bases, and the model configs set optim_wrapper and param_scheduler already.

# fp32 (no AMP), as measured. AdamW at lr 1e-3, 10x the fine-tuning lr: random weights
# need larger steps. Gradients are clipped to norm 10, which keeps the first, large-loss
# iterations of a random network from diverging. No weight decay on norms and the
# position embedding.
scratch_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
# For 8 epochs: lr x0.1 for the last 2, after a 20-iteration linear warm-up from 0.01 x
# lr: one epoch of 40 images at batch size 2, short enough for any run on such data (the
# COCO recipe's 500 iterations outlast 8 epochs of 40 images). The steps have no end:
# with another train_cfg.max_epochs, only the milestones move.
scratch_param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=True, milestones=[6], gamma=0.1),
]
