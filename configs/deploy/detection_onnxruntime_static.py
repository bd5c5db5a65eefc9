# RetinaNet (any mmdet detector) with a BiFormer backbone -> onnxruntime, static shape:
# the graph only takes the shape of the image it was converted with.
#   dets (N, num_dets, 5): x1, y1, x2, y2, score;  labels (N, num_dets)
_base_ = ['./_base_/mmdet.py']
