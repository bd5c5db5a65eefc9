# Semantic FPN with a BiFormer backbone -> onnxruntime, dynamic batch, height and width.
#   output (N, 1, H, W): the label map (with_argmax=False: the logits (N, C, H, W))
# Not for UperNet: mmdeploy bakes the pooling module's kernel sizes (see the static
# config) in at the conversion size, so other sizes pool wrongly; mmdeploy lists
# UperNet as static only.
_base_ = ['./_base_/onnxruntime.py']

onnx_config = dict(
    dynamic_axes=dict(
        input={0: 'batch', 2: 'height', 3: 'width'},
        output={0: 'batch', 2: 'height', 3: 'width'}))
codebase_config = dict(type='mmseg', task='Segmentation', with_argmax=True)
