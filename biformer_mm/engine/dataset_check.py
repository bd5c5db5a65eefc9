"""The pre-flight check of a config's data, before the Runner is built.

Without it, mistakes in a config or its data surface deep inside the dataset code or
hours into training: a missing annotation file as a pycocotools traceback, an image
missing on disk when the data loader reaches it, ``metainfo`` classes that match no
category as numpy's ``need at least one array to concatenate``, and a head's
``num_classes`` left at 80 not at all. :func:`check_dataset` finds these first and
raises one error per kind of problem, naming it and the fix:

1. every path the datasets and evaluators will open exists (``data_root`` +
   ``ann_file`` and every ``data_prefix`` entry, joined as mmengine's ``BaseDataset``
   does, through dataset wrappers), read through mmengine's file backends with each
   dataset's ``backend_args``; a path whose backend cannot be reached from here is
   logged as not checked;
2. the classes of the datasets (``metainfo``, else the dataset type's own) and every
   ``num_classes`` of the model's heads agree;
3. COCO-format datasets (mmdet's ``CocoDataset`` and its subclasses): every image the
   annotation file lists exists, every class is a category of the file; the images that
   ``filter_cfg`` will drop from training are counted in a warning. Annotation files
   over :data:`MAX_ANNOTATION_MB` (COCO 2017's training file) are not read here;
4. segmentation datasets (mmseg's ``BaseSegDataset``): every image has its label map,
   and the values of up to :data:`MAX_LABEL_MAPS` label maps, spread over the dataset,
   fit ``num_classes`` or the ignore index (after ``reduce_zero_label``);
5. the lr schedule: a warm-up (``LinearLR``) longer than the run, or ``MultiStepLR``
   milestones at or after its end, are warnings naming the numbers.

Only local files are read for 3 and 4. Download advice is given for the COCO and
ADE20K layouts of our configs only. ``tools/train.py --skip-data-check`` skips it all.
"""
import importlib
import inspect
import json
import logging
import math
import os
import os.path as osp
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from mmengine import fileio
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DATASETS

MAX_ANNOTATION_MB = 64
"""Annotation files up to this size (MB) are read by the check."""
MAX_LABEL_MAPS = 50
"""Label maps whose values are read, per segmentation dataset."""
FIRST = 5
"""Missing files named in a message; the rest are counted."""


class DatasetNotFoundError(FileNotFoundError):
    """Files of a config's dataset are missing."""


class DatasetMismatchError(ValueError):
    """A config does not fit its data (classes, ``num_classes``, label values)."""


class DatasetHelp(NamedTuple):
    """What to tell a user whose copy of one of our datasets is missing."""

    name: str
    root_variable: str
    default_root: str
    example_root: str
    layout: Tuple[str, ...]
    make_toy: str
    toy_root: str
    toy_configs: Dict[str, str]
    """Toy config by config family (the config name up to its first ``_``); the first
    one serves other configs."""


DATASET_HELP = {
    'CocoDataset': DatasetHelp(
        name='COCO 2017', root_variable='COCO_ROOT', default_root='data/coco/',
        example_root='/datasets/coco/',
        layout=('annotations/instances_train2017.json',
                'annotations/instances_val2017.json', 'train2017/*.jpg', 'val2017/*.jpg'),
        make_toy='python tools/dataset/make_toy_coco.py', toy_root='data/toy_coco/',
        toy_configs={'maskrcnn': 'configs/detection/toy/maskrcnn_biformer_t_toy_coco.py',
                     'retinanet': 'configs/detection/toy/retinanet_biformer_t_toy_coco.py'}),
    'ADE20KDataset': DatasetHelp(
        name='ADE20K (ADEChallengeData2016)', root_variable='ADE20K_ROOT',
        default_root='data/ade/ADEChallengeData2016',
        example_root='/datasets/ADEChallengeData2016',
        layout=('images/training/*.jpg', 'images/validation/*.jpg',
                'annotations/training/*.png', 'annotations/validation/*.png'),
        make_toy='python tools/dataset/make_toy_ade20k.py',
        toy_root='data/toy_ade/ADEChallengeData2016',
        toy_configs={'fpn': 'configs/segmentation/toy/fpn_biformer_t_toy_ade20k.py',
                     'upernet': 'configs/segmentation/toy/upernet_biformer_t_toy_ade20k.py'}),
}
"""Help for the datasets of our configs, by dataset type."""


class DataPath(NamedTuple):
    """A path a dataset or evaluator will open."""

    path: str
    what: str
    """Its config key, e.g. ``'train_dataloader.dataset.ann_file'``."""
    kind: str
    """Dataset type name (empty for evaluators)."""
    relative: str
    """The path as configured, before ``data_root``."""
    backend_args: Optional[dict]


def _log(message: str, level: int = logging.INFO) -> None:
    print_log(message, logger='current', level=level)


def _type_name(dataset: dict) -> str:
    kind = dataset.get('type', '')
    return kind.__name__ if isinstance(kind, type) else str(kind).split('.')[-1]


def _datasets(dataset: dict, what: str) -> Iterator[Tuple[dict, str]]:
    """``(dataset, its key)`` for ``dataset`` and, through wrappers
    (``dataset``/``datasets`` keys), the datasets it wraps."""
    yield dataset, what
    if 'dataset' in dataset:
        yield from _datasets(dataset['dataset'], f'{what}.dataset')
    for i, child in enumerate(dataset.get('datasets') or []):
        yield from _datasets(child, f'{what}.datasets.{i}')


def _leaf_datasets(cfg: Config, part: str) -> List[Tuple[dict, str]]:
    """The datasets of the dataloader ``part`` that read files (not wrappers)."""
    if not part.endswith('_dataloader') or not cfg.get(part):
        return []
    return [(d, w) for d, w in _datasets(cfg[part].get('dataset') or {}, f'{part}.dataset')
            if 'dataset' not in d and 'datasets' not in d]


def _join(root: str, path: str) -> str:
    return path if not root or osp.isabs(path) else osp.join(root, path)


def dataset_paths(cfg: Config, parts: Sequence[str]) -> List[DataPath]:
    """The paths the ``parts`` of ``cfg`` (dataloaders and evaluators) will open, each
    once, with the first config key that names it.

    Args:
        cfg (Config): The config.
        parts (Sequence[str]): Keys such as ``'train_dataloader'``, ``'val_evaluator'``.

    Returns:
        list[DataPath]: The paths.
    """
    paths = []
    for part in parts:
        if part.endswith('_evaluator') and cfg.get(part):
            evaluators = cfg[part] if isinstance(cfg[part], (list, tuple)) else [cfg[part]]
            paths += [DataPath(e['ann_file'], f'{part}.ann_file', '', e['ann_file'],
                               e.get('backend_args')) for e in evaluators if e.get('ann_file')]
        for dataset, what in _leaf_datasets(cfg, part):
            kind, root = _type_name(dataset), dataset.get('data_root') or ''
            backend_args = dataset.get('backend_args')
            if dataset.get('ann_file'):
                paths.append(DataPath(_join(root, dataset['ann_file']), f'{what}.ann_file',
                                      kind, dataset['ann_file'], backend_args))
            for key, prefix in (dataset.get('data_prefix') or {}).items():
                if prefix:
                    paths.append(DataPath(_join(root, prefix), f'{what}.data_prefix.{key}',
                                          kind, prefix, backend_args))
    first: Dict[str, DataPath] = {}
    for entry in paths:
        first.setdefault(entry.path, entry)
    return list(first.values())


def _is_local(path: str, backend_args: Optional[dict]) -> bool:
    return '://' not in path and (backend_args or {}).get('backend', 'local') == 'local'


def _exists(entry: DataPath) -> bool:
    """Whether ``entry`` exists; a backend that cannot be asked counts as yes, logged."""
    if _is_local(entry.path, entry.backend_args):
        return osp.exists(entry.path)
    try:
        return fileio.exists(entry.path, backend_args=entry.backend_args)
    except Exception as error:  # the backend's client is missing or unreachable here
        _log(f'Dataset check: {entry.path} ({entry.what}) was not checked: its file '
             f'backend (backend_args={entry.backend_args}) failed here with '
             f'{type(error).__name__}: {error}', logging.WARNING)
        return True


def _standard_layout(info: DatasetHelp, relative: str) -> bool:
    """Whether ``relative`` is a path of the standard layout of ``info``."""
    entries = {osp.dirname(e) if '*' in e else e for e in info.layout}
    return relative.rstrip('/') in entries


def missing_dataset_message(config: str, missing: List[DataPath]) -> str:
    """The message for the ``missing`` paths of ``config`` (see :func:`dataset_paths`).

    Download advice and the toy config are given for our COCO and ADE20K layouts only;
    the generator command for missing toy data."""
    lines = [f'The dataset of {config} is not where the config looks for it (paths relative '
             f'to {osp.abspath(".")}):']
    lines += [f'  missing: {entry.path}  ({entry.what})' for entry in missing]
    family = osp.basename(config).split('_')[0]
    advised = False
    for kind in dict.fromkeys(entry.kind for entry in missing):
        info = DATASET_HELP.get(kind)
        entries = [e for e in missing if e.kind == kind]
        if info is None:
            continue
        if all(e.path.startswith(info.toy_root.rstrip('/')) for e in entries):
            lines += ['Generate the toy data first:', f'  {info.make_toy}']
            advised = True
        elif all(_standard_layout(info, e.relative) for e in entries):
            toy = info.toy_configs.get(family, next(iter(info.toy_configs.values())))
            lines += [
                f'Our configs read {info.name} from {info.default_root} unless the '
                f'environment variable {info.root_variable} names another directory, e.g. '
                f'{info.root_variable}={info.example_root} python tools/train.py {config}. '
                f'The standard layout is:',
                *(f'  {osp.join(info.default_root, entry)}' for entry in info.layout),
                'To try the whole pipeline on the built-in toy data instead (no download):',
                f'  {info.make_toy}',
                f'  python tools/train.py {toy}',
            ]
            advised = True
    if not advised:
        lines.append('Check data_root, ann_file and data_prefix of these datasets (and the '
                     'evaluators\' ann_file). A top-level data_root in a child config does '
                     'not move the datasets of its base config, which used the base\'s value '
                     'when it was read: set each dataset\'s data_root (and the evaluators\' '
                     'ann_file).')
    return '\n'.join(lines)


def check_dataset_files(cfg: Config, config: str, parts: Sequence[str]) -> None:
    """Raise :class:`DatasetNotFoundError` if paths the ``parts`` of ``cfg`` will open are
    missing (step 1 of the module docstring).

    Args:
        cfg (Config): The config.
        config (str): Its file, for the message.
        parts (Sequence[str]): Dataloader and evaluator keys to check.
    """
    missing = [entry for entry in dataset_paths(cfg, parts) if not _exists(entry)]
    if missing:
        raise DatasetNotFoundError(missing_dataset_message(config, missing))


def _dataset_class(cfg: Config, dataset: dict) -> Optional[type]:
    """The class ``dataset`` builds, or None if no registry knows it."""
    if isinstance(dataset.get('type'), type):
        return dataset['type']
    scope, _, kind = str(dataset.get('type', '')).rpartition('.')
    scope = scope or dataset.get('_scope_', cfg.get('default_scope'))
    try:
        registry = importlib.import_module(f'{scope}.registry').DATASETS
    except ImportError:
        registry = DATASETS
    found = registry.get(kind)
    return found if isinstance(found, type) else None


def _classes(dataset: dict, cls: Optional[type]) -> Optional[Tuple[str, ...]]:
    """The classes of ``dataset``: its ``metainfo``'s, else its class's."""
    metainfo = dataset.get('metainfo')
    if isinstance(metainfo, dict) and metainfo.get('classes') is not None:
        return tuple(metainfo['classes'])
    default = getattr(cls, 'METAINFO', {}).get('classes')
    return tuple(default) if default is not None else None


def _class_heads(model: dict, key: str = 'model') -> List[Tuple[str, int]]:
    """``(config key, num_classes)`` of every part of ``model`` that sets
    ``num_classes``, e.g. ``('model.roi_head.bbox_head', 80)``."""
    heads = []
    items = model.items() if isinstance(model, dict) else enumerate(model)
    for name, value in items:
        if isinstance(value, (dict, list, tuple)):
            if isinstance(value, dict) and 'num_classes' in value:
                heads.append((f'{key}.{name}', value['num_classes']))
            heads += _class_heads(value, f'{key}.{name}')
    return heads


def _num_classes_problem(cfg: Config, classes: Tuple[str, ...], what: str) -> Optional[str]:
    wrong = [(head, n) for head, n in _class_heads(cfg.get('model') or {})
             if isinstance(n, int) and n != len(classes)]
    if not wrong:
        return None
    shown = ', '.join(repr(c) for c in classes[:10]) + (', ...' if len(classes) > 10 else '')
    return (f'{" and ".join(f"{head}.num_classes={n}" for head, n in wrong)}, but {what} has '
            f'{len(classes)} classes ({shown}): set num_classes={len(classes)} in '
            f'{"each of these heads" if len(wrong) > 1 else "this head"}, e.g. --cfg-options '
            + ' '.join(f'{head}.num_classes={len(classes)}' for head, _ in wrong) +
            ' (or the same keys in your config).')


def _missing_files(paths: List[str], what: str, kind: str, fix: str) -> List[str]:
    """A message (in a list) if files of ``paths`` are missing."""
    missing = [p for p in paths if not osp.isfile(p)]
    if not missing:
        return []
    return [f'{len(missing)} of the {len(paths)} {kind} of {what} are missing, e.g. ' +
            ', '.join(missing[:FIRST]) + f'. Check its data_root and data_prefix (the paths '
            f'are joined as shown), or {fix}.']


def _read_annotation(path: str, what: str) -> Optional[dict]:
    """The COCO annotation file ``path``, or None (logged) if it is too big to read here.

    Raises:
        DatasetMismatchError: If it is no JSON object.
    """
    size_mb = osp.getsize(path) / 2**20
    if size_mb > MAX_ANNOTATION_MB:
        _log(f'Dataset check: {path} ({what}) has {size_mb:.0f} MB; its images, categories '
             f'and filters are checked for files up to {MAX_ANNOTATION_MB} MB only.')
        return None
    try:
        with open(path) as f:
            coco = json.load(f)
    except ValueError as error:
        raise DatasetMismatchError(f'{path} ({what}) is no COCO annotation file: it is no '
                                   f'JSON ({error}).') from None
    if not isinstance(coco, dict):
        raise DatasetMismatchError(f'{path} ({what}) is no COCO annotation file: it holds '
                                   f'a {type(coco).__name__}, not a JSON object.')
    return coco


class Findings(NamedTuple):
    """What the content check of one dataset found."""

    missing: List[str]
    """Messages about missing files."""
    mismatches: List[str]
    """Messages about config and data that do not fit."""
    size: Optional[int]
    """Training images after ``filter_cfg`` (None if unknown)."""


def _coco_check(dataset: dict, what: str, classes: Tuple[str, ...],
                train: bool) -> Findings:
    """Check a COCO-format dataset."""
    root = dataset.get('data_root') or ''
    ann_file = _join(root, dataset['ann_file'])
    coco = _read_annotation(ann_file, f'{what}.ann_file')
    if coco is None:
        return Findings([], [], None)
    categories = {c['name']: c['id'] for c in coco.get('categories', [])}
    unmatched = [c for c in classes if c not in categories]
    if unmatched:
        names = ', '.join(repr(c) for c in categories)
        metainfo = dataset.get('metainfo')
        if not (isinstance(metainfo, dict) and 'classes' in metainfo):
            return Findings([], [
                f'{what} gives no metainfo, so it reads the {len(classes)} classes of '
                f'{_type_name(dataset)} ({", ".join(map(repr, classes[:3]))}, ...), and '
                f'{len(unmatched)} of them are no category of {ann_file}. Name the classes to '
                f'train on in each dataset, e.g. metainfo=dict(classes=({names},)), and set '
                f'the heads\' num_classes to their number.'], None)
        return Findings([], [
            f'The metainfo classes {", ".join(map(repr, unmatched))} of {what} are no '
            f'category of {ann_file}, whose categories are: {names}. Make the metainfo '
            f'classes a selection of these names, spelled alike.'], None)
    images = coco.get('images', [])
    image_dir = _join(root, (dataset.get('data_prefix') or {}).get('img', ''))
    missing = []
    if _is_local(image_dir, dataset.get('backend_args')):
        missing = _missing_files([osp.join(image_dir, i['file_name']) for i in images], what,
                                 f'images listed in {ann_file}',
                                 'remove the missing ones from the annotation file')
    if not train or dataset.get('test_mode'):
        return Findings(missing, [], None)
    # What mmdet's CocoDataset.filter_data drops from training.
    filter_cfg = dict(dataset.get('filter_cfg') or {})
    wanted = {categories[c] for c in classes}
    annotated = {a['image_id'] for a in coco.get('annotations', [])
                 if a.get('category_id') in wanted}
    min_size = filter_cfg.get('min_size', 0)
    empty = {i['id'] for i in images
             if filter_cfg.get('filter_empty_gt', False) and i['id'] not in annotated}
    small = [i for i in images
             if i['id'] not in empty and min(i['width'], i['height']) < min_size]
    kept = len(images) - len(empty) - len(small)
    if empty or small:
        _log(f'Dataset check: filter_cfg={filter_cfg} of {what} drops {len(empty) + len(small)}'
             f' of its {len(images)} training images: {len(empty)} without annotations of '
             f'its classes (filter_empty_gt), {len(small)} smaller than min_size={min_size} '
             f'px' + (' (' + ', '.join(f'{i["file_name"]} {i["width"]}x{i["height"]}'
                                       for i in small[:FIRST]) + ')' if small else '') +
             '. Change filter_cfg to keep them.', logging.WARNING)
    mismatches = [] if kept else [
        f'{ann_file} ({what}) leaves no training image: it lists {len(images)} images, '
        f'filter_cfg={filter_cfg} drops {len(empty) + len(small)}. Add annotated images of '
        f'the metainfo classes, or relax filter_cfg.']
    return Findings(missing, mismatches, kept)


def _reduce_zero_label(dataset: dict, defaults: dict) -> bool:
    """The ``reduce_zero_label`` the label maps of ``dataset`` are loaded with: that of
    its ``LoadAnnotations``, else its own (mmseg asserts they agree)."""
    for transform in dataset.get('pipeline') or []:
        if _type_name(transform) == 'LoadAnnotations' and \
                transform.get('reduce_zero_label') is not None:
            return bool(transform['reduce_zero_label'])
    return bool(dataset.get('reduce_zero_label', defaults.get('reduce_zero_label', False)))


def _seg_check(dataset: dict, what: str, cls: type, num_classes: int) -> Findings:
    """Check a segmentation dataset: image/label pairs and sampled label values."""
    root = dataset.get('data_root') or ''
    prefix = dataset.get('data_prefix') or {}
    image_dir = _join(root, prefix.get('img_path', ''))
    label_dir = _join(root, prefix.get('seg_map_path', ''))
    if not (_is_local(image_dir, dataset.get('backend_args')) and osp.isdir(image_dir)):
        return Findings([], [], None)
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()}
    img_suffix = dataset.get('img_suffix', defaults.get('img_suffix', '.jpg'))
    seg_suffix = dataset.get('seg_map_suffix', defaults.get('seg_map_suffix', '.png'))
    if dataset.get('ann_file'):
        with open(_join(root, dataset['ann_file'])) as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        names = sorted(osp.relpath(osp.join(d, f), image_dir)[:-len(img_suffix)]
                       for d, _, files in os.walk(image_dir) for f in files
                       if f.endswith(img_suffix))
    labels = [osp.join(label_dir, n + seg_suffix) for n in names]
    fix = (f'remove them from {dataset["ann_file"]}' if dataset.get('ann_file') else
           'remove the images without label maps')
    missing = (_missing_files([osp.join(image_dir, n + img_suffix) for n in names], what,
                              'images', fix) +
               _missing_files(labels, what, f'label maps (in {label_dir})', fix))
    if missing or not labels:
        return Findings(missing, [], len(names))
    from PIL import Image
    reduce = _reduce_zero_label(dataset, defaults)
    ignore = dataset.get('ignore_index', defaults.get('ignore_index', 255))
    sample = labels[::max(1, len(labels) // MAX_LABEL_MAPS)][:MAX_LABEL_MAPS]
    _log(f'Dataset check: reading the values of {len(sample)} of the {len(labels)} label '
         f'maps of {what}' + (', spread over the dataset' if len(sample) < len(labels)
                              else ''), logging.DEBUG)
    bad = {}
    for path in sample:
        values = np.unique(np.asarray(Image.open(path))).astype(np.int64)
        if reduce:
            values = np.where(values == 0, 255, values - 1)
        outside = [int(v) for v in values if v >= num_classes and v != ignore]
        if outside:
            bad[path] = outside
    if not bad:
        return Findings([], [], len(names))
    path, values = next(iter(bad.items()))
    return Findings([], [
        f'{len(bad)} of the {len(sample)} label maps read from {what} hold values that are '
        f'neither a class (0..{num_classes - 1}, num_classes={num_classes}) nor the ignore '
        f'index {ignore}' + (' after reduce_zero_label (0 -> ignore, v -> v-1)' if reduce
                             else '') +
        f', e.g. {values[:10]} in {path}. Make metainfo classes and the heads\' num_classes '
        f'cover the label values' + ('' if reduce else ', or set reduce_zero_label=True if 0 '
                                     'means "other"') + '.'], len(names))


def warn_about_schedule(cfg: Config, train_size: Optional[int]) -> None:
    """Log warnings about an lr schedule that does not fit the run: a ``LinearLR`` warm-up
    that ends after the run, ``MultiStepLR`` milestones at or after its end.

    Args:
        cfg (Config): The config.
        train_size (int, optional): Training images, for iterations per epoch
            (``ceil(train_size / batch_size)`` on one process); None if unknown.
    """
    train_cfg = cfg.get('train_cfg') or {}
    schedulers = cfg.get('param_scheduler') or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else schedulers
    batch_size = (cfg.get('train_dataloader') or {}).get('batch_size', 1)
    per_epoch = math.ceil(train_size / batch_size) if train_size else None
    warnings = []
    for i, scheduler in enumerate(schedulers):
        kind = _type_name(scheduler)
        if kind not in ('LinearLR', 'MultiStepLR'):
            continue
        by_epoch = scheduler.get('by_epoch', True)
        if 'max_epochs' in train_cfg and by_epoch:
            total, unit, how = train_cfg['max_epochs'], 'epoch', ''
        elif 'max_iters' in train_cfg and not by_epoch:
            total, unit, how = train_cfg['max_iters'], 'iteration', ''
        elif 'max_epochs' in train_cfg and per_epoch:
            total, unit = train_cfg['max_epochs'] * per_epoch, 'iteration'
            how = (f' ({train_cfg["max_epochs"]} epochs x {per_epoch} iterations of '
                   f'{train_size} images at batch size {batch_size}, on one process)')
        else:
            _log(f'Dataset check: param_scheduler[{i}] ({kind}) was not compared with the '
                 f'length of the run (the number of training images is not known here).',
                 logging.DEBUG)
            continue
        end = scheduler.get('end', math.inf)
        if kind == 'LinearLR' and math.isfinite(end) and end > total:
            warnings.append(
                f'The warm-up param_scheduler[{i}] (LinearLR) ends at {unit} '
                f'{scheduler["end"]}, but the whole run is {total} {unit}s{how}: the lr never '
                f'reaches its value. Shorten it, e.g. --cfg-options param_scheduler.{i}.end='
                f'{max(1, total // 10)}.')
        # MultiStepLR counts its milestones from its begin.
        late = [m for m in scheduler.get('milestones', [])
                if scheduler.get('begin', 0) + m >= total] if kind == 'MultiStepLR' else []
        if late:
            warnings.append(
                f'param_scheduler[{i}] (MultiStepLR) has milestones {late} at or after the '
                f'end of the run ({total} {unit}s{how}): those lr drops never happen. Move '
                f'param_scheduler.{i}.milestones within the run.')
    for warning in warnings:
        _log(f'Dataset check: {warning}', logging.WARNING)


def check_dataset(cfg: Config, config: str, parts: Sequence[str]) -> None:
    """Check the data of the ``parts`` of ``cfg`` before the Runner is built (see the
    module docstring); problems raise, the rest is logged.

    Args:
        cfg (Config): The config.
        config (str): Its file, for the messages.
        parts (Sequence[str]): Dataloader and evaluator keys, the dataloader whose classes
            the model's heads must fit first, e.g. ``['train_dataloader', ...]``.

    Raises:
        DatasetNotFoundError: Naming every missing path, or the files a dataset lists
            that are missing.
        DatasetMismatchError: Naming each mismatch of config and data, and the fix.
    """
    check_dataset_files(cfg, config, parts)
    missing: List[str] = []
    mismatches: List[str] = []
    train_size: Optional[int] = None
    heads_checked = False
    for part in parts:
        for dataset, what in _leaf_datasets(cfg, part):
            cls = _dataset_class(cfg, dataset)
            classes = _classes(dataset, cls)
            if cls is None or classes is None:
                continue
            findings = Findings([], [], None)
            if _is_coco(cls) and dataset.get('ann_file') and \
                    _is_local(dataset['ann_file'], dataset.get('backend_args')):
                findings = _coco_check(dataset, what, classes, part == 'train_dataloader')
            elif _is_seg(cls):
                findings = _seg_check(dataset, what, cls, len(classes))
            missing += findings.missing
            mismatches += findings.mismatches
            # The heads must fit the classes of the first dataset, once they are right.
            if part == parts[0] and not heads_checked and not findings.mismatches:
                mismatches += filter(None, [_num_classes_problem(cfg, classes, what)])
                heads_checked = True
            if what == 'train_dataloader.dataset':
                train_size = findings.size
    if missing:
        raise DatasetNotFoundError('\n'.join(missing))
    if mismatches:
        raise DatasetMismatchError('\n'.join(mismatches))
    if 'train_dataloader' in parts:
        warn_about_schedule(cfg, train_size)


def _is_coco(cls: type) -> bool:
    try:
        from mmdet.datasets import CocoDataset
    except ImportError:
        return False
    return issubclass(cls, CocoDataset)


def _is_seg(cls: type) -> bool:
    try:
        from mmseg.datasets import BaseSegDataset
    except ImportError:
        return False
    return issubclass(cls, BaseSegDataset)
