"""Count the FLOPs and parameters of a detector or segmentor, as the BiFormer paper counts
them: fvcore's convention (one fused multiply-add is one FLOP; element-wise operations,
softmax and top-k are not counted), with mmengine's FlopAnalyzer and the attention
handles biformer_mm registers.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--json]
        [--overlay OVERLAY] [--cfg-options KEY=VALUE ...]

CONFIG is an mmdet or mmseg config (ours, or any other). The network runs once, in
``tensor`` mode (no pre- or post-processing), on a random image of ``--shape H W``, by
default the size of the config's test pipeline ``Resize`` (e.g. 800x1333 for COCO,
512x2048 for ADE20K), padded by the model's data preprocessor as in testing. It reports
the whole model and each of its parts (backbone, neck, heads); training-only auxiliary
heads are left out, as mmseg's own tool does. The RoI heads of a two-stage detector are
counted on the proposals its RPN gives this random image. Counting runs on the CPU,
where BiFormer's routed attention is ``attn_impl='torch'``: every implementation counts
the same (tests/test_flops.py). ``--json`` prints one JSON line instead of the table.
"""
import argparse
import json
from typing import Dict, Optional, Sequence, Tuple

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


def format_table(result: dict, title: str) -> str:
    """Human-readable lines of a :func:`config_complexity` result."""
    lines = [title, '', '| part | GFLOPs | params (M) |', '| --- | ---: | ---: |',
             f"| whole model | {result['flops'] / 1e9:.2f} | {result['params'] / 1e6:.2f} |"]
    lines += [f"| {name} | {part['flops'] / 1e9:.2f} | {part['params'] / 1e6:.2f} |"
              for name, part in result['parts'].items()]
    uncounted = ', '.join(f'{op} x{n}' for op, n in sorted(result['uncounted_ops'].items()))
    lines += ['', f'Not counted (fvcore convention): {uncounted or "nothing"}']
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='image size (default: the test pipeline\'s Resize scale)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON line (flops, params, parts, input_shape, ...)')
    parser.add_argument('--overlay', action='append', default=[], metavar='OVERLAY',
                        help='config file merged onto CONFIG (as tools/train.py); repeatable')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.backbone.n_win=8')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overlay, args.cfg_options)
    result = config_complexity(cfg, tuple(args.shape) if args.shape else None)
    if args.json:
        print(json.dumps(result))
    else:
        n, c, h, w = result['input_shape']
        print(format_table(result, f'{args.config} ({result["model"]}), input '
                                   f'{n}x{c}x{h}x{w}'))
    return result


if __name__ == '__main__':
    main()
