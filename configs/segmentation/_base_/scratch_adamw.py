# The optimizer of the from-scratch configs (toy/ and custom/*_scratch.py): AdamW at lr
# 5e-4, 2.5x the fine-tuning lr since random weights need larger steps; gradients clipped
# to norm 10, which keeps the first, large-loss iterations of a random network from
# diverging; no weight decay on norms and the position embedding; fp32 (no AMP). A config
# takes it with `optim_wrapper = _base_.scratch_optim_wrapper`: mmengine does not allow
# one key in two bases, and the model configs already set optim_wrapper.
scratch_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
