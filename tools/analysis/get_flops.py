"""Count the FLOPs and parameters of a detector, segmentor or ImageNet classifier as the
BiFormer paper counts them (fvcore's convention), with mmengine's FlopAnalyzer and the
attention handles biformer_mm registers.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--json]
        [--cfg-options KEY=VALUE ...]
    python tools/analysis/get_flops.py --arch tiny|small|base [--shape H W] [--json]

``--arch``: timm's ``biformer_<arch>`` with its 1000-class head on 224x224 (or ``--shape``).
CONFIG: any mmdet/mmseg config, run once in ``tensor`` mode on a random image of
``--shape`` (default: the test pipeline's ``Resize``), padded by the data preprocessor;
the whole model and each top-level part (training-only auxiliary heads left out).
Reference: docs/analysis.md.
"""
import argparse
import json
from collections import Counter
from typing import Dict, Optional, Sequence, Tuple

import timm
import torch
from mmengine.config import Config, DictAction

from biformer_mm.analysis import build_tensor_mode, count_complexity
from biformer_mm.engine import load_config


def config_complexity(cfg: Config, shape: Optional[Tuple[int, int]] = None) -> dict:
    """FLOPs and parameters of the detector or segmentor of ``cfg`` on one image.

    Args:
        cfg (Config): An mmdet or mmseg config (``default_scope`` names the library).
        shape (tuple[int, int], optional): Image ``(H, W)``. Defaults to the test size
            (:func:`~biformer_mm.analysis.default_input_size`).

    Returns:
        dict: :func:`~biformer_mm.analysis.count_complexity`'s result for the whole
        model and its top-level parts, plus ``input_shape`` (after the data
        preprocessor's padding) and ``model`` (the model type).
    """
    network, inputs = build_tensor_mode(cfg, shape)
    parts = [name for name, child in network.model.named_children()
             if name != 'data_preprocessor' and child is not None]
    result = count_complexity(network, (inputs, ), parts=[f'model.{name}' for name in parts])
    result['parts'] = {name.split('.', 1)[1]: value for name, value in result['parts'].items()}
    result.update(model=type(network.model).__name__, input_shape=list(inputs.shape))
    return result


def classifier_complexity(arch: str, shape: Tuple[int, int] = (224, 224)) -> dict:
    """FLOPs and parameters of the ImageNet classifier ``biformer_<arch>`` (timm, with its
    1000-class head; random weights) on one image of ``shape``.

    Returns:
        dict: :func:`~biformer_mm.analysis.count_complexity`'s result with the parts
        ``stages`` (stem, downsampling layers and blocks) and ``head`` (final norm,
        pooling and linear layer), plus ``input_shape`` and ``model``.
    """
    model = timm.create_model(f'biformer_{arch}').eval()
    inputs = torch.randn(1, 3, *shape)
    groups = dict(stages=['stem', 'downsamples', 'stages'],
                  head=['norm', 'global_pool', 'head_drop', 'head'])
    result = count_complexity(model, (inputs, ), parts=sum(groups.values(), []))
    parts = result['parts']
    result['parts'] = {
        group: dict(flops=sum(parts[name]['flops'] for name in names),
                    params=sum(parts[name]['params'] for name in names),
                    by_operator=dict(sum((Counter(parts[name]['by_operator']) for name in names),
                                         Counter())))
        for group, names in groups.items()}
    result.update(model=f'biformer_{arch}', input_shape=list(inputs.shape))
    return result


def format_table(result: dict, title: str) -> str:
    """Human-readable lines of a :func:`config_complexity` result."""
    lines = [title, '', '| part | GFLOPs | params (M) |', '| --- | ---: | ---: |',
             f"| whole model | {result['flops'] / 1e9:.3f} | {result['params'] / 1e6:.2f} |"]
    lines += [f"| {name} | {part['flops'] / 1e9:.3f} | {part['params'] / 1e6:.2f} |"
              for name, part in result['parts'].items()]
    uncounted = ', '.join(f'{op} x{n}' for op, n in sorted(result['uncounted_ops'].items()))
    lines += ['', f'Not counted (fvcore convention): {uncounted or "nothing"}']
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', help='mmdet or mmseg config file')
    parser.add_argument('--arch', choices=['tiny', 'small', 'base'],
                        help='count the ImageNet classifier biformer_<arch> instead of a '
                             'config (default input 224x224)')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size (default: the test pipeline\'s Resize scale)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON line (flops, params, parts, input_shape, ...)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.backbone.n_win=8')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.arch is None):
        parser.error('give either CONFIG or --arch')
    if args.arch and args.cfg_options:
        parser.error('--cfg-options applies to CONFIG, not --arch')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    shape = tuple(args.shape) if args.shape else None
    if args.arch:
        result = classifier_complexity(args.arch, shape or (224, 224))
    else:
        cfg = load_config(args.config, args.cfg_options)
        result = config_complexity(cfg, shape)
    if args.json:
        print(json.dumps(result))
    else:
        n, c, h, w = result['input_shape']
        print(format_table(result, f'{args.config or args.arch} ({result["model"]}), input '
                                   f'{n}x{c}x{h}x{w}'))
    return result


if __name__ == '__main__':
    main()
