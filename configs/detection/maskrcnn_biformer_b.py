# Mask R-CNN + FPN, BiFormer-B backbone, COCO 2017, 1x schedule (official: 48.6 box AP,
# 43.7 mask AP, drop path 0.3).
_base_ = './_base_/maskrcnn_biformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/biformer_base_best.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
