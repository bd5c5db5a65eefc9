"""Specification of installing biformer_mm into an existing MMDetection/MMSegmentation
environment: ``pip install -e .`` never reinstalls or upgrades its stack, and the versions
``setup.py`` states as supported hold for the environment this suite runs in (each of
the two tested stacks is one end of the ranges)."""
import importlib.metadata
import importlib.util
import json
import os
import os.path as osp
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from conftest import REPO_ROOT, copy_checkout

pytestmark = pytest.mark.classic


def load_setup():
    spec = importlib.util.spec_from_file_location('biformer_mm_setup',
                                                  osp.join(REPO_ROOT, 'setup.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SETUP = load_setup()
STACK = sorted(SETUP.SUPPORTED_STACK)
PURE_PYTHON = {Requirement(r).name: str(Requirement(r).specifier)
               for r in SETUP.INSTALL_REQUIRES}


def run_clean(cmd, cwd) -> str:
    """Run ``cmd`` without PYTHONPATH (nothing but the environment itself on the path)
    and return its output; fail the test with the output tail if it fails."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, f'{" ".join(cmd)} failed:\n{proc.stdout[-4000:]}'
    return proc.stdout


def installed_versions(python: str, names, cwd) -> dict:
    code = ('import importlib.metadata as m, json, sys; '
            'print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))')
    return json.loads(run_clean([python, '-c', code, *names], cwd).strip().splitlines()[-1])


def test_this_environment_is_inside_the_supported_ranges():
    assert Version('%d.%d.%d' % sys.version_info[:3]) in SpecifierSet(SETUP.PYTHON_REQUIRES)
    for name, spec in {**SETUP.SUPPORTED_STACK, **PURE_PYTHON}.items():
        version = importlib.metadata.version(name)
        assert Version(version) in SpecifierSet(spec), f'{name} {version} not in {spec!r}'


def test_stack_is_no_install_requirement():
    """pip must not even consider upgrading what an existing environment was built on."""
    assert not set(STACK) & set(PURE_PYTHON)


def test_pip_install_e_into_an_existing_environment_leaves_the_stack_untouched(tmp_path):
    """``pip install -e .`` in a virtual environment layered on this one (it sees this
    environment's packages as installed and installs into its own site-packages), with
    no index: pip must find every requirement satisfied."""
    env = tmp_path / 'env'
    venv.create(str(env), with_pip=False)
    python = str(env / 'bin' / 'python')
    purelib = Path(run_clean(
        [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        str(tmp_path)).strip())
    (purelib / 'existing_environment.pth').write_text('\n'.join(site.getsitepackages()))
    source = copy_checkout(str(tmp_path / 'biformer-mm'))
    names = STACK + sorted(PURE_PYTHON) + ['torchvision']
    before = installed_versions(sys.executable, names, str(tmp_path))

    run_clean([python, '-m', 'pip', 'install', '--no-index', '--no-build-isolation',
               '--disable-pip-version-check', '-e', source], str(tmp_path))

    assert installed_versions(python, names, str(tmp_path)) == before
    assert [p.name for p in purelib.glob('*.dist-info')] == ['biformer_mm-0.1.0.dist-info']
    out = run_clean([python, '-c', 'import biformer_mm.engine; print(biformer_mm.__file__)'],
                    str(tmp_path))
    assert out.strip().splitlines()[-1] == osp.join(source, 'biformer_mm', '__init__.py')
