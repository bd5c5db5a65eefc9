# Semantic FPN, BiFormer-S backbone, ADE20K 512x512, 80k iterations (official: 48.9 mIoU,
# drop path 0.15).
_base_ = './_base_/fpn_biformer_80k_ade20k.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.15,
        init_cfg=dict(checkpoint='checkpoints/biformer_small_best.pth')))
