# Training from random initialisation on a small dataset: the optimizer and schedule that
# custom/fpn_biformer_t_custom_scratch.py and the toy configs (toy/*.py) share. They learn
# in a few hundred iterations on a few hundred small images. A config lists this file
# next to the one it inherits and takes the values by name
# (`optim_wrapper = _base_.scratch_optim_wrapper`): mmengine refuses one key in two
# bases, and the model configs set optim_wrapper and param_scheduler already.

# fp32 (no AMP). AdamW at lr 5e-4, 2.5x Semantic FPN's fine-tuning lr (about 8x
# UperNet's): random weights need larger steps. Gradients are clipped to norm 10, which
# keeps the first, large-loss iterations of a random network from diverging. No weight
# decay on norms and the position embedding.
scratch_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(norm_decay_mult=0., custom_keys={'pos_embed': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10., norm_type=2))
# 500 iterations: a 50-iteration linear warm-up from 0.1 x lr, then linear decay to 1e-5.
scratch_param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-5, power=1.0, by_epoch=False, begin=50, end=500),
]
# BN instead of the recipe's SyncBN in the backbone and the heads: identical on one GPU,
# and multi-process CPU runs need it.
scratch_norm_cfg = dict(type='BN', requires_grad=True)
