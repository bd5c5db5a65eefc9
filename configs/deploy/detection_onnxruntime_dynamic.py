# RetinaNet (any mmdet detector) with a BiFormer backbone -> onnxruntime, dynamic
# batch, height and width.
#   dets (N, num_dets, 5): x1, y1, x2, y2, score;  labels (N, num_dets)
_base_ = ['./_base_/mmdet.py']

onnx_config = dict(
    dynamic_axes=dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        dets={0: 'batch', 1: 'num_dets'},
        labels={0: 'batch', 1: 'num_dets'}))
