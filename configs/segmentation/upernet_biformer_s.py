# UperNet, BiFormer-S backbone, ADE20K 512x512, 160k iterations (official: 49.8 mIoU,
# drop path 0.3).
_base_ = './_base_/upernet_biformer_160k_ade20k.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/biformer_small_best.pth')))
