"""Specification: a tool run shows each warning of our dependencies' imports once. mmengine
reloads pkg_resources for every ``mmdet::``/``mmseg::`` base of a config, and each reload
used to repeat setuptools' deprecation warning of pkg_resources (5 times per tool run of
our detection configs)."""
import os
import subprocess
import sys

import pytest

from conftest import DET_CONFIG, REPO_ROOT, TRAIN

pytestmark = pytest.mark.classic


def test_the_pkg_resources_deprecation_is_shown_at_most_once_per_tool_run(tmp_path):
    # Without COCO, tools/train.py stops after reading the config (all its bases).
    proc = subprocess.run([sys.executable, TRAIN, DET_CONFIG], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=600,
                          env={**{k: v for k, v in os.environ.items() if k != 'COCO_ROOT'},
                               'PYTHONPATH': REPO_ROOT})
    assert 'DatasetNotFoundError' in proc.stderr, proc.stderr[-3000:]
    assert (proc.stdout + proc.stderr).count('pkg_resources is deprecated') <= 1, proc.stderr
