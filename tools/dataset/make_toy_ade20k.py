"""Generate a small, learnable semantic segmentation dataset in the ADE20K
layout.

The result can be read by mmseg's ``ADE20KDataset`` exactly like the real
``ADEChallengeData2016`` folder::

    ADEChallengeData2016/
    ├── images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
    └── annotations/{training,validation}/ADE_{train,val}_XXXXXXXX.png

Label maps follow the ADE20K convention: 0 is "other" (ignored once
``reduce_zero_label=True`` maps it to 255) and 1..150 are the ADE20K classes,
so label ``v`` is ``ADE20KDataset.METAINFO['classes'][v - 1]``. Every scene is
a sky above a grass or road ground plane with a few buildings, trees, people
and cars drawn in class-specific colours and textures, plus clutter labelled
0. Images are drawn from a generator seeded per split and index, so the same
arguments always give the same files.

``--classes`` writes a stand-in for one's own data in the same folder layout instead:
label value ``v`` is the ``v``-th name (0-based). The first name labels the noisy
background, the next one to three names label filled shapes (a rectangle, an ellipse, a
triangle in that order, in random colours), as the label maps of a custom dataset usually
are (configs/segmentation/custom/).

Example::

    python tools/dataset/make_toy_ade20k.py                 # default location
    python tools/dataset/make_toy_ade20k.py --out /tmp/toy --num-train 20
    python tools/dataset/make_toy_ade20k.py --out data/my_seg \\
        --classes background,coin,bolt,nut
"""
import argparse
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

DEFAULT_OUT = 'data/toy_ade/ADEChallengeData2016'

# ADE20K label values (1-based indices into ADE20KDataset classes).
OTHER = 0
BUILDING = 2
SKY = 3
TREE = 5
ROAD = 7
GRASS = 10
PERSON = 13
CAR = 21

#: The ADE20K label values that appear in the toy data, with their names.
TOY_CLASSES: Dict[int, str] = {
    BUILDING: 'building',
    SKY: 'sky',
    TREE: 'tree',
    ROAD: 'road',
    GRASS: 'grass',
    PERSON: 'person',
    CAR: 'car',
}

SPLITS = {'training': 'train', 'validation': 'val'}

Scene = Tuple[np.ndarray, np.ndarray]


def _jitter(rng: np.random.Generator, bgr: Tuple[int, int, int],
            amount: int = 18) -> Tuple[int, int, int]:
    """Return ``bgr`` with a small random offset per channel."""
    offset = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(c) for c in np.clip(np.array(bgr) + offset, 0, 255))


def _paint(image: np.ndarray, label: np.ndarray, mask: np.ndarray,
           colour: np.ndarray, value: int) -> None:
    """Write ``colour`` into ``image`` and ``value`` into ``label`` where
    ``mask`` is set."""
    image[mask] = colour[mask] if colour.ndim == 3 else colour
    label[mask] = value


def _draw_building(rng: np.random.Generator, image: np.ndarray,
                   label: np.ndarray, horizon: int) -> None:
    """A tan block standing on the horizon with a grid of dark windows."""
    width = label.shape[1]
    w = int(rng.integers(width // 6, width // 3))
    h = int(rng.integers(horizon // 3, max(horizon // 3 + 1, horizon - 4)))
    x0 = int(rng.integers(0, width - w))
    y0 = horizon - h
    mask = np.zeros_like(label, dtype=bool)
    mask[y0:horizon, x0:x0 + w] = True
    wall = np.zeros_like(image)
    wall[:] = _jitter(rng, (120, 170, 205))
    window = _jitter(rng, (70, 50, 40), amount=10)
    for y in range(y0 + 3, horizon - 5, 9):
        for x in range(x0 + 3, x0 + w - 5, 8):
            wall[y:y + 5, x:x + 4] = window
    _paint(image, label, mask, wall, BUILDING)


def _draw_tree(rng: np.random.Generator, image: np.ndarray,
               label: np.ndarray, horizon: int) -> None:
    """A dark green, speckled canopy on a brown trunk."""
    height, width = label.shape
    radius = int(rng.integers(max(6, height // 12), max(7, height // 6)))
    cx = int(rng.integers(radius, width - radius))
    base = int(rng.integers(horizon, min(height, horizon + height // 5) + 1))
    trunk_top = base - 2 * radius
    mask = np.zeros(label.shape, np.uint8)
    cv2.rectangle(mask, (cx - radius // 4, trunk_top), (cx + radius // 4, base),
                  1, -1)
    trunk = mask.astype(bool)
    cv2.circle(mask, (cx, trunk_top - radius // 2), radius, 1, -1)
    canopy = mask.astype(bool) & ~trunk
    leaves = np.zeros_like(image)
    leaves[:] = _jitter(rng, (30, 90, 25))
    speckle = rng.random(label.shape) < 0.25
    leaves[speckle] = _jitter(rng, (60, 140, 60), amount=10)
    _paint(image, label, canopy, leaves, TREE)
    _paint(image, label, trunk, np.array(_jitter(rng, (30, 60, 100))), TREE)


def _draw_person(rng: np.random.Generator, image: np.ndarray,
                 label: np.ndarray, horizon: int) -> None:
    """A standing figure: a coloured torso and legs under a round head."""
    height, width = label.shape
    h = int(rng.integers(max(12, height // 6), max(13, height // 3)))
    w = max(4, h // 4)
    x0 = int(rng.integers(0, width - w))
    feet = int(rng.integers(horizon + 2, height))
    top = feet - h
    head = max(2, w // 2 + 1)
    body = np.zeros(label.shape, np.uint8)
    cv2.rectangle(body, (x0, top + 2 * head), (x0 + w, feet), 1, -1)
    skin = np.zeros(label.shape, np.uint8)
    cv2.circle(skin, (x0 + w // 2, top + head), head, 1, -1)
    _paint(image, label, body.astype(bool),
           np.array(_jitter(rng, (40, 200, 230))), PERSON)
    _paint(image, label, skin.astype(bool),
           np.array(_jitter(rng, (150, 180, 230))), PERSON)


def _draw_car(rng: np.random.Generator, image: np.ndarray, label: np.ndarray,
              horizon: int) -> None:
    """A red body with a lighter cabin and two black wheels."""
    height, width = label.shape
    w = int(rng.integers(max(16, width // 6), max(17, width // 3)))
    h = max(6, w // 3)
    x0 = int(rng.integers(0, width - w))
    bottom = int(rng.integers(horizon + h // 2, height))
    y0 = bottom - h
    body = np.zeros(label.shape, np.uint8)
    cv2.rectangle(body, (x0, y0), (x0 + w, bottom - h // 4), 1, -1)
    cv2.rectangle(body, (x0 + w // 5, y0 - h // 2), (x0 + 4 * w // 5, y0), 1,
                  -1)
    wheels = np.zeros(label.shape, np.uint8)
    for cx in (x0 + w // 5, x0 + 4 * w // 5):
        cv2.circle(wheels, (cx, bottom - h // 4), max(2, h // 4), 1, -1)
    _paint(image, label, body.astype(bool),
           np.array(_jitter(rng, (40, 40, 200))), CAR)
    _paint(image, label, wheels.astype(bool),
           np.array(_jitter(rng, (25, 25, 25), amount=8)), CAR)


def _draw_clutter(rng: np.random.Generator, image: np.ndarray,
                  label: np.ndarray, horizon: int) -> None:
    """A random-coloured blob labelled 0 ("other"), anywhere in the image."""
    height, width = label.shape
    centre = rng.integers((0, 0), (width, height))
    points = centre + rng.integers(-height // 8, height // 8 + 1, size=(5, 2))
    mask = np.zeros(label.shape, np.uint8)
    cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    _paint(image, label, mask.astype(bool), np.array(colour), OTHER)


OBJECT_PAINTERS: Tuple[Callable[..., None], ...] = (_draw_building,
                                                     _draw_tree, _draw_person,
                                                     _draw_car)


def render_scene(rng: np.random.Generator, height: int, width: int) -> Scene:
    """Draw one toy street scene.

    Args:
        rng (np.random.Generator): Source of all randomness of the scene.
        height (int): Image height in pixels.
        width (int): Image width in pixels.

    Returns:
        tuple[np.ndarray, np.ndarray]: A ``(height, width, 3)`` BGR uint8
        image and the ``(height, width)`` uint8 ADE20K label map.
    """
    image = np.zeros((height, width, 3), np.uint8)
    label = np.zeros((height, width), np.uint8)
    horizon = int(rng.integers(int(0.35 * height), int(0.65 * height)))

    rows = np.linspace(0., 1., horizon)[:, None, None]
    top, bottom = np.array(_jitter(rng, (235, 170, 90))), np.array(
        _jitter(rng, (250, 225, 190)))
    image[:horizon] = (top + (bottom - top) * rows).astype(np.uint8)
    label[:horizon] = SKY

    ground = np.zeros_like(image)
    if rng.random() < 0.5:
        ground[:] = _jitter(rng, (40, 150, 70))
        blades = rng.random(label.shape) < 0.3
        ground[blades] = _jitter(rng, (20, 110, 40), amount=10)
        ground_value = GRASS
    else:
        ground[:] = _jitter(rng, (110, 110, 110), amount=10)
        lane = (height + horizon) // 2
        for x in range(int(rng.integers(0, 12)), width, 24):
            ground[lane:lane + 3, x:x + 12] = (230, 230, 230)
        ground_value = ROAD
    below = np.zeros(label.shape, bool)
    below[horizon:] = True
    _paint(image, label, below, ground, ground_value)

    for _ in range(int(rng.integers(1, 5))):
        painter = OBJECT_PAINTERS[int(rng.integers(len(OBJECT_PAINTERS)))]
        painter(rng, image, label, horizon)
    for _ in range(int(rng.integers(0, 3))):
        _draw_clutter(rng, image, label, horizon)

    noise = rng.normal(0., 6., image.shape)
    image = np.clip(image.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    return image, label


#: Shapes of the ``--classes`` data, one per class after the background.
MAX_SHAPE_CLASSES = 3


def render_shapes(rng: np.random.Generator, height: int, width: int,
                  num_classes: int) -> Scene:
    """Draw one image of the ``--classes`` data: filled shapes on noise.

    Args:
        rng (np.random.Generator): Source of all randomness of the image.
        height (int): Image height in pixels.
        width (int): Image width in pixels.
        num_classes (int): Label values used: 0 (the background) to
            ``num_classes - 1``; value ``v`` > 0 is drawn as shape ``v - 1``
            (rectangle, ellipse, triangle).

    Returns:
        tuple[np.ndarray, np.ndarray]: A ``(height, width, 3)`` BGR uint8
        image and the ``(height, width)`` uint8 label map.
    """
    background = rng.integers(20, 90, size=3)
    image = np.clip(background + rng.normal(0., 8., (height, width, 3)), 0,
                    255).astype(np.uint8)
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        value = int(rng.integers(1, num_classes))
        w = int(rng.integers(width // 6, width // 2))
        h = int(rng.integers(height // 6, height // 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        mask = np.zeros(label.shape, np.uint8)
        if value == 1:
            cv2.rectangle(mask, (x0, y0), (x0 + w, y0 + h), 1, -1)
        elif value == 2:
            cv2.ellipse(mask, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0,
                        360, 1, -1)
        else:
            apex = int(rng.integers(x0, x0 + w + 1))
            cv2.fillPoly(mask, [np.array([[apex, y0], [x0 + w, y0 + h],
                                          [x0, y0 + h]], np.int32)], 1)
        colour = np.array([int(c) for c in rng.integers(110, 256, size=3)])
        _paint(image, label, mask.astype(bool), colour, value)
    return image, label


def make_toy_ade20k(out_dir: str = DEFAULT_OUT,
                    num_train: int = 200,
                    num_val: int = 40,
                    seed: int = 0,
                    classes: Optional[Sequence[str]] = None) -> Path:
    """Write the toy dataset in the ADE20K layout.

    Args:
        out_dir (str): The ``ADEChallengeData2016`` folder to fill. Existing
            files with the same names are overwritten.
        num_train (int): Number of training images. Defaults to 200.
        num_val (int): Number of validation images. Defaults to 40.
        seed (int): Seed of the generator; the same seed gives the same
            files. Defaults to 0.
        classes (tuple[str], optional): Write the shapes data of
            :func:`render_shapes` with these classes (the first one the
            background, then one to three shapes) instead of street scenes
            with ADE20K labels. Defaults to None (street scenes).

    Returns:
        Path: ``out_dir``.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError('num_train and num_val must be at least 1, got '
                         f'{num_train} and {num_val}.')
    if classes is not None and not 2 <= len(classes) <= MAX_SHAPE_CLASSES + 1:
        raise ValueError('classes must name the background and 1 to '
                         f'{MAX_SHAPE_CLASSES} shape classes, got {tuple(classes)}.')
    root = Path(out_dir)
    counts = {'training': num_train, 'validation': num_val}
    for split_id, (split, prefix) in enumerate(SPLITS.items()):
        img_dir = root / 'images' / split
        ann_dir = root / 'annotations' / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for index in range(1, counts[split] + 1):
            rng = np.random.default_rng((seed, split_id, index))
            height = int(rng.integers(128, 177))
            width = int(rng.integers(160, 225))
            if classes is None:
                image, label = render_scene(rng, height, width)
            else:
                image, label = render_shapes(rng, height, width, len(classes))
            name = f'ADE_{prefix}_{index:08d}'
            cv2.imwrite(str(img_dir / f'{name}.jpg'), image,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(ann_dir / f'{name}.png'), label)
    return root


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Generate a toy semantic segmentation dataset in the '
        'ADE20K (ADEChallengeData2016) layout.')
    parser.add_argument(
        '--out',
        default=DEFAULT_OUT,
        help=f'output ADEChallengeData2016 folder (default: {DEFAULT_OUT})')
    parser.add_argument(
        '--num-train', type=int, default=200, help='training images')
    parser.add_argument(
        '--num-val', type=int, default=40, help='validation images')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--classes',
        help='comma-separated class names: write shapes on a background '
        'instead of street scenes; the first name is the background (label '
        f'0), the next 1 to {MAX_SHAPE_CLASSES} the shapes (labels 1, 2, ...)')
    args = parser.parse_args()
    if args.num_train < 1 or args.num_val < 1:
        parser.error('--num-train and --num-val must be at least 1.')
    if args.classes is not None:
        args.classes = tuple(name.strip() for name in args.classes.split(','))
        if not 2 <= len(args.classes) <= MAX_SHAPE_CLASSES + 1 or not all(
                args.classes) or len(set(args.classes)) != len(args.classes):
            parser.error('--classes takes the background and 1 to '
                         f'{MAX_SHAPE_CLASSES} more distinct non-empty names, '
                         f'got {args.classes}.')
    return args


def main() -> None:
    args = parse_args()
    root = make_toy_ade20k(args.out, args.num_train, args.num_val, args.seed,
                           args.classes)
    print(f'wrote {args.num_train} training and {args.num_val} validation '
          f'images to {root}')


if __name__ == '__main__':
    main()
