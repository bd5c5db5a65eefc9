# RetinaNet + FPN, BiFormer-B backbone, COCO 2017, 1x schedule (official: 47.1 box AP,
# drop path 0.3).
_base_ = './_base_/retinanet_biformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/biformer_base_best.pth')),
    neck=dict(in_channels=[192, 384, 768]))
