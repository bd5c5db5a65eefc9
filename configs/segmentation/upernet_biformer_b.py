# UperNet, BiFormer-B backbone, ADE20K 512x512, 160k iterations (official: 51.0 mIoU,
# drop path 0.4).
_base_ = './_base_/upernet_biformer_160k_ade20k.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.4,
        init_cfg=dict(checkpoint='checkpoints/biformer_base_best.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
