"""Export a BiFormer detector or segmentor to ONNX with torch.onnx, and check the graph in
onnxruntime against PyTorch (docs/deploy.md).

    python tools/deploy/export_onnx.py CONFIG --out FILE [--checkpoint C] [--shape H W]
        [--dynamic] [--verify IMAGE] [--tolerance 1e-4] [--opset 17] [--dynamo]
        [--cfg-options KEY=VALUE ...]

The graph is the network's ``tensor`` mode: an image as the data preprocessor makes it
(exported on a random image of ``--shape``, default the test pipeline's ``Resize`` scale,
padded to the preprocessor's size divisor) in, the heads' raw outputs (``output0``, ...)
out. ``--dynamic`` graphs are checked at another size and refused if wrong there (sizes
computed in Python, e.g. mmseg's ``Upsample``); two-stage detectors are refused (their
outputs lack the proposals). ``--verify IMAGE`` compares onnxruntime with PyTorch on
IMAGE resized to the exported input's size (with ``--dynamic`` rescaled with its aspect
ratio to fit in it) and exits 1 above ``--tolerance``. ``--checkpoint`` is read
weights-only (``trusted://PATH``: in full); without it the weights are random.
"""
import argparse
import sys
from typing import Optional, Sequence, Tuple

import mmcv
import torch
from mmengine.config import DictAction

from biformer_mm.analysis import TensorMode, build_tensor_mode, tensor_mode_inputs
from biformer_mm.engine import load_config
from biformer_mm.onnx_export import export_onnx, onnx_errors


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
