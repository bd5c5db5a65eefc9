# Overlay: point a Semantic FPN config of configs/segmentation/ at the toy ADE20K data
# (generate it with tools/dataset/make_toy_ade20k.py): 128x128 crops, BN in the head,
# short fp32 schedule, no ImageNet weights.
#
#   python tools/train.py configs/segmentation/fpn_biformer_t.py \
#       --overlay configs/segmentation/toy/fpn_toy_ade20k.py
_base_ = './_base_/toy_ade20k.py'
