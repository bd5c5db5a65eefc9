"""Packaging of biformer_mm, with the files OpenMMLab's ``mim`` looks for.

``mim train/test biformer_mm ...`` runs ``biformer_mm/.mim/tools/{train,test}.py`` and
finds configs under ``biformer_mm/.mim/configs``; :func:`add_mim_extension` creates that
directory like mmdet's setup.py does: symlinks to the repository's ``configs/``,
``tools/`` and ``model-index.yml`` for editable installs, copies when building a wheel or
an sdist.
"""
import os
import os.path as osp
import platform
import shutil
import sys

from setuptools import find_packages, setup

MIM_FILES = ('configs', 'tools', 'model-index.yml')

PYTHON_REQUIRES = '>=3.10'
"""Python 3.10 to 3.12; CI runs the suite on 3.11 (docs/install.md)."""

INSTALL_REQUIRES = ['mmengine>=0.10.7,<0.11', 'timm>=1.0.31,<1.1']
"""Pure-Python requirements, which pip installs or upgrades where needed."""

SUPPORTED_STACK = {
    # The fused Triton kernels need Triton 3 (torch >= 2.4's CUDA wheels bring it); with
    # an older Triton, 'auto' uses the pure PyTorch implementation and logs why.
    'torch': '>=2.1',
    'mmcv': '>=2.1.0,<2.2.0',
    'mmdet': '>=3.3.0,<3.4',
    'mmsegmentation': '>=1.2.2,<1.3',
    'numpy': '>=1.26',
}
"""Supported versions of the compiled, CUDA-specific stack of an MMDetection /
MMSegmentation environment and of numpy, which it is built against. Both ends are
tested: the classic stack (torch 2.1.2, numpy 1.26) and the modern one (torch 2.14.1,
numpy 2). They are deliberately not ``install_requires``: installing biformer_mm into an
existing environment must never reinstall or upgrade them (``tests/test_install.py``).
``tools/setup_env.sh`` installs them; the ``det``/``seg`` extras install mmdet/mmseg."""


def mim_mode() -> str:
    """'symlink' for editable installs, 'copy' for wheels/sdists, '' otherwise."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        # Windows cannot always make symlinks.
        return 'copy' if platform.system() == 'Windows' else 'symlink'
    if 'sdist' in sys.argv or 'bdist_wheel' in sys.argv:
        return 'copy'
    return ''


def add_mim_extension() -> None:
    """Make ``biformer_mm/.mim/{configs,tools,model-index.yml}`` for the current setup
    command (see :func:`mim_mode`)."""
    mode = mim_mode()
    if not mode:
        return
    repo_path = osp.dirname(osp.abspath(__file__))
    mim_path = osp.join(repo_path, 'biformer_mm', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src_path = osp.join(repo_path, name)
        tar_path = osp.join(mim_path, name)
        if not osp.exists(src_path):
            continue
        if osp.isfile(tar_path) or osp.islink(tar_path):
            os.remove(tar_path)
        elif osp.isdir(tar_path):
            shutil.rmtree(tar_path)
        if mode == 'symlink':
            os.symlink(osp.relpath(src_path, mim_path), tar_path)
        elif osp.isfile(src_path):
            shutil.copyfile(src_path, tar_path)
        else:
            shutil.copytree(src_path, tar_path,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='biformer_mm',
        version='0.1.0',
        description='BiFormer (Bi-Level Routing Attention, CVPR 2023) backbones for '
        'MMDetection 3.x and MMSegmentation 1.x, and its ImageNet classifiers for timm',
        long_description=open('README.md').read() if osp.isfile('README.md') else '',
        long_description_content_type='text/markdown',
        keywords='computer vision, object detection, semantic segmentation, '
        'image classification, biformer, timm',
        packages=find_packages(include=['biformer_mm*']),
        include_package_data=True,
        python_requires=PYTHON_REQUIRES,
        install_requires=INSTALL_REQUIRES,
        extras_require={
            'det': [f'mmdet{SUPPORTED_STACK["mmdet"]}'],
            # mmsegmentation 1.2.2 imports ftfy and regex without declaring them.
            'seg': [f'mmsegmentation{SUPPORTED_STACK["mmsegmentation"]}', 'ftfy', 'regex'],
            'mim': ['openmim'],
            'all': [f'mmdet{SUPPORTED_STACK["mmdet"]}',
                    f'mmsegmentation{SUPPORTED_STACK["mmsegmentation"]}', 'ftfy', 'regex',
                    'openmim'],
        },
        classifiers=[
            'Programming Language :: Python :: 3.10',
            'Programming Language :: Python :: 3.11',
            'Programming Language :: Python :: 3.12',
        ],
        zip_safe=False)
