# RetinaNet + FPN, BiFormer-B backbone, COCO 2017, 1x schedule.
_base_ = './_base_/retinanet_biformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/biformer_base_best.pth')),
    neck=dict(in_channels=[192, 384, 768]))
