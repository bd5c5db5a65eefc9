"""Shared fixtures: repository paths, a subprocess runner, tiny toy datasets and the
checkpoints of short training runs of our tools on them."""
import functools
import importlib.util
import os
import os.path as osp
import shutil
import subprocess
import sys
from types import ModuleType
from typing import List, Optional

import pytest

if os.environ.get('PYTEST_XDIST_WORKER_COUNT'):
    # pytest-xdist (tools/run_tests.sh): the usable cores (as nproc counts them) shared
    # among the workers, so that the workers' torch and the tools they start do not run
    # more threads than cores. Read at torch's import, which no module imports before
    # this one.
    os.environ.setdefault('OMP_NUM_THREADS', str(max(
        1, len(os.sched_getaffinity(0)) // int(os.environ['PYTEST_XDIST_WORKER_COUNT']))))

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(REPO_ROOT, 'tools', 'train.py')
TEST = osp.join(REPO_ROOT, 'tools', 'test.py')
DET_CONFIG = osp.join(REPO_ROOT, 'configs', 'detection', 'maskrcnn_biformer_t.py')
DET_TOY = osp.join(REPO_ROOT, 'configs', 'detection', 'toy', 'maskrcnn_biformer_t_toy_coco.py')
SEG_CONFIG = osp.join(REPO_ROOT, 'configs', 'segmentation', 'fpn_biformer_t.py')
SEG_TOY = osp.join(REPO_ROOT, 'configs', 'segmentation', 'toy', 'fpn_biformer_t_toy_ade20k.py')
# One detection epoch is 2 iterations on the toy_coco_workdir's 4 images; 128x128 inputs
# keep steps short.
ONE_EPOCH = [
    '--cfg-options', 'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1',
    'train_dataloader.dataset.pipeline.2.scale=(128,128)',
    'val_dataloader.dataset.pipeline.1.scale=(128,128)',
    'test_dataloader.dataset.pipeline.1.scale=(128,128)'
]


def require_triton() -> ModuleType:
    """Triton, for a test that needs it: the test fails without it where this torch (a
    CUDA build for x86-64) requires it, and is skipped elsewhere."""
    import platform

    import torch
    try:
        import triton
    except ImportError:
        if torch.version.cuda and platform.machine() == 'x86_64':
            pytest.fail('Triton is not installed, though this torch (a CUDA build for '
                        'x86-64) requires it: rebuild the stack with tools/setup_env.sh')
        pytest.skip('Triton is not installed')
    return triton


@functools.lru_cache(maxsize=None)
def model_state_dict(config: str) -> dict:
    """The state dict of ``config``'s whole model as built (untrained): what a checkpoint
    of that config holds, key for key and shape for shape."""
    from mmengine.config import Config
    from mmengine.registry import MODELS
    cfg = Config.fromfile(config)
    with MODELS.switch_scope_and_registry(cfg.default_scope) as registry:
        return registry.build(cfg.model).state_dict()


def load_tool(relpath: str) -> ModuleType:
    """Import a script under ``tools/`` (not a package) as a module."""
    path = osp.join(REPO_ROOT, 'tools', relpath)
    spec = importlib.util.spec_from_file_location(osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_checkout(dest: str) -> str:
    """Copy this checkout's source files (no git data, environments, outputs or build
    files) to ``dest``, as a fresh clone would have them; returns ``dest``."""
    shutil.copytree(REPO_ROOT, dest, ignore=shutil.ignore_patterns(
        '.git', '.venv', '.venv-*', 'work_dirs', 'data', 'checkpoints', '__pycache__',
        '*.egg-info', '.mim', 'build'))
    return dest


def run(cmd: List[str], cwd: str, pythonpath: str = REPO_ROOT,
        env: Optional[dict] = None) -> str:
    """Run ``cmd`` with ``pythonpath`` first on PYTHONPATH (this checkout by default)
    and return its output; fail the test with the output tail if the command fails."""
    env = dict(os.environ, **(env or {}))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [pythonpath, env.get('PYTHONPATH')]))
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{proc.stdout[-6000:]}'
    return proc.stdout


class Payload:
    """Unpickling this runs code: it writes ``marker``. Pickled into checkpoints to
    check that no load runs it."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('the payload ran')", )


def save_scan_bypass(path, marker) -> str:
    """Save at ``path`` a ``torch.save`` checkpoint whose hand-written pickle calls
    ``builtins.exec`` to write ``marker``, through ``STACK_GLOBAL`` after pushing and
    popping two allowed-looking strings (which hides the call from a scan that takes the
    last two strings pushed as ``STACK_GLOBAL``'s names); returns ``str(path)``."""
    import io
    import pickle
    import struct
    import zipfile

    import torch

    def string(text: str) -> bytes:
        return pickle.BINUNICODE + struct.pack('<I', len(text.encode())) + text.encode()

    payload = (pickle.PROTO + b'\x02' + string('builtins') + string('exec') +
               string('collections') + string('OrderedDict') + pickle.POP + pickle.POP +
               pickle.STACK_GLOBAL +
               string(f"open({str(marker)!r}, 'w').write('the payload ran')") +
               pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)
    template = io.BytesIO()
    torch.save({}, template)
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(path, 'w') as target:
        for name in source.namelist():
            target.writestr(name, payload if name.endswith('/data.pkl') else
                            source.read(name))
    return str(path)


def make_layout(root: str, dataset_type: str) -> str:
    """The standard layout of ``dataset_type`` (``'CocoDataset'``, ``'ADE20KDataset'``)
    under ``root``: what the tools' dataset check looks for. COCO's annotation files
    list one (empty) image file each, with one annotation, and the 80 COCO categories;
    ADE20K's folders hold one 8x8 image and its label map each. Returns ``root``."""
    import numpy as np
    from PIL import Image

    from biformer_mm.engine.dataset_check import DATASET_HELP
    for entry in DATASET_HELP[dataset_type].layout:
        path = osp.join(root, entry)
        os.makedirs(osp.dirname(path), exist_ok=True)
        if '*' in entry:  # ADE20K's images (RGB) and label maps (class 1)
            image = np.ones((8, 8, 3) if entry.endswith('.jpg') else (8, 8), np.uint8)
            Image.fromarray(image).save(path.replace('*', '000001'))
        else:
            write_coco(path, ['000001.jpg'])
            split = osp.basename(path).split('_')[-1][:-len('.json')]
            os.makedirs(osp.join(root, split), exist_ok=True)
            open(osp.join(root, split, '000001.jpg'), 'w').close()
    return root


def write_coco(path: str, images: List[str], classes: Optional[List[str]] = None,
               sizes: Optional[dict] = None) -> str:
    """A COCO annotation file at ``path`` listing ``images`` (64x64 unless ``sizes``
    says ``{name: (width, height)}``), each with one box of the first class; categories
    ``classes`` (default: the 80 COCO classes). Returns ``path``."""
    import json
    if classes is None:
        from mmdet.datasets import CocoDataset
        classes = list(CocoDataset.METAINFO['classes'])
    sizes = sizes or {}
    coco = dict(
        images=[dict(id=i, file_name=name, width=sizes.get(name, (64, 64))[0],
                     height=sizes.get(name, (64, 64))[1]) for i, name in enumerate(images, 1)],
        annotations=[dict(id=i, image_id=i, category_id=1, bbox=[2, 2, 10, 10], area=100,
                          iscrowd=0, segmentation=[[2, 2, 12, 2, 12, 12, 2, 12]])
                     for i in range(1, len(images) + 1)],
        categories=[dict(id=i, name=name) for i, name in enumerate(classes, 1)])
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(coco, f)
    return path


@pytest.fixture
def coco_layout(tmp_path, monkeypatch) -> str:
    """An empty COCO 2017 layout where ``COCO_ROOT`` points (with its trailing slash)."""
    root = make_layout(str(tmp_path / 'coco'), 'CocoDataset') + '/'
    monkeypatch.setenv('COCO_ROOT', root)
    return root


@pytest.fixture
def imagenet_checkpoints(tmp_path, monkeypatch) -> str:
    """A working directory whose ``checkpoints/`` has a file at every configs' pretrained
    path (``biformer_{tiny,small,base}_best.pth``, empty state dicts), for tests of
    ``tools/train.py``'s configs that do not load them."""
    import torch
    workdir = tmp_path / 'workdir'
    (workdir / 'checkpoints').mkdir(parents=True)
    for arch in ('tiny', 'small', 'base'):
        torch.save({}, workdir / 'checkpoints' / f'biformer_{arch}_best.pth')
    monkeypatch.chdir(workdir)
    return str(workdir)


@pytest.fixture(scope='session')
def toy_coco_workdir(tmp_path_factory) -> str:
    """A working directory whose ``data/toy_coco`` holds the toy shapes dataset with 4
    training and 2 validation images: 2 iterations per epoch at batch size 2."""
    workdir = tmp_path_factory.mktemp('toy_coco_workdir')
    load_tool('dataset/make_toy_coco.py').make_toy_coco(
        str(workdir / 'data' / 'toy_coco'), num_train=4, num_val=2, seed=0)
    return str(workdir)


@pytest.fixture(scope='session')
def trained_det(toy_coco_workdir) -> dict:
    """One epoch (2 iterations) of tools/train.py on Mask R-CNN BiFormer-T with --amp,
    as on a CPU machine: ``work_dir`` and the tool's ``output``."""
    work_dir = osp.join(toy_coco_workdir, 'work_dirs', 'one_epoch')
    output = run([sys.executable, TRAIN, DET_TOY, '--work-dir',
                  work_dir, '--amp'] + ONE_EPOCH, cwd=toy_coco_workdir)
    return dict(work_dir=work_dir, output=output)


@pytest.fixture(scope='session')
def trained_seg(tmp_path_factory) -> str:
    """The work dir of 1 iteration of tools/train.py on Semantic FPN BiFormer-T, on a
    toy ADE20K of 4 training and 2 validation images."""
    root = tmp_path_factory.mktemp('toy_ade_train') / 'ADEChallengeData2016'
    load_tool('dataset/make_toy_ade20k.py').make_toy_ade20k(str(root), num_train=4,
                                                            num_val=2, seed=0)
    work_dir = str(root.parent / 'work_dir')
    data = [f'{split}_dataloader.dataset.data_root={root}'
            for split in ('train', 'val', 'test')]
    run([sys.executable, TRAIN, SEG_TOY, '--work-dir', work_dir,
         '--cfg-options', 'train_cfg.max_iters=1', 'default_hooks.checkpoint.interval=1',
         'train_cfg.val_begin=100', *data], cwd=REPO_ROOT)
    return work_dir


@pytest.fixture(scope='session')
def trained_checkpoints(trained_det, trained_seg) -> dict:
    """The checkpoints our tools wrote: ``{'det': path, 'seg': path}``."""
    return dict(det=osp.join(trained_det['work_dir'], 'epoch_1.pth'),
                seg=osp.join(trained_seg, 'iter_1.pth'))
