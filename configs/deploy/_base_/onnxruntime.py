# What every deploy config here shares: mmdeploy 1.3.1's legacy ONNX export (the
# torch.onnx.export tracer of torch 2.1, opset 11) for the onnxruntime backend. These
# configs are complete: they need no mmdeploy checkout (mmdeploy's own configs/ folder
# is not part of its wheel). docs/deploy.md, "mmdeploy (classic stack)", shows the use.
onnx_config = dict(
    type='onnx',
    export_params=True,
    keep_initializers_as_inputs=False,
    opset_version=11,
    save_file='end2end.onnx',
    input_names=['input'],
    output_names=['output'],
    # None: the graph takes the shape of the image given to the conversion (after the
    # model config's test pipeline), or any shape where dynamic_axes say so.
    input_shape=None,
    # mmdeploy's TorchScript graph optimiser is not in its wheel (with True it logs "Can
    # not optimize model" and skips it): off, as verified.
    optimize=False)
backend_config = dict(type='onnxruntime')
