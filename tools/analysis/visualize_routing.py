"""Draw where Bi-Level Routing Attention sends a query: its region, the regions it is
routed to, and the token attention over them.

    python tools/analysis/visualize_routing.py IMAGE --arch {tiny,small,base}
        [--checkpoint IMAGENET.pth] [--n-win 7] [--size 224] [options]
    python tools/analysis/visualize_routing.py IMAGE CONFIG --checkpoint CHECKPOINT
        [--cfg-options ...] [options]

options: ``--points X,Y ...`` (default: the image centre), ``--stage S ...`` (default:
every routed stage), ``--block B`` (default: the last), ``--out PNG``. One panel per query
point and stage shows what the model computed: the chosen blocks record their input map
size and the queries, keys and routed indices of their routing step while the backbone
runs on the image preprocessed as for the model (``--arch``: resized to shorter side
``--size``, ImageNet-normalised; CONFIG: its test pipeline and data preprocessor, as
``tools/infer.py``). Reference: docs/analysis.md.
"""
import argparse
import math
from contextlib import ExitStack
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple
from unittest import mock

import matplotlib
import mmcv
import numpy as np
import torch
from mmengine.config import DictAction
from torch import Tensor

matplotlib.use('Agg')
import matplotlib.patches as mpatches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from biformer_mm import BiFormer  # noqa: E402
from biformer_mm.models.layers import BiLevelRoutingAttention  # noqa: E402

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
Box = Tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in image pixels."""


class Routing(NamedTuple):
    """What one BRA module computed: its input map size, the queries and keys of its
    routing step (``(N, heads, P, W, D)``) and the routed region indices ``(N, P, K)``."""
    map_size: Tuple[int, int]
    n_win: int
    scale: float
    q: Tensor
    k: Tensor
    r_idx: Tensor


class Panel(NamedTuple):
    """What one panel draws, in image pixels."""
    stage: int
    block: int
    point: Tuple[float, float]
    query_region: Box
    routed_regions: List[int]
    """Indices of the routed regions (row-major over the ``n_win x n_win`` grid), by
    routing score, as the model computed them."""
    routed_boxes: List[Box]
    token_boxes: List[Box]
    token_attention: List[float]
    """Head-averaged attention of the query token on each routed token (sums to 1)."""


def routed_stages(backbone: BiFormer) -> List[int]:
    """Stages (1-based) whose blocks use routing attention."""
    return [i + 1 for i, topk in enumerate(backbone.arch['topks']) if topk > 0]


def record_routing(backbone: BiFormer, inputs: Tensor, stages: Sequence[int],
                   block: int = -1) -> Dict[int, Routing]:
    """Run ``backbone`` on ``inputs`` (one image) and return the routing of block
    ``block`` of each stage in ``stages``: a forward pre-hook takes each module's input
    map size, and its ``route`` step is wrapped for the run to keep q, k (heads first) and
    the indices."""
    records: Dict[int, Routing] = {}
    map_sizes: Dict[int, Tuple[int, int]] = {}

    def recording(stage: int, module: BiLevelRoutingAttention):
        route = module.route

        def recording_route(qkv: Tensor) -> Tensor:
            r_idx = route(qkv)
            qk = qkv[..., :2 * module.qk_dims].detach()
            q, k = module.to_heads_and_regions(qk, groups=2).unbind(0)
            records[stage] = Routing(map_sizes[stage], module.n_win, module.scale, q, k, r_idx)
            return r_idx

        return recording_route

    with ExitStack() as stack, torch.no_grad():
        for stage in stages:
            module = backbone.stages[stage - 1][block].attn
            stack.callback(module.register_forward_pre_hook(
                lambda mod, args, stage=stage: map_sizes.__setitem__(
                    stage, tuple(args[0].shape[1:3]))).remove)
            stack.enter_context(mock.patch.object(module, 'route', recording(stage, module)))
        backbone(inputs)
    return records


def make_panel(routing: Routing, stage: int, block: int, point: Tuple[float, float],
               scale_xy: Tuple[float, float]) -> Panel:
    """The panel of a query point: ``point`` is in image pixels, ``scale_xy`` maps image
    pixels to network-input pixels (the preprocessing's resize)."""
    stride = 2**(stage + 1)
    h, w = routing.map_size
    s = routing.n_win
    rh, rw = math.ceil(h / s), math.ceil(w / s)  # tokens per region side (padded map)
    sx, sy = scale_xy
    tx = min(int(point[0] * sx // stride), w - 1)
    ty = min(int(point[1] * sy // stride), h - 1)
    region = (ty // rh) * s + tx // rw
    token = (ty % rh) * rw + tx % rw

    def token_box(row: int, col: int, rows: int = 1, cols: int = 1) -> Box:
        return (col * stride / sx, row * stride / sy, (col + cols) * stride / sx,
                (row + rows) * stride / sy)

    def region_box(r: int) -> Box:
        return token_box((r // s) * rh, (r % s) * rw, rh, rw)

    routed = routing.r_idx[0, region].tolist()
    q = routing.q[0, :, region, token]  # (heads, D)
    k = routing.k[0][:, routed].flatten(1, 2)  # (heads, K * W, D)
    attention = torch.softmax((k @ q.unsqueeze(-1)).squeeze(-1) * routing.scale, dim=-1)
    attention = attention.mean(0).tolist()
    token_boxes = [token_box((r // s) * rh + t // rw, (r % s) * rw + t % rw)
                   for r in routed for t in range(rh * rw)]
    return Panel(stage, block, point, region_box(region), routed,
                 [region_box(r) for r in routed], token_boxes, attention)


def draw(image_rgb: np.ndarray, panels: List[List[Panel]], out: str) -> None:
    """One row per query point, one column per stage."""
    rows, cols = len(panels), len(panels[0])
    height, width = image_rgb.shape[:2]
    fig, axes = plt.subplots(rows, cols, squeeze=False,
                             figsize=(4.2 * cols, 4.2 * rows * height / width + 0.4))
    for row, axes_row in zip(panels, axes):
        for panel, ax in zip(row, axes_row):
            ax.imshow(image_rgb)
            # Attention as the opacity of a red layer: strong is opaque, weak transparent.
            heat = np.zeros((height, width, 4), dtype=np.float32)
            heat[..., 0] = 1.
            peak = max(panel.token_attention)
            for (x0, y0, x1, y1), a in zip(panel.token_boxes, panel.token_attention):
                heat[max(0, round(y0)):round(y1), max(0, round(x0)):round(x1), 3] = \
                    0.9 * a / peak
            ax.imshow(heat)
            colors = plt.cm.plasma_r(np.linspace(0.1, 0.9, len(panel.routed_boxes)))
            for rank, ((x0, y0, x1, y1), color) in enumerate(zip(panel.routed_boxes, colors)):
                ax.add_patch(mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                                edgecolor=color, linewidth=1.5))
                ax.text(x0 + 1, y0 + 1, str(rank + 1), color='black', fontsize=6, va='top',
                        ha='left', bbox=dict(boxstyle='square,pad=0.1', fc=color, ec='none'))
            x0, y0, x1, y1 = panel.query_region
            ax.add_patch(mpatches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False,
                                            edgecolor='white', linewidth=2, linestyle='--'))
            ax.plot(*panel.point, marker='x', color='white', markersize=9, mew=2)
            ax.set_xlim(0, width)
            ax.set_ylim(height, 0)
            ax.set_title(f'stage {panel.stage}, block {panel.block}: top-'
                         f'{len(panel.routed_boxes)} of query ({panel.point[0]:.0f}, '
                         f'{panel.point[1]:.0f})', fontsize=8)
            ax.axis('off')
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def arch_inputs(image_bgr: np.ndarray, size: int) -> Tuple[Tensor, Tuple[float, float]]:
    """ImageNet preprocessing at shorter side ``size``: input and image->input scale."""
    height, width = image_bgr.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = mmcv.imresize(image_bgr, (new_w, new_h), interpolation='bicubic')
    rgb = mmcv.imnormalize(resized, np.array(IMAGENET_MEAN), np.array(IMAGENET_STD),
                           to_rgb=True)
    return (torch.from_numpy(rgb).permute(2, 0, 1)[None].float(),
            (new_w / width, new_h / height))


def config_inputs(image: str, config: str, checkpoint: str, cfg_options: Optional[dict]
                  ) -> Tuple[BiFormer, Tensor, Tuple[float, float]]:
    """A trained model's backbone, and the image as its test pipeline and data
    preprocessor make it (through mmdet's/mmseg's inferencer)."""
    from biformer_mm.engine.inference import build_inferencer
    inferencer = build_inferencer(config, checkpoint, cfg_options, device='cpu')
    data = inferencer.model.data_preprocessor(
        inferencer.collate_fn([inferencer.pipeline(image)]), False)
    meta = data['data_samples'][0].metainfo
    (oh, ow), (h, w) = meta['ori_shape'][:2], meta['img_shape'][:2]
    return inferencer.model.backbone, data['inputs'], (w / ow, h / oh)


def parse_point(text: str) -> Tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'points are X,Y in image pixels, got {text!r}')
    return x, y


ARCH_DEFAULTS = dict(n_win=7, size=224)
"""``--arch`` mode's ``--n-win`` and ``--size`` (ImageNet's 224 and 7 regions per side)."""


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('image', help='image file, any size')
    parser.add_argument('config', nargs='?', help='detection or segmentation config '
                        '(with --checkpoint); or give --arch')
    parser.add_argument('--arch', choices=sorted(BiFormer.arch_zoo),
                        help='a BiFormer backbone instead of a config')
    parser.add_argument('--checkpoint', help='trained checkpoint of CONFIG, or official '
                        'ImageNet weights for --arch (default with --arch: random weights); '
                        'read weights-only (docs/checkpoints.md)')
    parser.add_argument('--n-win', type=int,
                        help='--arch: regions per side (default %d)' % ARCH_DEFAULTS['n_win'])
    parser.add_argument('--size', type=int,
                        help='--arch: shorter image side fed to the backbone (default %d)'
                        % ARCH_DEFAULTS['size'])
    parser.add_argument('--points', type=parse_point, nargs='+', metavar='X,Y',
                        help='query points in image pixels (default: the centre)')
    parser.add_argument('--stage', type=int, nargs='+', choices=(1, 2, 3, 4),
                        help='routed stages to draw (default: all)')
    parser.add_argument('--block', type=int, default=-1,
                        help='block index in each stage (default: the last)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='CONFIG: override config keys')
    parser.add_argument('--out', default='routing.png', help='output PNG')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.arch is None):
        parser.error('give either CONFIG (with --checkpoint) or --arch.')
    if args.config is not None and args.checkpoint is None:
        parser.error('CONFIG needs --checkpoint (a trained model of that config).')
    # Options of the other mode would be ignored: refuse them.
    if args.config and (args.n_win is not None or args.size is not None):
        parser.error('--n-win and --size apply to --arch only: CONFIG sets the regions and '
                     'the image size.')
    if args.arch and args.cfg_options:
        parser.error('--cfg-options applies to CONFIG only: --arch builds no config.')
    for name, default in ARCH_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def main(argv: Optional[Sequence[str]] = None) -> List[List[Panel]]:
    args = parse_args(argv)
    image_bgr = mmcv.imread(args.image)
    if image_bgr is None:
        raise FileNotFoundError(f'Cannot read image {args.image}.')
    if args.arch:
        init_cfg = dict(type='Pretrained', checkpoint=args.checkpoint) \
            if args.checkpoint else None
        backbone = BiFormer(arch=args.arch, n_win=args.n_win, init_cfg=init_cfg)
        backbone.init_weights()
        inputs, scale_xy = arch_inputs(image_bgr, args.size)
    else:
        backbone, inputs, scale_xy = config_inputs(args.image, args.config, args.checkpoint,
                                                   args.cfg_options)
    backbone.eval()
    available = routed_stages(backbone)
    stages = args.stage or available
    if set(stages) - set(available):
        raise ValueError(f'stages {sorted(set(stages) - set(available))} do not route '
                         f'(global attention); routed stages: {available}.')
    height, width = image_bgr.shape[:2]
    points = args.points or [(width / 2, height / 2)]
    outside = [p for p in points if not (0 <= p[0] < width and 0 <= p[1] < height)]
    if outside:
        raise ValueError(f'points {outside} lie outside the {width}x{height} image.')
    records = record_routing(backbone, inputs, stages, args.block)
    panels = [[make_panel(records[s], s, args.block % len(backbone.stages[s - 1]), p,
                          scale_xy) for s in stages] for p in points]
    draw(mmcv.bgr2rgb(image_bgr), panels, args.out)
    print(f'wrote {args.out}')
    return panels


if __name__ == '__main__':
    main()
