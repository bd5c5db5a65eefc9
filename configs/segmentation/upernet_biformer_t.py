# UperNet, BiFormer-T backbone, ADE20K 512x512, 160k iterations. No official T config
# exists: T follows the official S recipe (drop path 0.3). T has the channels of S.
_base_ = './_base_/upernet_biformer_160k_ade20k.py'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='checkpoints/biformer_tiny_best.pth')))
