"""The network of a detector or segmentor as an ONNX graph, and onnxruntime's outputs on it
against PyTorch's (``tools/deploy/export_onnx.py``).

The graph is the model's ``tensor`` mode (:class:`~biformer_mm.analysis.TensorMode`):
it takes the image as the data preprocessor makes it (normalised, padded) and returns
the heads' raw outputs; resizing, normalisation, and decoding the outputs into boxes,
masks or label maps stay outside it (docs/deploy.md says what to add).
"""
import inspect
from typing import List, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..analysis import TensorMode

INPUT_NAME = 'inputs'

NestedTensors = Union[Tensor, Sequence['NestedTensors'], dict]


def flatten_outputs(outputs: NestedTensors) -> List[Tensor]:
    """The tensors of a nested output (tuples, lists, dicts) in the order torch.onnx
    gives the graph's outputs."""
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    return [t for item in outputs for t in flatten_outputs(item)]


def check_exportable(network: TensorMode) -> None:
    """Raise ``ValueError`` for a network whose tensor-mode outputs cannot be decoded.

    A two-stage detector's tensor mode makes the RPN proposals in Python (score
    threshold, NMS, clipping to the example's ``img_shape``) and returns the RoI heads'
    outputs for them, but not the proposals those outputs refer to.
    """
    if getattr(network.model, 'with_rpn', False):
        raise ValueError(
            f'{type(network.model).__name__} is a two-stage detector: its tensor mode '
            f'returns the RoI heads\' outputs without the RPN proposals they refer to (and '
            f'makes those proposals for the example\'s image size), so its graph could not '
            f'be decoded into detections. Deploy it with mmdeploy on the classic stack '
            f'(docs/deploy.md), or export a one-stage detector or a segmentor.')


def other_size_input(inputs: Tensor) -> Tensor:
    """The random input :func:`check_dynamic_graph` checks a graph exported on ``inputs``
    with: 32 rows and 64 columns more (a detector's size divisor is kept)."""
    height, width = inputs.shape[2:]
    return torch.randn(1, inputs.shape[1], height + 32, width + 64,
                       generator=torch.Generator().manual_seed(0))


def check_dynamic_graph(path: str, network: nn.Module, inputs: Tensor,
                        tolerance: float = 1e-4) -> None:
    """Raise ``ValueError`` unless the graph at ``path`` equals ``network`` (within
    ``tolerance``, as :func:`onnx_errors` measures) at a size the export did not see,
    on :func:`other_size_input`.

    BiFormer computes its padding in the graph, but other modules may compute sizes in
    Python, which tracing fixes at the example's size: mmseg's ``Upsample`` (Semantic
    FPN's head) and adaptive pooling (UperNet's pyramid pooling) do.
    """
    other = other_size_input(inputs)
    where = f'at {other.shape[2]}x{other.shape[3]}, a size the export did not see'
    try:
        errors = onnx_errors(path, network, other)
    except Exception as error:  # onnxruntime raises its own types for wrong shapes
        raise ValueError(f'The dynamic graph {path} fails {where}: {error}. A module of the '
                         f'network computes sizes in Python (mmseg\'s Upsample and '
                         f'adaptive pooling do); export without --dynamic.') from error
    if max(errors) > tolerance:
        raise ValueError(f'The dynamic graph {path} differs from PyTorch by {max(errors):.3g} '
                         f'{where}: a module of the network computes sizes in Python, which '
                         f'tracing fixed at the example\'s size (mmseg\'s Upsample and '
                         f'adaptive pooling do); export without --dynamic.')


def export_onnx(network: TensorMode,
                inputs: Tensor,
                path: str,
                dynamic: bool = False,
                opset: int = 17,
                dynamo: bool = False,
                tolerance: float = 1e-4) -> List[str]:
    """Export ``network`` on ``inputs`` to the ONNX file ``path``; a dynamic graph is
    checked at another size (:func:`check_dynamic_graph`).

    Args:
        network (TensorMode): The model's tensor mode.
        inputs (Tensor): Example input ``(1, 3, H, W)``, as the data preprocessor
            makes it.
        path (str): Output ``.onnx`` file.
        dynamic (bool): Height and width of the input are dynamic. Defaults to False.
        opset (int): ONNX opset (>= 11). Defaults to 17.
        dynamo (bool): Use torch.onnx's dynamo exporter (torch >= 2.5) instead of the
            TorchScript-based one. Defaults to False.
        tolerance (float): Largest difference :func:`check_dynamic_graph` accepts.
            Defaults to 1e-4.

    Returns:
        list[str]: The names of the graph's outputs, one per tensor of
        :func:`flatten_outputs`.

    Raises:
        ValueError: If the outputs could not be decoded (:func:`check_exportable`), or a
            dynamic graph is wrong at another size (:func:`check_dynamic_graph`).
    """
    check_exportable(network)
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
    torch.onnx.export(network, (inputs, ), path, **kwargs)
    if dynamic:
        check_dynamic_graph(path, network, inputs, tolerance)
    return names


def onnx_errors(path: str, network: nn.Module, inputs: Tensor) -> List[float]:
    """The largest absolute difference between onnxruntime's outputs of the graph at
    ``path`` and PyTorch's (``network(inputs)``), one per output, divided by the
    output's largest magnitude where that is above 1.

    Raises:
        ValueError: If the graph has another number of outputs than the network.
    """
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    actual = session.run(None, {INPUT_NAME: inputs.numpy()})
    with torch.no_grad():
        expected = [t.numpy() for t in flatten_outputs(network(inputs))]
    if len(actual) != len(expected):
        raise ValueError(f'{path} has {len(actual)} outputs, the network {len(expected)}.')
    return [float(np.abs(a - e).max() / max(1., np.abs(e).max(initial=0.)))
            for a, e in zip(actual, expected)]
