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
import zipfile
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


def run_clean(cmd, cwd, env=None, fails=False) -> str:
    """Run ``cmd`` without PYTHONPATH (nothing but the environment itself on the path),
    with ``env`` added, and return its output; fail the test with the output tail if it
    fails (with ``fails``: if it succeeds)."""
    env = dict({k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}, **(env or {}))
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert (proc.returncode != 0) == fails, \
        f'{" ".join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-4000:]}'
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


@pytest.fixture(scope='module')
def editable_install(tmp_path_factory) -> dict:
    """``pip install -e`` of a copy of this checkout into a virtual environment layered on
    this one (it sees this environment's packages as installed and installs into its own
    site-packages), with no index. Returns its python, purelib, the copy and the stack's
    versions before the install."""
    root = tmp_path_factory.mktemp('editable')
    env = root / 'env'
    venv.create(str(env), with_pip=False)
    python = str(env / 'bin' / 'python')
    purelib = Path(run_clean(
        [python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        str(root)).strip())
    (purelib / 'existing_environment.pth').write_text('\n'.join(site.getsitepackages()))
    source = copy_checkout(str(root / 'biformer-mm'))
    names = STACK + sorted(PURE_PYTHON) + ['torchvision']
    before = installed_versions(sys.executable, names, str(root))
    run_clean([python, '-m', 'pip', 'install', '--no-index', '--no-build-isolation',
               '--disable-pip-version-check', '-e', source], str(root))
    return dict(python=python, purelib=purelib, source=source, root=str(root),
                names=names, before=before)


def test_pip_install_e_into_an_existing_environment_leaves_the_stack_untouched(
        editable_install):
    """pip must find every requirement satisfied, and the package import from the
    checkout."""
    python, purelib, source = (editable_install[k] for k in ('python', 'purelib', 'source'))
    root = editable_install['root']
    assert installed_versions(python, editable_install['names'], root) == \
        editable_install['before']
    assert [p.name for p in purelib.glob('*.dist-info')] == ['biformer_mm-0.1.0.dist-info']
    out = run_clean([python, '-c', 'import biformer_mm.engine; print(biformer_mm.__file__)'],
                    root)
    assert out.strip().splitlines()[-1] == osp.join(source, 'biformer_mm', '__init__.py')


def test_mim_runs_the_checkouts_tools_from_an_editable_install(editable_install, tmp_path):
    """``mim train/test biformer-mm`` after the link tools/setup_env.sh makes next to the
    editable install: mim finds the config by name and runs the checkout's train.py and
    test.py, which stop at their first check here (no data, no checkpoint)."""
    python, purelib, source = (editable_install[k] for k in ('python', 'purelib', 'source'))
    setup_env = Path(REPO_ROOT, 'tools', 'setup_env.sh').read_text().splitlines()
    link = [line for line in setup_env if line.startswith('ln -sfn "$ROOT/biformer_mm"')]
    assert len(link) == 1, 'tools/setup_env.sh no longer links the package for mim'
    run_clean(['bash', '-c', link[0]], str(tmp_path), dict(ROOT=source, PY=python))
    out = run_clean([python, '-c', 'import biformer_mm; print(biformer_mm.__file__)'],
                    str(tmp_path))
    assert out.strip().splitlines()[-1] == osp.join(source, 'biformer_mm', '__init__.py')

    tools = osp.join(purelib, 'biformer-mm', '.mim', 'tools')
    toy = osp.join(osp.realpath(source), 'configs', 'detection', 'toy',
                   'maskrcnn_biformer_t_toy_coco.py')
    out = run_clean([python, '-m', 'mim', 'train', 'biformer-mm', osp.basename(toy)],
                    str(tmp_path), fails=True)
    assert f'{python} {tools}/train.py {toy} ' in out
    assert 'train.py: error: DatasetNotFoundError' in out
    out = run_clean([python, '-m', 'mim', 'test', 'biformer-mm', toy, '--checkpoint',
                     'missing.pth'], str(tmp_path), fails=True)
    assert f'{python} {tools}/test.py {toy} missing.pth' in out
    assert 'test.py: error: FileNotFoundError: Checkpoint' in out


def test_a_wheel_ships_the_cpu_kernel_source_next_to_its_loader(tmp_path):
    """The fused CPU routed attention is compiled from its C++ source on first use: a
    wheel without it would leave every user of the wheel on the slower kernel."""
    source = copy_checkout(str(tmp_path / 'biformer-mm'))
    run_clean([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index',
               '--no-build-isolation', '--disable-pip-version-check', '-w',
               str(tmp_path / 'dist'), source], str(tmp_path))
    (wheel,) = (tmp_path / 'dist').glob('biformer_mm-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'biformer_mm/ops/cpp_routed_attention.py' in names
    assert 'biformer_mm/ops/routed_attention_cpu.cpp' in names
