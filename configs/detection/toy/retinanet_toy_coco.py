# Overlay: point a RetinaNet config of configs/detection/ at the toy shapes dataset
# (generate it with tools/dataset/make_toy_coco.py), 256x256, short fp32 schedule.
#
#   python tools/train.py configs/detection/retinanet_biformer_t.py \
#       --overlay configs/detection/toy/retinanet_toy_coco.py
_base_ = './_base_/toy_coco.py'

model = dict(bbox_head=dict(num_classes=3))
