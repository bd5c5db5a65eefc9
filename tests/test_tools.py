"""Specification of tools/train.py, tools/test.py, tools/dist_train.sh and mim support,
run as a user runs them: in subprocesses, on the toy COCO data, on the CPU."""
import os
import os.path as osp
import re
import shutil
import socket
import sys

import pytest
import torch

from biformer_mm.engine import cli
from biformer_mm.safe_load import read_checkpoint
from conftest import DET_CONFIG as CONFIG
from conftest import DET_TOY as TOY
from conftest import ONE_EPOCH, REPO_ROOT, TEST, TRAIN, copy_checkout, run

cpu_only = pytest.mark.skipif(torch.cuda.is_available(),
                              reason='exercises the CPU-only code path')


def checkpoint_meta(path: str) -> dict:
    return read_checkpoint(path, allowed=())['meta']


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.classic
def test_train_py_runs_two_iterations_and_saves_a_checkpoint(trained_det):
    assert 'Epoch(train) [1][2/2]' in trained_det['output']
    checkpoint = osp.join(trained_det['work_dir'], 'epoch_1.pth')
    meta = checkpoint_meta(checkpoint)
    assert (meta['epoch'], meta['iter']) == (1, 2)
    assert osp.isfile(osp.join(trained_det['work_dir'], 'maskrcnn_biformer_t_toy_coco.py')), \
        'the merged config is saved next to the checkpoints'


@pytest.mark.classic
@cpu_only
def test_amp_falls_back_to_fp32_with_a_warning_without_gpu(trained_det, coco_layout,
                                                            imagenet_checkpoints):
    assert 'training in fp32 with OptimWrapper instead' in trained_det['output']
    args = cli.train_parser().parse_args([CONFIG])
    cfg = cli.train_config(args)
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert 'loss_scale' not in cfg.optim_wrapper


@pytest.mark.classic
def test_test_py_evaluates_the_checkpoint_with_coco_metric_and_draws(trained_det,
                                                                     toy_coco_workdir):
    vis_dir = osp.join(trained_det['work_dir'], 'vis')
    output = run([sys.executable, TEST, TOY, osp.join(trained_det['work_dir'], 'epoch_1.pth'),
                  '--work-dir', trained_det['work_dir'], '--show-dir', vis_dir],
                 cwd=toy_coco_workdir)
    assert 'coco/bbox_mAP:' in output and 'coco/segm_mAP:' in output
    assert 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all' in output
    assert sorted(os.listdir(vis_dir)) == ['000001.png', '000002.png']


@pytest.mark.classic
def test_resume_continues_from_the_last_checkpoint(trained_det, toy_coco_workdir):
    # A run stopped after its first epoch leaves epoch_1.pth and last_checkpoint behind.
    work_dir = osp.join(toy_coco_workdir, 'work_dirs', 'resumed')
    shutil.copytree(trained_det['work_dir'], work_dir)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work_dir, 'epoch_1.pth'))
    output = run([sys.executable, TRAIN, TOY, '--work-dir', work_dir, '--resume',
                  '--cfg-options', 'train_cfg.max_epochs=2'],
                 cwd=toy_coco_workdir)
    assert 'resumed epoch: 1, iter: 2' in output
    assert 'Epoch(train) [1]' not in output
    meta = checkpoint_meta(osp.join(work_dir, 'epoch_2.pth'))
    assert (meta['epoch'], meta['iter']) == (2, 4)


@pytest.mark.classic
def test_resume_from_a_missing_file_names_the_problem():
    args = cli.train_parser().parse_args([CONFIG, '--resume', 'no/such/epoch_3.pth'])
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f'Checkpoint {os.getcwd()}/no/such/epoch_3.pth does '
                                       f'not exist. Give --resume a checkpoint file, or no '
                                       f'value')):
        cli.train_config(args)


@pytest.mark.classic
def test_resume_with_nothing_to_resume_says_it_starts_afresh(tmp_path, coco_layout,
                                                             imagenet_checkpoints, monkeypatch):
    """Auto-resume in an empty work dir trains from the start, as mmdet's tools/train.py,
    and says so, naming the load_from it does not load."""
    logged = []
    monkeypatch.setattr(cli, 'print_log', lambda msg, **kwargs: logged.append(msg))
    cfg = cli.train_config(cli.train_parser().parse_args([
        CONFIG, '--work-dir', str(tmp_path), '--resume', '--cfg-options',
        'load_from=pretrained/detector.pth']))
    assert cfg.resume is True and cfg.load_from is None
    assert any(f'--resume: {tmp_path} has no checkpoint to resume from, so training starts '
               f'from the beginning; load_from=pretrained/detector.pth is not loaded' in m
               for m in logged), logged


@pytest.mark.classic
def test_command_line_options_reach_the_config(tmp_path, coco_layout, imagenet_checkpoints):
    args = cli.train_parser().parse_args([
        CONFIG, '--work-dir', str(tmp_path), '--auto-scale-lr', '--resume',
        '--launcher', 'none', '--cfg-options', 'train_cfg.max_epochs=3'
    ])
    cfg = cli.train_config(args)
    assert cfg.work_dir == str(tmp_path)
    assert cfg.auto_scale_lr.enable is True
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.train_cfg.max_epochs == 3
    assert cli.train_config(cli.train_parser().parse_args([CONFIG])).work_dir == \
        './work_dirs/maskrcnn_biformer_t'
    # torch.distributed.launch passes either spelling.
    assert cli.train_parser().parse_args([CONFIG, '--local-rank', '1']).local_rank == 1
    assert cli.train_parser().parse_args([CONFIG, '--local_rank', '1']).local_rank == 1


@pytest.mark.classic
def test_test_py_rejects_a_missing_checkpoint():
    args = cli.test_parser().parse_args([CONFIG, 'missing.pth'])
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f'Checkpoint {os.getcwd()}/missing.pth does not exist')):
        cli.test_config(args)


@cpu_only
def test_dist_train_sh_trains_with_two_cpu_processes(toy_coco_workdir):
    work_dir = osp.join(toy_coco_workdir, 'work_dirs', 'dist')
    # Batch size 1 per process: the 4 images make 2 iterations on each of 2 processes.
    output = run(['bash', osp.join(REPO_ROOT, 'tools', 'dist_train.sh'), TOY, '2',
                  '--work-dir', work_dir] + ONE_EPOCH +
                 ['train_dataloader.batch_size=1'],
                 cwd=toy_coco_workdir,
                 env=dict(PYTHON=sys.executable, PORT=str(free_port())))
    # mmengine's logger prints on rank 0 only; 'of 2' shows both processes joined.
    assert 'initialised a gloo process group (rank 0 of 2)' in output
    assert 'Epoch(train) [1][2/2]' in output
    assert 'coco/bbox_mAP:' in output
    meta = checkpoint_meta(osp.join(work_dir, 'epoch_1.pth'))
    assert (meta['epoch'], meta['iter']) == (1, 2)


@pytest.fixture(scope='module')
def installed_package(tmp_path_factory):
    """biformer_mm installed from a copy of this checkout as a regular (non-editable)
    package, with the ``.mim`` files copied in; returns the directory to put first on
    PYTHONPATH."""
    root = tmp_path_factory.mktemp('mim_install')
    source, target = root / 'source', root / 'site'
    copy_checkout(str(source))
    run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps',
         '--no-build-isolation', '--no-index', '--target', str(target), str(source)],
        cwd=str(root))
    return str(target)


def test_wheel_ships_configs_tools_and_model_index_for_mim(installed_package):
    mim_dir = osp.join(installed_package, 'biformer_mm', '.mim')
    for path in ('model-index.yml', 'tools/train.py', 'tools/test.py',
                 'tools/dist_train.sh', 'configs/detection/maskrcnn_biformer_s.py',
                 'configs/detection/metafile.yml',
                 'configs/detection/_base_/maskrcnn_biformer_fpn_1x_coco.py',
                 'configs/detection/toy/maskrcnn_biformer_t_toy_coco.py'):
        assert osp.isfile(osp.join(mim_dir, path)), path
        assert not osp.islink(osp.join(mim_dir, path)), 'a wheel must hold copies'


def test_mim_train_and_test(installed_package, toy_coco_workdir):
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    work_dir = osp.join(toy_coco_workdir, 'work_dirs', 'mim')
    # mim finds the config inside the installed package by its name.
    output = run([mim, 'train', 'biformer_mm', 'maskrcnn_biformer_t_toy_coco.py',
                  '--work-dir', work_dir] + ONE_EPOCH, cwd=toy_coco_workdir,
                 pythonpath=installed_package)
    assert osp.join(installed_package, 'biformer_mm', '.mim', 'tools', 'train.py') in output
    assert 'Epoch(train) [1][2/2]' in output
    checkpoint = osp.join(work_dir, 'epoch_1.pth')

    # Spelled as a distribution name, too (the spelling docs/install.md gives for mim).
    output = run([mim, 'test', 'biformer-mm', TOY, '--checkpoint', checkpoint,
                  '--work-dir', work_dir], cwd=toy_coco_workdir,
                 pythonpath=installed_package)
    assert 'coco/bbox_mAP:' in output and 'coco/segm_mAP:' in output

    # mmdet's own test.py with the config train.py saved.
    output = run([mim, 'test', 'mmdet', osp.join(work_dir, 'maskrcnn_biformer_t_toy_coco.py'),
                  '--checkpoint', checkpoint, '--work-dir', work_dir],
                 cwd=toy_coco_workdir, pythonpath=installed_package)
    assert osp.join('mmdet', '.mim', 'tools', 'test.py') in output
    assert 'coco/bbox_mAP:' in output and 'coco/segm_mAP:' in output
