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
        python_requires='>=3.8',
        install_requires=[
            # 2.4 is the first torch whose CUDA wheels bring Triton 3, which the fused
            # routed-attention kernels need; with an older Triton, or none, 'auto' uses
            # the pure PyTorch implementation and logs why.
            'torch>=2.4',
            'mmengine>=0.10.7,<0.11',
            'mmcv>=2.1.0,<2.2.0',
            'timm>=1.0.31,<1.1',
        ],
        extras_require={
            'det': ['mmdet>=3.3.0,<3.4'],
            # mmsegmentation 1.2.2 imports ftfy and regex without declaring them.
            'seg': ['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex'],
            'mim': ['openmim'],
            'all': ['mmdet>=3.3.0,<3.4', 'mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex',
                    'openmim'],
        },
        zip_safe=False)
