"""Specification of ValidateBeforeTrainingHook, on the toy ADE20K data."""
import os

import pytest

from biformer_mm.engine import ValidateBeforeTrainingHook, build_runner, load_config
from conftest import SEG_TOY, load_tool


@pytest.fixture(scope='module')
def toy_ade20k(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp('toy_ade_hook') / 'ADEChallengeData2016'
    load_tool('dataset/make_toy_ade20k.py').make_toy_ade20k(str(root), num_train=4,
                                                            num_val=2, seed=0)
    return str(root)


def two_iteration_runner(toy_ade20k: str, work_dir: str, **options):
    cfg = load_config(SEG_TOY, {
        **{f'{s}_dataloader.dataset.data_root': toy_ade20k for s in ('train', 'val', 'test')},
        'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2, **options})
    cfg.work_dir = work_dir
    runner = build_runner(cfg)
    hook = ValidateBeforeTrainingHook()
    runner.register_hook(hook)
    return runner, hook


def test_records_the_untrained_and_the_trained_metrics_without_a_best_checkpoint_of_the_untrained(
        toy_ade20k, tmp_path):
    runner, hook = two_iteration_runner(toy_ade20k, str(tmp_path))
    runner.train()
    assert [(h['iter'], sorted(h['metrics'])) for h in hook.history] == [
        (0, ['aAcc', 'mAcc', 'mIoU']), (2, ['aAcc', 'mAcc', 'mIoU'])]
    # save_best='mIoU' (from the recipe) saves the best of the real validations only.
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith('.pth')) == [
        'best_mIoU_iter_2.pth', 'iter_2.pth']


def test_a_config_without_validation_trains_with_a_warning(toy_ade20k, tmp_path):
    runner, hook = two_iteration_runner(toy_ade20k, str(tmp_path), val_cfg=None,
                                        val_dataloader=None, val_evaluator=None)
    runner.train()
    assert hook.history == []
    assert runner.iter == 2
    [log] = [os.path.join(root, f) for root, _, files in os.walk(tmp_path) for f in files
             if f.endswith('.log')]
    assert 'WARNING - ValidateBeforeTrainingHook: the config has no validation' in \
        open(log).read()
