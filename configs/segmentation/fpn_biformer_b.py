# Semantic FPN, BiFormer-B backbone, ADE20K 512x512, 80k iterations (official: 49.9 mIoU,
# drop path 0.3).
_base_ = './_base_/fpn_biformer_80k_ade20k.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/biformer_base_best.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
