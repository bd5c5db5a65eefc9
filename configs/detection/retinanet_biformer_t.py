# RetinaNet + FPN, BiFormer-T backbone, COCO 2017, 1x schedule. No official T config
# exists: T follows the official S recipe (drop path 0.2). T has the channels of S
# (64-512), so the FPN of the base config fits.
_base_ = './_base_/retinanet_biformer_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint='checkpoints/biformer_tiny_best.pth')))
