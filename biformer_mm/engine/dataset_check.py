"""The pre-flight check of a config's data, before the Runner is built, so that mistakes
do not surface deep in the dataset code, hours into training, or not at all.

:func:`check_dataset` builds each dataset as the Runner will, with ``lazy_init`` (mmengine
joins the paths; mmdet and mmseg list the files and apply ``filter_cfg``), and raises one
error per kind of problem, naming it and the fix: paths missing (asked through mmengine's
file backends with the datasets' ``backend_args``; download advice for our COCO/ADE20K
layouts only); in local COCO-format datasets, classes that are no category or in
another order than the file's categories, and images missing on disk; in local
segmentation datasets, no image, missing label maps and, in up to :data:`MAX_LABEL_MAPS`
label maps, colour maps, sizes other than the image's and values beyond the classes;
heads whose ``num_classes`` is not the number of classes. Logged: a top-level
``data_root`` that no dataset uses, what ``filter_cfg`` drops, label values that mean 0
is a class under ``reduce_zero_label``, a ``LinearLR`` warm-up longer than the run,
``MultiStepLR`` milestones after it, paths a backend cannot ask here.
``--skip-data-check`` of the tools skips it all.
"""
import contextlib
import io
import logging
import math
import os.path as osp
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from mmengine import fileio
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import DATASETS
from PIL import Image

MAX_ANNOTATION_MB = 64  # larger annotation files (COCO 2017 train) are not read here
MAX_LABEL_MAPS = 50  # label maps whose values are read, per segmentation dataset
FIRST = 5  # missing files named in a message; the rest are counted


class DatasetNotFoundError(FileNotFoundError):
    """Files of a config's dataset are missing."""


class DatasetMismatchError(ValueError):
    """A config does not fit its data (classes, ``num_classes``, label values)."""


class DatasetHelp(NamedTuple):
    """What to tell a user whose copy of one of our datasets is missing; ``toy_configs``
    by config family (the name up to its first ``_``), the first for other configs."""

    name: str
    root_variable: str
    default_root: str
    example_root: str
    layout: Tuple[str, ...]
    make_toy: str
    toy_root: str
    toy_configs: Dict[str, str]


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
    """A path a dataset or evaluator will open: ``what`` is its config key, ``kind`` the
    dataset type (empty for evaluators), ``relative`` the path before ``data_root``."""

    path: str
    what: str
    kind: str
    relative: str
    backend_args: Optional[dict]


Problems = List[Exception]  # DatasetNotFoundError and DatasetMismatchError, one message each


def _log(message: str, level: int) -> None:
    print_log(f'Dataset check: {message}', logger='current', level=level)


def _leaves(dataset: dict, what: str) -> Iterator[Tuple[dict, str]]:
    """``(dataset, its key)`` of the datasets that read files under ``dataset``, through
    wrappers (``dataset``/``datasets`` keys)."""
    children = ([(dataset['dataset'], f'{what}.dataset')] if 'dataset' in dataset else []) + \
        [(child, f'{what}.datasets.{i}') for i, child in enumerate(dataset.get('datasets') or [])]
    if not children:
        yield dataset, what
    for child, key in children:
        yield from _leaves(child, key)


def build_lazily(cfg: Config, dataset: dict, what: str):
    """``dataset`` (the config ``what``) built as the Runner will, without reading its
    files: its ``metainfo`` and paths are set.

    Raises:
        DatasetMismatchError: If the dataset cannot be built.
    """
    with DATASETS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
        try:
            return registry.build({**dataset, 'lazy_init': True})
        except Exception as error:  # an unknown type or an argument it refuses
            raise DatasetMismatchError(f'{what} cannot be built: {type(error).__name__}: '
                                       f'{error}') from error


def _paths(cfg: Config, datasets: list, parts: Sequence[str]) -> List[DataPath]:
    """The paths the ``datasets`` and the evaluators of ``parts`` open, each once."""
    paths = []
    for dataset, what, _, built in datasets:
        kind, args, prefixes = (type(built).__name__, dataset.get('backend_args'),
                                dataset.get('data_prefix') or {})
        if built.ann_file:
            paths.append(DataPath(built.ann_file, f'{what}.ann_file', kind,
                                  dataset.get('ann_file') or '', args))
        paths += [DataPath(path, f'{what}.data_prefix.{key}', kind, prefixes[key], args)
                  for key, path in built.data_prefix.items() if prefixes.get(key)]
    for part in (p for p in parts if p.endswith('_evaluator') and cfg.get(p)):
        evaluators = cfg[part] if isinstance(cfg[part], (list, tuple)) else [cfg[part]]
        paths += [DataPath(e['ann_file'], f'{part}.ann_file', '', e['ann_file'],
                           e.get('backend_args'))
                  for e in evaluators if e.get('ann_file')]
    return [p for i, p in enumerate(paths) if p.path not in {q.path for q in paths[:i]}]


def _exists(entry: DataPath) -> bool:
    """Whether ``entry`` exists; a backend that cannot be asked counts as yes, logged."""
    try:
        return fileio.exists(entry.path, backend_args=entry.backend_args)
    except Exception as error:  # the backend's client is missing or unreachable here
        _log(f'{entry.path} ({entry.what}) was not checked: its file backend (backend_args='
             f'{entry.backend_args}) failed here with {type(error).__name__}: {error}',
             logging.WARNING)
        return True


def _missing_paths_message(config: str, missing: List[DataPath]) -> str:
    """Every missing path; download advice and the toy config for our COCO and ADE20K
    layouts only, the generator command for missing toy data."""
    lines = [f'The dataset of {config} is not where the config looks for it (paths relative '
             f'to {osp.abspath(".")}):']
    lines += [f'  missing: {entry.path}  ({entry.what})' for entry in missing]
    advice = []
    for kind in dict.fromkeys(entry.kind for entry in missing):
        info, entries = DATASET_HELP.get(kind), [e for e in missing if e.kind == kind]
        if info and all(e.path.startswith(info.toy_root.rstrip('/')) for e in entries):
            advice += ['Generate the toy data first:', f'  {info.make_toy}']
        elif info and all(e.relative.rstrip('/') in {osp.dirname(p) if '*' in p else p
                                                     for p in info.layout} for e in entries):
            toy = info.toy_configs.get(osp.basename(config).split('_')[0],
                                       next(iter(info.toy_configs.values())))
            advice += [
                f'Our configs read {info.name} from {info.default_root} unless the '
                f'environment variable {info.root_variable} names another directory, e.g. '
                f'{info.root_variable}={info.example_root} python tools/train.py {config}. '
                f'The standard layout is:',
                *(f'  {osp.join(info.default_root, entry)}' for entry in info.layout),
                'To try the whole pipeline on the built-in toy data instead (no download):',
                f'  {info.make_toy}', f'  python tools/train.py {toy}']
    lines += advice or [
        'Check data_root, ann_file and data_prefix of these datasets (and the evaluators\' '
        'ann_file). A top-level data_root in a child config does not move the datasets of '
        'its base config, which used the base\'s value when it was read: set each dataset\'s '
        'data_root (and the evaluators\' ann_file).']
    return '\n'.join(lines)


def _missing_files(paths: List[str], what: str, kind: str, fix: str) -> Problems:
    missing = [p for p in paths if not osp.isfile(p)]
    return [DatasetNotFoundError(
        f'{len(missing)} of the {len(paths)} {kind} of {what} are missing, e.g. ' +
        ', '.join(missing[:FIRST]) + f'. Check its data_root and data_prefix (the paths '
        f'are joined as shown), or {fix}.')] if missing else []


def _coco(built, dataset: dict, what: str, train: bool) -> Problems:
    """Classes vs categories, images on disk, and what ``filter_cfg`` drops from training
    (``built.data_list``: the images that stay)."""
    ann_file, classes = built.ann_file, built.metainfo['classes']
    if not ann_file:
        return []
    if osp.getsize(ann_file) > MAX_ANNOTATION_MB * 2**20:
        _log(f'{ann_file} ({what}) is over {MAX_ANNOTATION_MB} MB: its categories, images '
             f'and filters are not checked.', logging.INFO)
        return []
    categories = [c['name'] for c in fileio.load(ann_file, file_format='json')['categories']]
    unmatched, names = [c for c in classes if c not in categories], ', '.join(map(repr, categories))
    no_metainfo = (dataset.get('metainfo') or {}).get('classes') is None
    if unmatched:
        return [DatasetMismatchError((
            f'{what} gives no metainfo, so it reads the {len(classes)} classes of '
            f'{type(built).__name__} ({", ".join(map(repr, classes[:3]))}, ...), and '
            f'{len(unmatched)} of them are' if no_metainfo else
            f'The metainfo classes {", ".join(map(repr, unmatched))} of {what} are') +
            f' no category of {ann_file}, whose categories are: {names}. ' +
            (f'Name the classes to train on in each dataset, e.g. metainfo=dict(classes=('
             f'{names},)), and set the heads\' num_classes to their number.' if no_metainfo
             else 'Make the metainfo classes a selection of these names, spelled alike.'))]
    # mmdet numbers the labels in the order of the file's categories list (pycocotools'
    # getCatIds) and names label i classes[i]: another order names every label wrongly.
    in_file_order = [c for c in categories if c in classes]
    if in_file_order != list(classes):
        return [DatasetMismatchError(
            f'The metainfo classes of {what} are ({", ".join(map(repr, classes))}), but '
            f'mmdet numbers the labels in the order of the categories listed in {ann_file} '
            f'and names label i classes[i], so the predictions would carry the wrong names. '
            f'List the classes in the file\'s order: metainfo=dict(classes=('
            f'{", ".join(map(repr, in_file_order))},)).')]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools' progress lines
        infos = built.data_list = built.load_data_list()
    problems = _missing_files([i['img_path'] for i in infos], what,
                              f'images listed in {ann_file}',
                              'remove the missing ones from the annotation file')
    if not train:
        return problems
    built.data_list = built.filter_data()
    kept = {id(i) for i in built.data_list}
    dropped = [i for i in infos if id(i) not in kept]
    filter_cfg = dict(built.filter_cfg or {})
    min_size = filter_cfg.get('min_size', 0)
    small = [i for i in dropped if min(i['width'], i['height']) < min_size]
    if dropped:
        _log(f'filter_cfg={filter_cfg} of {what} drops {len(dropped)} of its {len(infos)} '
             f'training images: {len(dropped) - len(small)} without annotations of its '
             f'classes (filter_empty_gt), {len(small)} smaller than min_size={min_size} px' +
             (' (' + ', '.join(f'{osp.relpath(i["img_path"], built.data_prefix["img"])} '
                               f'{i["width"]}x{i["height"]}' for i in small[:FIRST]) + ')'
              if small else '') + '. Change filter_cfg to keep them.', logging.WARNING)
    return problems + ([] if kept else [DatasetMismatchError(
        f'{ann_file} ({what}) leaves no training image: it lists {len(infos)} images, '
        f'filter_cfg={filter_cfg} drops {len(dropped)}. Add annotated images of the '
        f'metainfo classes, or relax filter_cfg.')])


def _seg(built, dataset: dict, what: str, train: bool) -> Problems:
    """Image/label pairs, and the sampled label maps' format, size and values
    (``built.data_list``: the images)."""
    infos = built.data_list = built.load_data_list()
    images, labels = built.data_prefix['img_path'], built.data_prefix['seg_map_path']
    if not infos:
        return [DatasetNotFoundError(
            f'{what} finds no image: no file ending in img_suffix={built.img_suffix!r} in '
            f'{images}' + (f' listed in {built.ann_file}' if built.ann_file else '') +
            '. Check its data_root, data_prefix.img_path and img_suffix.')]
    label_paths = [i['seg_map_path'] for i in infos]
    fix = (f'remove them from {built.ann_file}' if built.ann_file else
           'remove the images without label maps')
    problems = _missing_files([i['img_path'] for i in infos], what, 'images', fix) + \
        _missing_files(label_paths, what, f'label maps (in {labels}, named as the images '
                       f'with seg_map_suffix={built.seg_map_suffix!r})',
                       f'check seg_map_suffix, or {fix}')
    num_classes, ignore, reduce = (len(built.metainfo['classes']), built.ignore_index,
                                   built.reduce_zero_label)
    step = max(1, len(infos) // MAX_LABEL_MAPS)
    sample = [] if problems else infos[::step][:MAX_LABEL_MAPS]
    bad, raw_seen = {}, set()
    for info in sample:  # as mmseg's LoadAnnotations: reduce_zero_label, then label_map
        path = info['seg_map_path']
        with Image.open(path) as label_map, Image.open(info['img_path']) as image:
            if label_map.size != image.size:
                problems.append(DatasetMismatchError(
                    f'The label map {path} of {what} is {label_map.size[0]}x'
                    f'{label_map.size[1]} pixels, its image {info["img_path"]} '
                    f'{image.size[0]}x{image.size[1]}: a label map gives one class per '
                    f'pixel of its image, at the same size.'))
                break
            values = np.asarray(label_map)
        if values.ndim != 2:
            problems.append(DatasetMismatchError(
                f'The label map {path} of {what} has {values.shape[-1]} channels: label maps '
                f'hold one class index per pixel (a one-channel or palette PNG), not '
                f'colours. Convert colour-coded maps to class indices.'))
            break
        values = np.unique(values).astype(np.int64)
        raw_seen.update(values.tolist())
        if reduce:
            values = np.where((values == 0) | (values == 255), 255, values - 1)
        outside = sorted(v for v in {(built.label_map or {}).get(v, v) for v in values.tolist()}
                         if v >= num_classes and v != ignore)
        if outside:
            bad[path] = outside
    if reduce and not bad and set(range(num_classes)) <= raw_seen and num_classes not in raw_seen:
        _log(f'The label maps read from {what} hold every value 0..{num_classes - 1} and '
             f'none {num_classes}, but reduce_zero_label=True ignores 0 and makes value v '
             f'class v-1: class {built.metainfo["classes"][-1]!r} never occurs, and value v '
             f'is learnt as classes[v-1]. If 0 is one of the {num_classes} classes (e.g. '
             f'background), set reduce_zero_label=False.', logging.WARNING)
    if not bad:
        return problems
    path, values = next(iter(bad.items()))
    return problems + [DatasetMismatchError(
        f'{len(bad)} of the {len(sample)} label maps read from {what} hold values that are '
        f'neither a class (0..{num_classes - 1}, num_classes={num_classes}) nor the ignore '
        f'index {ignore}' + (' after reduce_zero_label (0 -> ignore, v -> v-1)' if reduce
                             else '') +
        f', e.g. {values[:10]} in {path}. Make metainfo classes and the heads\' num_classes '
        f'cover the label values' + ('' if reduce else ', or set reduce_zero_label=True if 0 '
                                     'means "other"') + '.')]


def _heads(model, key: str = 'model') -> Iterator[Tuple[str, int]]:
    """``(config key, num_classes)`` of every part of ``model`` that sets it."""
    for name, value in model.items() if isinstance(model, dict) else enumerate(model):
        if isinstance(value, dict) and isinstance(value.get('num_classes'), int):
            yield f'{key}.{name}', value['num_classes']
        if isinstance(value, (dict, list, tuple)):
            yield from _heads(value, f'{key}.{name}')


def _num_classes_problems(cfg: Config, classes: Sequence[str], what: str) -> Problems:
    wrong = [(head, n) for head, n in _heads(cfg.get('model') or {}) if n != len(classes)]
    if not wrong:
        return []
    shown = ', '.join(map(repr, classes[:10])) + (', ...' if len(classes) > 10 else '')
    return [DatasetMismatchError(
        f'{" and ".join(f"{head}.num_classes={n}" for head, n in wrong)}, but {what} has '
        f'{len(classes)} classes ({shown}): set num_classes={len(classes)} in '
        f'{"each of these heads" if len(wrong) > 1 else "this head"}, e.g. --cfg-options ' +
        ' '.join(f'{head}.num_classes={len(classes)}' for head, _ in wrong) +
        ' (or the same keys in your config).')]


def _warn_about_schedule(cfg: Config, train_size: Optional[int]) -> None:
    """Warn about a ``LinearLR`` warm-up that ends after the run and ``MultiStepLR``
    milestones at or after its end; iterations per epoch are ``ceil(train_size /
    batch_size)`` on one process (``train_size``: training images, None if unknown)."""
    loop, batch_size = cfg.get('train_cfg') or {}, cfg.train_dataloader.get('batch_size', 1)
    schedulers = cfg.get('param_scheduler') or []
    single = isinstance(schedulers, dict)  # one scheduler, not a list of them
    for i, scheduler in enumerate([schedulers] if single else schedulers):
        # How the messages name it, and its key for --cfg-options.
        name, key = (('param_scheduler', 'param_scheduler') if single else
                     (f'param_scheduler[{i}]', f'param_scheduler.{i}'))
        kind = getattr(scheduler['type'], '__name__', str(scheduler['type']).split('.')[-1])
        if kind not in ('LinearLR', 'MultiStepLR'):
            continue
        by_epoch, how = scheduler.get('by_epoch', True), ''
        total = loop.get('max_epochs') if by_epoch else loop.get('max_iters')
        if not by_epoch and loop.get('max_epochs') and train_size:
            per_epoch = math.ceil(train_size / batch_size)
            total = loop['max_epochs'] * per_epoch
            how = (f' ({loop["max_epochs"]} epochs x {per_epoch} iterations of {train_size} '
                   f'images at batch size {batch_size}, on one process)')
        if total is None:
            _log(f'{name} ({kind}) was not compared with the length of the '
                 f'run (the number of training images is not known here).', logging.DEBUG)
            continue
        unit = 'epoch' if by_epoch else 'iteration'
        end = scheduler.get('end', math.inf)
        if kind == 'LinearLR' and total < end < math.inf:
            _log(f'The warm-up {name} (LinearLR) ends at {unit} {end}, but the whole run is '
                 f'{total} {unit}s{how}: the lr never reaches its value. Shorten it, e.g. '
                 f'--cfg-options {key}.end={max(1, total // 10)}.',
                 logging.WARNING)
        # MultiStepLR counts its milestones from its begin.
        late = [m for m in scheduler.get('milestones', [])
                if scheduler.get('begin', 0) + m >= total]
        if late:
            _log(f'{name} (MultiStepLR) has milestones {late} at or after the end of the '
                 f'run ({total} {unit}s{how}): those lr drops never happen. Move '
                 f'{key}.milestones within the run.', logging.WARNING)


def warn_of_unused_data_root(cfg: Config, config: str, parts: Sequence[str]) -> None:
    """Warn if the top-level ``data_root`` of ``cfg`` is the ``data_root`` of none of the
    datasets of ``parts``: one set in a child config or by ``--cfg-options`` moves nothing."""
    roots = {osp.normpath(dataset['data_root']) for part in parts
             if part.endswith('_dataloader') and (cfg.get(part) or {}).get('dataset')
             for dataset, _ in _leaves(cfg[part]['dataset'], part)
             if dataset.get('data_root')}
    if cfg.get('data_root') and roots and osp.normpath(cfg.data_root) not in roots:
        _log(f'data_root={cfg.data_root!r} of {config} is the data_root of none of its '
             f'datasets ({", ".join(sorted(roots))}): a data_root set in a child config or '
             f'by --cfg-options does not move the datasets of a base config, which used the '
             f'base\'s value when it was read. Set each dataset\'s data_root (e.g. '
             f'--cfg-options train_dataloader.dataset.data_root=...) and the evaluators\' '
             f'ann_file (docs/own_data.md).', logging.WARNING)


def check_dataset(cfg: Config, config: str, parts: Sequence[str]) -> None:
    """Check the data of the ``parts`` of ``cfg`` (dataloader and evaluator keys, first
    the dataloader whose classes the heads must fit) before the Runner is built; ``config``
    (its file) is named in the messages.

    Raises:
        DatasetNotFoundError: Naming every missing path, and the first missing files
            of each dataset with their count.
        DatasetMismatchError: Naming each mismatch of config and data, and the fix.
    """
    datasets = [(dataset, what, part, build_lazily(cfg, dataset, what)) for part in parts
                if part.endswith('_dataloader') and (cfg.get(part) or {}).get('dataset')
                for dataset, what in _leaves(cfg[part]['dataset'], f'{part}.dataset')]
    missing = [p for p in _paths(cfg, datasets, parts) if not _exists(p)]
    if missing:
        raise DatasetNotFoundError(_missing_paths_message(config, missing))
    problems: Problems = []
    for index, (dataset, what, part, built) in enumerate(datasets):
        classes, kinds = built.metainfo.get('classes'), {c.__name__ for c in type(built).__mro__}
        check = _coco if 'CocoDataset' in kinds else _seg if 'BaseSegDataset' in kinds else None
        local = (dataset.get('backend_args') or {}).get('backend', 'local') == 'local' and \
            '://' not in (built.ann_file or '') + ''.join(built.data_prefix.values())
        found = []
        try:  # the files of remote datasets are not read here
            if classes and check and local:
                found = check(built, dataset, what, part == 'train_dataloader')
        except (ValueError, TypeError, KeyError, AssertionError, OSError) as error:  # unreadable
            found = [DatasetMismatchError(f'The files of {what} cannot be read as a '
                                          f'{type(built).__name__}: {error!r}')]
        problems += found
        if index == 0 and classes and not any(isinstance(p, DatasetMismatchError) for p in found):
            problems += _num_classes_problems(cfg, classes, what)
    for kind in (DatasetNotFoundError, DatasetMismatchError):
        if any(isinstance(p, kind) for p in problems):
            raise kind('\n'.join(str(p) for p in problems if isinstance(p, kind)))
    if 'train_dataloader' in parts:  # iterations per epoch from the training images, if read
        train = [built for _, what, _, built in datasets if what == 'train_dataloader.dataset']
        _warn_about_schedule(cfg, len(train[0].data_list) or None if train else None)
