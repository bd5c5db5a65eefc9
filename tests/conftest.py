"""Shared fixtures: repository paths and a tiny toy COCO dataset."""
import importlib.util
import os.path as osp
from types import ModuleType

import pytest

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_tool(relpath: str) -> ModuleType:
    """Import a script under ``tools/`` (not a package) as a module."""
    path = osp.join(REPO_ROOT, 'tools', relpath)
    spec = importlib.util.spec_from_file_location(osp.splitext(osp.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def toy_coco_workdir(tmp_path_factory) -> str:
    """A working directory whose ``data/toy_coco`` holds the toy shapes dataset with 4
    training and 2 validation images: 2 iterations per epoch at batch size 2."""
    workdir = tmp_path_factory.mktemp('toy_coco_workdir')
    load_tool('dataset/make_toy_coco.py').make_toy_coco(
        str(workdir / 'data' / 'toy_coco'), num_train=4, num_val=2, seed=0)
    return str(workdir)
