# Semantic FPN, BiFormer-T backbone, ADE20K 512x512, 80k iterations (no official result
# for T; its drop path rate is scaled down from S's 0.15). T has the channels of S.
_base_ = './_base_/fpn_biformer_80k_ade20k.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.1,
        init_cfg=dict(checkpoint='checkpoints/biformer_tiny_best.pth')))
