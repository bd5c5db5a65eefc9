"""Generate a small, deterministic COCO-format instance segmentation dataset.

Each image shows up to ``--max-shapes`` non-overlapping filled shapes on a noisy
background; the shape kind is the category (``rectangle``, ``ellipse``, ``triangle``, or
the one to three ``--classes`` names in that order), the colour is random. Every instance
has a polygon mask matching its pixels, a tight box and its area. ``--size MIN MAX``
draws each image's height and width between MIN and MAX pixels (default: 256x256). The
defaults write the toy dataset of configs/detection/toy/, under ``--out``::

    annotations/instances_{train,val}.json
    {train,val}/000001.png ...

Example:
    python tools/dataset/make_toy_coco.py --out data/toy_coco --num-train 48 --num-val 16
    python tools/dataset/make_toy_coco.py --out data/my_coco --classes coin,bolt,nut \
        --num-train 40 --num-val 10 --size 300 640
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

CATEGORIES = ('rectangle', 'ellipse', 'triangle')
Box = Tuple[int, int, int, int]


def class_names(parser: argparse.ArgumentParser, text: str, least: int,
                most: int) -> Tuple[str, ...]:
    """``--classes``: ``least`` to ``most`` distinct non-empty comma-separated names."""
    names = tuple(name.strip() for name in text.split(','))
    if not least <= len(names) <= most or not all(names) or len(set(names)) != len(names):
        parser.error(f'--classes takes {least} to {most} distinct non-empty names, '
                     f'got {names}.')
    return names


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='data/toy_coco', help='output directory')
    parser.add_argument('--num-train', type=int, default=48, help='training images')
    parser.add_argument('--num-val', type=int, default=16, help='validation images')
    parser.add_argument(
        '--classes', default=','.join(CATEGORIES),
        help='comma-separated category names, one to three, given to the shape kinds '
        f'{", ".join(CATEGORIES)} in this order (default: the shape kinds)')
    parser.add_argument(
        '--size', type=int, nargs='+', default=[256], metavar='PIXELS',
        help='image side in pixels (default 256), or MIN MAX: each image\'s height and '
        'width are drawn between MIN and MAX')
    parser.add_argument('--max-shapes', type=int, default=4, help='shapes per image (at most)')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    args = parser.parse_args(argv)
    if args.num_train < 1 or args.num_val < 1:
        parser.error('--num-train and --num-val must be at least 1.')
    args.classes = class_names(parser, args.classes, 1, len(CATEGORIES))
    if len(args.size) == 1:
        args.size = args.size * 2
    if len(args.size) != 2 or not 64 <= args.size[0] <= args.size[1]:
        parser.error(f'--size takes one side or MIN MAX, each at least 64 pixels and '
                     f'MIN <= MAX, got {args.size}.')
    if args.max_shapes < 1:
        parser.error(f'--max-shapes must be at least 1, got {args.max_shapes}.')
    return args


def noise_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A BGR image of one dark random colour with Gaussian noise."""
    background = rng.integers(20, 90, size=3)
    noise = rng.normal(0, 8, size=(height, width, 3))
    return np.clip(background + noise, 0, 255).astype(np.uint8)


def shape_polygon(kind: str, box: Box, rng: np.random.Generator) -> np.ndarray:
    """The (N, 2) int32 outline of a shape of ``kind`` (one of :data:`CATEGORIES`)
    filling ``box`` ``(x1, y1, x2, y2)``; ``rng`` places the triangle's apex."""
    x1, y1, x2, y2 = box
    if kind == 'rectangle':
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.int32)
    if kind == 'ellipse':
        center = ((x1 + x2) // 2, (y1 + y2) // 2)
        axes = ((x2 - x1) // 2, (y2 - y1) // 2)
        return cv2.ellipse2Poly(center, axes, 0, 0, 360, 10).astype(np.int32)
    if kind == 'triangle':
        apex = int(rng.integers(x1, x2 + 1))
        return np.array([[apex, y1], [x2, y2], [x1, y2]], dtype=np.int32)
    raise ValueError(f'Unknown shape kind {kind!r}; expected one of {CATEGORIES}.')


def overlaps(box: Box, others: List[Box], margin: int = 4) -> bool:
    """Whether ``box`` grown by ``margin`` pixels intersects any of ``others``."""
    x1, y1, x2, y2 = box
    return any(x1 - margin < ox2 and ox1 < x2 + margin and y1 - margin < oy2
               and oy1 < y2 + margin for ox1, oy1, ox2, oy2 in others)


def make_image(rng: np.random.Generator, height: int, width: int, max_shapes: int,
               num_classes: int = len(CATEGORIES)) -> Tuple[np.ndarray, List[Dict]]:
    """Draw one image with up to ``max_shapes`` shapes of the first ``num_classes``
    kinds; return the BGR image and its ``dict(category, polygon)`` instances."""
    image = noise_image(rng, height, width)
    placed: List[Box] = []
    instances = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        for _attempt in range(20):
            w, h = rng.integers((width // 8, height // 8), (width * 3 // 8, height * 3 // 8))
            x1, y1 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            box = (x1, y1, x1 + int(w), y1 + int(h))
            if not overlaps(box, placed):
                break
        else:
            continue
        category = int(rng.integers(num_classes))
        polygon = shape_polygon(CATEGORIES[category], box, rng)
        colour = tuple(int(c) for c in rng.integers(110, 256, size=3))
        cv2.fillPoly(image, [polygon], colour)
        placed.append(box)
        instances.append(dict(category=category, polygon=polygon))
    return image, instances


def coco_annotation(polygon: np.ndarray, category: int, image_id: int,
                    ann_id: int) -> Dict:
    """COCO annotation dict (box, area, polygon mask) of one drawn instance."""
    x1, y1 = polygon.min(axis=0)
    x2, y2 = polygon.max(axis=0) + 1  # the last pixel row/column is filled
    xs, ys = polygon[:, 0].astype(np.float64), polygon[:, 1].astype(np.float64)
    area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category + 1,
        bbox=[int(x1), int(y1), int(x2 - x1), int(y2 - y1)],
        area=float(area),
        segmentation=[polygon.astype(float).flatten().tolist()],
        iscrowd=0)


def make_split(out_dir: str, split: str, num_images: int, size: Union[int, Sequence[int]],
               max_shapes: int, seed: int, classes: Sequence[str] = CATEGORIES) -> Dict:
    """Write the images of one split to ``out_dir/split/`` and return its COCO
    annotation dict; see :func:`make_toy_coco` for the arguments."""
    min_size, max_size = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(out_dir, split), exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        # Square images draw nothing here, so the default files stay what they were.
        height, width = (min_size, min_size) if min_size == max_size else (
            int(side) for side in rng.integers(min_size, max_size + 1, size=2))
        image, instances = make_image(rng, height, width, max_shapes, len(classes))
        file_name = f'{image_id:06d}.png'
        cv2.imwrite(osp.join(out_dir, split, file_name), image)
        images.append(dict(id=image_id, file_name=file_name, width=width, height=height))
        for instance in instances:
            annotations.append(
                coco_annotation(instance['polygon'], instance['category'], image_id,
                                len(annotations) + 1))
    return dict(
        info=dict(description=f'biformer_mm toy shapes ({split}, seed {seed})'),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=i + 1, name=name, supercategory='shape')
                    for i, name in enumerate(classes)])


def make_toy_coco(out_dir: str, num_train: int = 48, num_val: int = 16,
                  size: Union[int, Sequence[int]] = 256, max_shapes: int = 4, seed: int = 0,
                  classes: Sequence[str] = CATEGORIES) -> Dict[str, str]:
    """Generate the train and val splits under ``out_dir``; the same arguments always
    give the same files.

    Args:
        size (int | tuple[int, int]): Image side, or ``(min, max)``: each image's height
            and width are drawn from that range.
        classes (tuple[str]): Category names of the first ``len(classes)`` shape kinds.

    Returns:
        dict[str, str]: Annotation file of each split.
    """
    if not 1 <= len(classes) <= len(CATEGORIES):
        raise ValueError(f'classes must name 1 to {len(CATEGORIES)} categories (the shape '
                         f'kinds {CATEGORIES}), got {tuple(classes)}.')
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    ann_files = {}
    for offset, (split, num_images) in enumerate((('train', num_train), ('val', num_val))):
        coco = make_split(out_dir, split, num_images, size, max_shapes, seed * 2 + offset,
                          classes)
        ann_files[split] = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(ann_files[split], 'w') as f:
            json.dump(coco, f)
    return ann_files


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    ann_files = make_toy_coco(args.out, args.num_train, args.num_val, args.size,
                              args.max_shapes, args.seed, args.classes)
    for split, ann_file in ann_files.items():
        with open(ann_file) as f:
            coco = json.load(f)
        print(f'{split}: {len(coco["images"])} images, {len(coco["annotations"])} '
              f'instances -> {ann_file}')


if __name__ == '__main__':
    main()
