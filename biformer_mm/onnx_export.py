"""ONNX export of a network of one image tensor (a :class:`~biformer_mm.analysis.TensorMode`
network, or a backbone), checked in onnxruntime against PyTorch (docs/deploy.md).
``tools/deploy/export_onnx.py`` is its command line."""
import inspect
from typing import List, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

INPUT_NAME = 'inputs'
NestedTensors = Union[Tensor, Sequence['NestedTensors'], dict]


def flatten_outputs(outputs: NestedTensors) -> List[Tensor]:
    """The tensors of a nested output in the order torch.onnx gives the graph's outputs."""
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return [t for item in outputs for t in flatten_outputs(item)]


def onnx_errors(path: str, network: nn.Module, inputs: Tensor) -> List[float]:
    """Per output, the largest absolute difference between onnxruntime's outputs of the
    graph at ``path`` and ``network(inputs)``, relative to the output's largest magnitude
    where that is above 1; infinite where either holds a NaN or an infinity.

    Raises:
        ValueError: If the graph's outputs differ from the network's in number or shape.
    """
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    actual = session.run(None, {INPUT_NAME: inputs.numpy()})
    with torch.no_grad():
        expected = [t.numpy() for t in flatten_outputs(network(inputs))]
    if len(actual) != len(expected):
        raise ValueError(f'{path} has {len(actual)} outputs, the network {len(expected)}.')
    errors = []
    for i, (a, e) in enumerate(zip(actual, expected)):
        if a.shape != e.shape:
            raise ValueError(f'output{i} of {path} has the shape {list(a.shape)}, the '
                             f'network\'s {list(e.shape)}.')
        finite = np.isfinite(a).all() and np.isfinite(e).all()  # NaN compares as no error
        errors.append(float(np.abs(a - e).max(initial=0.) / max(1., np.abs(e).max(initial=0.)))
                      if finite else float('inf'))
    return errors


def other_size_input(inputs: Tensor) -> Tensor:
    """The random input dynamic graphs are checked with: 32 rows and 64 columns more
    than ``inputs`` (a detector's size divisor is kept)."""
    height, width = inputs.shape[2:]
    return torch.randn(1, inputs.shape[1], height + 32, width + 64,
                       generator=torch.Generator().manual_seed(0))


def export_onnx(network: nn.Module, inputs: Tensor, path: str, dynamic: bool = False,
                opset: int = 17, dynamo: bool = False, tolerance: float = 1e-4) -> List[str]:
    """Export ``network`` (a :class:`TensorMode` network, or any module of one image
    tensor) on ``inputs`` to ``path`` (legacy exporter, or torch.onnx's dynamo one) and
    return the output names.

    Raises:
        ValueError: For a network in training mode, a two-stage detector, or a dynamic
            graph that fails in onnxruntime, gives other outputs or differs from PyTorch by
            more than ``tolerance`` on :func:`other_size_input`.
    """
    if network.training:
        raise ValueError(
            'export_onnx needs the network in eval mode (network.eval()): in training mode '
            'BatchNorm would record and export the example\'s batch statistics.')
    if getattr(getattr(network, 'model', None), 'with_rpn', False):
        raise ValueError(
            f'{type(network.model).__name__} is a two-stage detector: its tensor mode '
            f'returns the RoI heads\' outputs without the RPN proposals they refer to (and '
            f'makes those proposals for the example\'s image size), so its graph could not '
            f'be decoded into detections. Deploy it with mmdeploy on the classic stack '
            f'(docs/deploy.md), or export a one-stage detector or a segmentor.')
    with torch.no_grad():
        names = [f'output{i}' for i in range(len(flatten_outputs(network(inputs))))]
    kwargs: dict = dict(opset_version=opset, input_names=[INPUT_NAME], output_names=names)
    if dynamo:
        auto = torch.export.Dim.AUTO
        kwargs.update(dynamo=True, dynamic_shapes=({2: auto, 3: auto}, ) if dynamic else None)
    else:
        if 'dynamo' in inspect.signature(torch.onnx.export).parameters:  # torch >= 2.5
            kwargs.update(dynamo=False)
        if dynamic:
            kwargs.update(dynamic_axes={INPUT_NAME: {2: 'height', 3: 'width'}})
    # Without autograd: the legacy exporter runs the forward, and recorded gradients
    # would keep every activation alive (5x the peak memory for BiFormer-S).
    with torch.no_grad():
        torch.onnx.export(network, (inputs, ), path, **kwargs)
    if not dynamic:
        return names
    other = other_size_input(inputs)
    try:
        difference = max(onnx_errors(path, network, other))
        problem = f'differs from PyTorch by {difference:.3g}' if difference > tolerance else ''
    except Exception as error:  # onnxruntime's own types (pybind11's) for wrong shapes
        if not (isinstance(error, ValueError)  # other outputs than the network's
                or type(error).__module__.startswith('onnxruntime')):
            raise
        problem = f'fails ({error})'
    if problem:
        raise ValueError(f'The dynamic graph {path} {problem} at {other.shape[2]}x'
                         f'{other.shape[3]}, a size the export did not see: a module of the '
                         f'network computes sizes in Python, which tracing fixed at the '
                         f'example\'s size (mmseg\'s Upsample and adaptive pooling do); '
                         f'export with static sizes (without --dynamic).')
    return names
