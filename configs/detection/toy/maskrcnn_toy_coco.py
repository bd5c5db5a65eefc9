# Overlay: point a Mask R-CNN config of configs/detection/ at the toy shapes dataset
# (generate it with tools/dataset/make_toy_coco.py), 256x256, short fp32 schedule.
#
#   python tools/train.py configs/detection/maskrcnn_biformer_t.py \
#       --overlay configs/detection/toy/maskrcnn_toy_coco.py
_base_ = './_base_/toy_coco.py'

# 3 classes; fewer proposals and RoIs than for COCO keep a CPU step short.
model = dict(
    roi_head=dict(bbox_head=dict(num_classes=3), mask_head=dict(num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300)))
