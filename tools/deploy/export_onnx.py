"""Export a BiFormer detector or segmentor to ONNX with torch.onnx, and check the graph in
onnxruntime against PyTorch (docs/deploy.md).

    python tools/deploy/export_onnx.py CONFIG --out FILE [--checkpoint C] [--shape H W]
        [--dynamic] [--verify IMAGE] [--tolerance 1e-4] [--opset 17] [--dynamo]
        [--cfg-options KEY=VALUE ...]

The graph is the network's ``tensor`` mode: the image as the data preprocessor makes it
(resized to ``--shape``, default the test pipeline's ``Resize`` scale) in, the heads' raw
outputs (``output0``, ...) out. ``--dynamic`` graphs are checked at another size and
refused if wrong there (sizes computed in Python, e.g. mmseg's ``Upsample``); two-stage
detectors are refused (their outputs lack the proposals). ``--verify IMAGE`` compares
onnxruntime with PyTorch on IMAGE (with ``--dynamic`` rescaled to fit in ``--shape``) and
exits 1 above ``--tolerance``. ``--checkpoint`` is read weights-only (``trusted://PATH``:
in full); without it the weights are random.
"""
import argparse
import inspect
import sys
from typing import List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import DictAction
from torch import Tensor

from biformer_mm.analysis import TensorMode, build_tensor_mode, tensor_mode_inputs
from biformer_mm.engine import load_config

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
    where that is above 1."""
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    actual = session.run(None, {INPUT_NAME: inputs.numpy()})
    with torch.no_grad():
        expected = [t.numpy() for t in flatten_outputs(network(inputs))]
    if len(actual) != len(expected):
        raise ValueError(f'{path} has {len(actual)} outputs, the network {len(expected)}.')
    return [float(np.abs(a - e).max() / max(1., np.abs(e).max(initial=0.)))
            for a, e in zip(actual, expected)]


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
        ValueError: For a two-stage detector, or a dynamic graph that differs from
            PyTorch by more than ``tolerance`` on :func:`other_size_input`.
    """
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
        if not type(error).__module__.startswith('onnxruntime'):
            raise
        problem = f'fails ({error})'
    if problem:
        raise ValueError(f'The dynamic graph {path} {problem} at {other.shape[2]}x'
                         f'{other.shape[3]}, a size the export did not see: a module of the '
                         f'network computes sizes in Python, which tracing fixed at the '
                         f'example\'s size (mmseg\'s Upsample and adaptive pooling do); '
                         f'export without --dynamic.')
    return names


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('--out', required=True, help='ONNX file to write')
    parser.add_argument('--checkpoint', help='trained weights (default: random weights)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size (default: the test pipeline\'s Resize scale)')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic input height and width')
    parser.add_argument('--verify', metavar='IMAGE',
                        help='compare onnxruntime with PyTorch on this image')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest accepted (relative) difference (default 1e-4)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset (default 17)')
    parser.add_argument('--dynamo', action='store_true',
                        help='torch.onnx\'s dynamo exporter instead of the legacy one')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.backbone.n_win=8')
    return parser.parse_args(argv)


def verify_inputs(network: TensorMode, image: str, shape: Sequence[int],
                  dynamic: bool) -> Tuple[torch.Tensor, list]:
    """The network input and data samples of ``--verify IMAGE``: the image resized to
    ``shape`` (H, W), or with ``dynamic`` rescaled with its aspect ratio to fit in it,
    then made by the data preprocessor."""
    height, width = shape
    array = mmcv.imread(image)
    array = (mmcv.imrescale(array, (width, height)) if dynamic
             else mmcv.imresize(array, (width, height)))
    return tensor_mode_inputs(network.model,
                              torch.from_numpy(array).permute(2, 0, 1).contiguous())


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    network, inputs = build_tensor_mode(cfg, tuple(args.shape) if args.shape else None,
                                        args.checkpoint)
    names = export_onnx(network, inputs, args.out, dynamic=args.dynamic, opset=args.opset,
                        dynamo=args.dynamo, tolerance=args.tolerance)
    print(f'{args.out}: input {list(inputs.shape)}'
          f'{" (dynamic height and width)" if args.dynamic else ""}, '
          f'{len(names)} outputs')
    if not args.verify:
        return 0
    image_inputs, data_samples = verify_inputs(network, args.verify, inputs.shape[2:],
                                               args.dynamic)
    errors = onnx_errors(args.out, TensorMode(network.model, data_samples).eval(),
                         image_inputs)
    worst = max(errors)
    print(f'onnxruntime vs PyTorch on {args.verify} at {list(image_inputs.shape)}: '
          f'max difference {worst:.3g} (per output: '
          f'{", ".join(f"{e:.2g}" for e in errors)}), tolerance {args.tolerance:g}')
    if worst > args.tolerance:
        print(f'FAILED: the ONNX graph differs from PyTorch by more than {args.tolerance:g}.')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
