"""The check, before the Runner is built, that a config's dataset files exist.

Without it, a config pointing at a dataset that is not there fails deep inside the
dataset code (for COCO, a pycocotools ``FileNotFoundError`` traceback). The check reads
the paths the config's datasets and evaluators will open, the way mmengine's
``BaseDataset`` joins them (``data_root`` + ``ann_file`` and every ``data_prefix``
entry, through dataset wrappers), and reports every missing one in a single
:class:`DatasetNotFoundError` that says where the data should be, how to move its root
and how to train on the built-in toy data instead. Remote paths (``s3://``, ...) are
left to the dataset.
"""
import os.path as osp
from typing import Dict, Iterator, List, NamedTuple, Sequence, Tuple

from mmengine.config import Config


class DatasetNotFoundError(FileNotFoundError):
    """Files of a config's dataset are missing."""


class DatasetHelp(NamedTuple):
    """What to tell a user whose copy of a dataset is missing."""

    name: str
    root_variable: str
    default_root: str
    example_root: str
    layout: Tuple[str, ...]
    make_toy: str
    toy_overlays: Dict[str, str]
    """Toy overlay by config family (the config name up to its first ``_``); the first
    one serves other configs."""


DATASET_HELP = {
    'CocoDataset': DatasetHelp(
        name='COCO 2017', root_variable='COCO_ROOT', default_root='data/coco/',
        example_root='/datasets/coco/',
        layout=('annotations/instances_train2017.json',
                'annotations/instances_val2017.json', 'train2017/*.jpg', 'val2017/*.jpg'),
        make_toy='python tools/dataset/make_toy_coco.py',
        toy_overlays={'maskrcnn': 'configs/detection/toy/maskrcnn_toy_coco.py',
                      'retinanet': 'configs/detection/toy/retinanet_toy_coco.py'}),
    'ADE20KDataset': DatasetHelp(
        name='ADE20K (ADEChallengeData2016)', root_variable='ADE20K_ROOT',
        default_root='data/ade/ADEChallengeData2016',
        example_root='/datasets/ADEChallengeData2016',
        layout=('images/training/*.jpg', 'images/validation/*.jpg',
                'annotations/training/*.png', 'annotations/validation/*.png'),
        make_toy='python tools/dataset/make_toy_ade20k.py',
        toy_overlays={'fpn': 'configs/segmentation/toy/fpn_toy_ade20k.py',
                      'upernet': 'configs/segmentation/toy/upernet_toy_ade20k.py'}),
}
"""Help for the datasets of our configs, by dataset type."""


def _datasets(dataset: dict) -> Iterator[dict]:
    """``dataset`` and, through wrappers (``dataset``/``datasets`` keys), the datasets
    it wraps."""
    yield dataset
    inner = dataset.get('datasets', [dataset['dataset']] if 'dataset' in dataset else [])
    for child in inner:
        yield from _datasets(child)


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) else osp.join(root, path)


def dataset_paths(cfg: Config, parts: Sequence[str]) -> List[Tuple[str, str, str]]:
    """The local paths the ``parts`` of ``cfg`` (dataloaders and evaluators) will open.

    Args:
        cfg (Config): The config.
        parts (Sequence[str]): Keys such as ``'train_dataloader'``, ``'val_evaluator'``.

    Returns:
        list[tuple[str, str, str]]: ``(path, what, dataset type)`` for each local path
        once, ``what`` naming its first config key, e.g.
        ``'train_dataloader.dataset.ann_file'``.
    """
    paths = []
    for part in parts:
        if not cfg.get(part):
            continue
        if part.endswith('_evaluator'):
            evaluators = cfg[part] if isinstance(cfg[part], (list, tuple)) else [cfg[part]]
            paths += [(e['ann_file'], f'{part}.ann_file', '')
                      for e in evaluators if e.get('ann_file')]
            continue
        for dataset in _datasets(cfg[part].get('dataset') or {}):
            kind = str(dataset.get('type', '')).split('.')[-1]
            root = dataset.get('data_root') or ''
            if dataset.get('ann_file'):
                paths.append((_join(root, dataset['ann_file']),
                              f'{part}.dataset.ann_file', kind))
            for key, prefix in (dataset.get('data_prefix') or {}).items():
                if prefix:
                    paths.append((_join(root, prefix), f'{part}.dataset.data_prefix.{key}',
                                  kind))
    first: Dict[str, Tuple[str, str, str]] = {}
    for entry in paths:
        first.setdefault(entry[0], entry)
    return [entry for entry in first.values() if '://' not in entry[0]]


def missing_dataset_message(config: str, missing: List[Tuple[str, str, str]]) -> str:
    """The message for the ``missing`` paths of ``config`` (see :func:`dataset_paths`)."""
    lines = [f'The dataset of {config} is not where the config looks for it (paths relative '
             f'to {osp.abspath(".")}):']
    lines += [f'  missing: {path}  ({what})' for path, what, _ in missing]
    family = osp.basename(config).split('_')[0]
    for kind in dict.fromkeys(kind for _, _, kind in missing):
        info = DATASET_HELP.get(kind)
        if info is None:
            continue
        overlay = info.toy_overlays.get(family, next(iter(info.toy_overlays.values())))
        lines += [
            f'Our configs read {info.name} from {info.default_root} unless the environment '
            f'variable {info.root_variable} names another directory, e.g. '
            f'{info.root_variable}={info.example_root} python tools/train.py {config}. '
            f'The standard layout is:',
            *(f'  {osp.join(info.default_root, entry)}' for entry in info.layout),
            'To try the whole pipeline on the built-in toy data instead (no download):',
            f'  {info.make_toy}',
            f'  python tools/train.py {config} --overlay {overlay}',
        ]
    return '\n'.join(lines)


def check_dataset_files(cfg: Config, config: str, parts: Sequence[str]) -> None:
    """Raise :class:`DatasetNotFoundError` if files the ``parts`` of ``cfg`` will open are
    missing.

    Args:
        cfg (Config): The config.
        config (str): Its file, for the message.
        parts (Sequence[str]): Dataloader and evaluator keys to check.

    Raises:
        DatasetNotFoundError: Naming every missing path, the root variable, the
            standard layout and the toy-data command.
    """
    missing = [p for p in dataset_paths(cfg, parts) if not osp.exists(p[0])]
    if missing:
        raise DatasetNotFoundError(missing_dataset_message(config, missing))
