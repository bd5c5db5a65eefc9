# Semantic FPN or UperNet with a BiFormer backbone -> onnxruntime at 512x512: mmdeploy
# resizes every image to 512x512 (no aspect ratio kept) before the graph.
#   output (N, 1, 512, 512): the label map (with_argmax=False: the logits (N, C, H, W))
# UperNet: mmdeploy replaces the pooling module's adaptive_avg_pool2d by an avg_pool2d
# whose kernel is the stride-32 map size // bins: the same where the map divides by
# every bin (1, 2, 3, 6: inputs that are multiples of 192); at 512x512 (a 16x16 map) the
# 3x3 and 6x6 bins differ from mmseg's (docs/deploy.md).
_base_ = ['./_base_/onnxruntime.py']

onnx_config = dict(input_shape=[512, 512])
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=True)
