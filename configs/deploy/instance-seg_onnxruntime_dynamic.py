# Mask R-CNN with a BiFormer backbone -> onnxruntime, dynamic batch, height and width.
#   dets (N, num_dets, 5): x1, y1, x2, y2, score;  labels (N, num_dets);
#   masks (N, num_dets, 28, 28): the mask head's probabilities in each box, pasted into
#   the image by mmdeploy's End2EndModel.
_base_ = ['./instance-seg_onnxruntime_static.py']

onnx_config = dict(
    dynamic_axes=dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        dets={0: 'batch', 1: 'num_dets'},
        labels={0: 'batch', 1: 'num_dets'},
        masks={0: 'batch', 1: 'num_dets', 2: 'height', 3: 'width'}))
