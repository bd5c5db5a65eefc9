# Overlay: point an UperNet config of configs/segmentation/ at the toy ADE20K data
# (generate it with tools/dataset/make_toy_ade20k.py): 128x128 crops, BN in both heads,
# short fp32 schedule, no ImageNet weights.
#
#   python tools/train.py configs/segmentation/upernet_biformer_t.py \
#       --overlay configs/segmentation/toy/upernet_toy_ade20k.py
_base_ = './_base_/toy_ade20k.py'

model = dict(auxiliary_head=dict(norm_cfg=dict(type='BN', requires_grad=True)))
