# RetinaNet + FPN, BiFormer-S backbone, COCO 2017, 1x schedule (official: 45.9 box AP,
# drop path 0.2).
_base_ = './_base_/retinanet_biformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/biformer_small_best.pth')))
