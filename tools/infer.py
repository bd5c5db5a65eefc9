"""Run a trained BiFormer detector or segmentor on your own images and draw the results.

    python tools/infer.py IMAGES [IMAGES ...] CONFIG CHECKPOINT --out-dir DIR
        [--score-thr 0.3] [--device cpu] [--cfg-options KEY=VALUE ...]

IMAGES are files, folders or quoted globs of any size, run through mmdet's
``DetInferencer`` or mmseg's ``MMSegInferencer`` (the config's ``default_scope``). Per image
``NAME.EXT``: ``DIR/vis/NAME.png`` (the library's drawing), ``DIR/preds/NAME.json``
(mmdet's JSON, or the class names and pixel counts of a segmentation) and, for
segmentors, the class map ``DIR/preds/NAME.png``. Reference: docs/analysis.md.
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

import mmcv
import numpy as np
from mmengine.config import DictAction

from biformer_mm.engine.cli import SETUP_ERRORS
from biformer_mm.engine.inference import build_inferencer

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def list_images(specs: Sequence[str]) -> List[str]:
    """The image files named by files, folders or glob patterns, in order, each once.

    Raises:
        FileNotFoundError: If a spec names no image.
    """
    images: List[str] = []
    for spec in specs:
        if osp.isdir(spec):
            found = sorted(osp.join(spec, f) for f in os.listdir(spec)
                           if f.lower().endswith(IMAGE_EXTENSIONS))
        elif osp.isfile(spec):
            found = [spec] if spec.lower().endswith(IMAGE_EXTENSIONS) else []
        else:
            found = sorted(f for f in glob.glob(spec) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not found:
            raise FileNotFoundError(f'{spec!r} names no image (a file, a folder of '
                                    f'{"/".join(IMAGE_EXTENSIONS)} files, or a glob).')
        images += [f for f in found if f not in images]
    stems = [osp.splitext(osp.basename(f))[0] for f in images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f'Several images share the names {duplicates}; outputs are named '
                         f'after the image: run them into separate --out-dir folders.')
    return images


def segmentation_summary(label_map: np.ndarray, classes: Sequence[str],
                         label_map_file: str) -> dict:
    """JSON-ready description of a predicted class map."""
    labels, counts = np.unique(label_map, return_counts=True)
    return dict(label_map=label_map_file, height=int(label_map.shape[0]),
                width=int(label_map.shape[1]),
                pixels={classes[int(label)]: int(count) for label, count in zip(labels, counts)})


def infer(images: Sequence[str], config: str, checkpoint: str, out_dir: str,
          score_thr: float = 0.3, device: Optional[str] = None,
          cfg_options: Optional[dict] = None) -> List[Dict]:
    """Predict, draw and save every image; return the written files per image."""
    inferencer = build_inferencer(config, checkpoint, cfg_options, device)
    detector = type(inferencer).__name__ == 'DetInferencer'
    os.makedirs(osp.join(out_dir, 'vis'), exist_ok=True)
    os.makedirs(osp.join(out_dir, 'preds'), exist_ok=True)
    written = []
    for image in list_images(images):
        name = osp.splitext(osp.basename(image))[0]
        files = dict(image=image, vis=osp.join(out_dir, 'vis', f'{name}.png'),
                     pred=osp.join(out_dir, 'preds', f'{name}.json'))
        if detector:
            # mmdet writes preds/NAME.json itself.
            result = inferencer(image, return_vis=True, no_save_vis=True, no_save_pred=False,
                                out_dir=out_dir, pred_score_thr=score_thr)
            vis = result['visualization'][0]
        else:
            # One image: mmseg returns the class map and drawing themselves, not lists.
            result = inferencer(image, return_vis=True)
            label_map, vis = result['predictions'], result['visualization']
            files['label_map'] = osp.join(out_dir, 'preds', f'{name}.png')
            mmcv.imwrite(label_map.astype(np.uint16 if label_map.max() > 255 else np.uint8),
                         files['label_map'])
            summary = segmentation_summary(label_map, inferencer.model.dataset_meta['classes'],
                                           osp.basename(files['label_map']))
            with open(files['pred'], 'w') as f:
                json.dump(summary, f)
        # The visualizers return RGB; mmcv writes BGR.
        mmcv.imwrite(vis[..., ::-1], files['vis'])
        written.append(files)
    return written


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('images', nargs='+', metavar='IMAGES',
                        help='image files, folders or quoted glob patterns')
    parser.add_argument('config', help='detection or segmentation config')
    parser.add_argument('checkpoint', help='trained checkpoint: path, URL or mmengine '
                        'backend path, read weights-only (trusted:// prefix to load a file '
                        'you trust in full, docs/checkpoints.md)')
    parser.add_argument('--out-dir', required=True, help='folder for vis/ and preds/')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detectors: draw predictions scoring at least this')
    parser.add_argument('--device', default=None, help="e.g. 'cpu' or 'cuda:0' (default: "
                        'a GPU when there is one)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    args = parse_args(argv)
    try:
        written = infer(args.images, args.config, args.checkpoint, args.out_dir,
                        args.score_thr, args.device, args.cfg_options)
    except SETUP_ERRORS as error:  # each names the fix: a message, not a traceback
        print(f'infer.py: error: {type(error).__name__}: {error}', file=sys.stderr)
        sys.exit(2)
    for files in written:
        print(f"{files['image']} -> {files['vis']}, {files['pred']}")
    return written


if __name__ == '__main__':
    main()
