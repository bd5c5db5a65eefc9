# Mask R-CNN with a BiFormer backbone -> onnxruntime, static shape: the graph only
# takes the shape of the image it was converted with.
#   dets (N, num_dets, 5): x1, y1, x2, y2, score;  labels (N, num_dets);
#   masks (N, num_dets, 28, 28): the mask head's probabilities in each box, pasted into
#   the image by mmdeploy's End2EndModel (export_postprocess_mask=False, as mmdeploy's
#   own configs).
_base_ = ['./_base_/mmdet.py']

onnx_config = dict(output_names=['dets', 'labels', 'masks'])
codebase_config = dict(post_processing=dict(export_postprocess_mask=False))
