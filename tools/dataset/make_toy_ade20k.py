"""Generate a small, learnable semantic segmentation dataset in the ADE20K layout, read
by mmseg's ``ADE20KDataset`` like the real folder::

    ADEChallengeData2016/
    ├── images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
    └── annotations/{training,validation}/ADE_{train,val}_XXXXXXXX.png

Street scenes: a sky above grass or road with a few buildings, trees, people and cars in
class-specific colours and textures, plus clutter labelled 0 ("other"). Labels are
ADE20K's: 0 is ignored with ``reduce_zero_label=True``, label ``v`` is
``ADE20KDataset.METAINFO['classes'][v - 1]``.

``--classes`` writes a stand-in for one's own data instead (configs/segmentation/custom/):
label ``v`` is the ``v``-th name (0-based); the first names the noisy background, the next
one to three the shapes of ``make_toy_coco.py`` (rectangle, ellipse, triangle). Each image
is drawn from a generator seeded by (seed, split, index): the same arguments give the same
files.

Example::

    python tools/dataset/make_toy_ade20k.py                 # default location
    python tools/dataset/make_toy_ade20k.py --out /tmp/toy --num-train 20
    python tools/dataset/make_toy_ade20k.py --out data/my_seg \\
        --classes background,coin,bolt,nut
"""
import argparse
import os.path as osp
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple

import cv2
import numpy as np

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from make_toy_coco import CATEGORIES, class_names, noise_image, shape_polygon  # noqa: E402

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

SPLITS = {'training': 'train', 'validation': 'val'}

Scene = Tuple[np.ndarray, np.ndarray]


def _jitter(rng: np.random.Generator, bgr: Tuple[int, int, int],
            amount: int = 18) -> Tuple[int, int, int]:
    """Return ``bgr`` with a small random offset per channel."""
    offset = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(c) for c in np.clip(np.array(bgr) + offset, 0, 255))


def _paint(image: np.ndarray, label: np.ndarray, mask: np.ndarray,
           colour: np.ndarray, value: int) -> None:
    """Write ``colour`` into ``image`` and ``value`` into ``label`` where ``mask`` is set."""
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
    """Draw one toy street scene: the BGR image and its ADE20K label map."""
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


def render_shapes(rng: np.random.Generator, height: int, width: int,
                  num_classes: int) -> Scene:
    """Draw one image of the ``--classes`` data: label ``v`` in 1 to ``num_classes - 1``
    is shape kind ``v - 1`` of :data:`CATEGORIES`, on noise labelled 0. Returns the BGR
    image and the label map."""
    image = noise_image(rng, height, width)
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        value = int(rng.integers(1, num_classes))
        w = int(rng.integers(width // 6, width // 2))
        h = int(rng.integers(height // 6, height // 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        mask = np.zeros(label.shape, np.uint8)
        if CATEGORIES[value - 1] == 'ellipse':  # OpenCV's finer outline than shape_polygon
            cv2.ellipse(mask, (x0 + w // 2, y0 + h // 2), (w // 2, h // 2), 0, 0, 360, 1, -1)
        else:
            box = (x0, y0, x0 + w, y0 + h)
            cv2.fillPoly(mask, [shape_polygon(CATEGORIES[value - 1], box, rng)], 1)
        colour = np.array([int(c) for c in rng.integers(110, 256, size=3)])
        _paint(image, label, mask.astype(bool), colour, value)
    return image, label


def make_toy_ade20k(out_dir: str = DEFAULT_OUT,
                    num_train: int = 200,
                    num_val: int = 40,
                    seed: int = 0,
                    classes: Optional[Sequence[str]] = None) -> Path:
    """Fill the ``ADEChallengeData2016`` folder ``out_dir`` (files of the same names are
    overwritten) with street scenes, or with the shapes data of :func:`render_shapes`
    when ``classes`` (the background first, then one to three shapes) is given; the same
    arguments give the same files. Returns ``out_dir``.

    Raises:
        FileExistsError: If the folders hold files this call would not write (mmseg reads
            every file of them, so an earlier, larger run's would join the dataset).
        OSError: If an image cannot be written.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError('num_train and num_val must be at least 1, got '
                         f'{num_train} and {num_val}.')
    if classes is not None and not 2 <= len(classes) <= len(CATEGORIES) + 1:
        raise ValueError('classes must name the background and 1 to '
                         f'{len(CATEGORIES)} shape classes, got {tuple(classes)}.')
    root = Path(out_dir)
    counts = {'training': num_train, 'validation': num_val}
    names = {split: [f'ADE_{prefix}_{index:08d}' for index in range(1, counts[split] + 1)]
             for split, prefix in SPLITS.items()}
    stale = []
    for split in SPLITS:
        for folder, ext in (('images', 'jpg'), ('annotations', 'png')):
            written = {f'{name}.{ext}' for name in names[split]}
            stale += [path for path in sorted((root / folder / split).glob('*'))
                      if path.name not in written]
    if stale:
        raise FileExistsError(
            f'{root} holds {len(stale)} files this run would not write (e.g. {stale[0]}): '
            f'mmseg reads every file of its folders, so they would join the dataset. Remove '
            f'them, or write to another folder.')
    for split_id, split in enumerate(SPLITS):
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
            name = names[split][index - 1]
            for path, array, params in ((img_dir / f'{name}.jpg', image,
                                         [cv2.IMWRITE_JPEG_QUALITY, 95]),
                                        (ann_dir / f'{name}.png', label, [])):
                if not cv2.imwrite(str(path), array, params):
                    raise OSError(f'Could not write {path}.')
    return root


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=DEFAULT_OUT,
                        help=f'output ADEChallengeData2016 folder (default: {DEFAULT_OUT})')
    parser.add_argument('--num-train', type=int, default=200, help='training images')
    parser.add_argument('--num-val', type=int, default=40, help='validation images')
    parser.add_argument('--seed', type=int, default=0, help='random seed')
    parser.add_argument(
        '--classes', help='comma-separated class names: write shapes on a background '
        'instead of street scenes; the first name is the background (label 0), the next 1 '
        f'to {len(CATEGORIES)} the shapes (labels 1, 2, ...)')
    args = parser.parse_args()
    if args.num_train < 1 or args.num_val < 1:
        parser.error('--num-train and --num-val must be at least 1.')
    if args.classes is not None:
        args.classes = class_names(parser, args.classes, 2, len(CATEGORIES) + 1)
    return args


def main() -> None:
    args = parse_args()
    root = make_toy_ade20k(args.out, args.num_train, args.num_val, args.seed,
                           args.classes)
    print(f'wrote {args.num_train} training and {args.num_val} validation '
          f'images to {root}')


if __name__ == '__main__':
    main()
