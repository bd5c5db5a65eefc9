# Mask R-CNN + FPN, BiFormer-S backbone, COCO 2017, 1x schedule (official: 47.8 box AP,
# 43.2 mask AP, drop path 0.2).
_base_ = './_base_/maskrcnn_biformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/biformer_small_best.pth')))
