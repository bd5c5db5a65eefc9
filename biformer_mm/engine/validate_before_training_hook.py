"""A hook that evaluates the model before it is trained."""
import logging
from typing import Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import Runner
from mmengine.runner.amp import autocast


@HOOKS.register_module()
class ValidateBeforeTrainingHook(Hook):
    """Evaluate the model once before training (``custom_hooks =
    [dict(type='ValidateBeforeTrainingHook')]``), and record every validation run.

    The first evaluation runs the validation dataloader and evaluator outside the
    validation loop, so no other hook (no "best" checkpoint) sees it. Without
    validation (``val_cfg=None``) the hook logs a warning and records nothing.

    Attributes:
        history (list[dict]): ``dict(epoch, iter, metrics)`` of each evaluation, in
            order; the first is the untrained model's.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.history: List[Dict] = []

    def before_train(self, runner: Runner) -> None:
        loop = runner.val_loop
        if loop is None:
            print_log('ValidateBeforeTrainingHook: the config has no validation '
                      '(val_cfg is None), so nothing is evaluated before training.',
                      logger='current', level=logging.WARNING)
            return
        runner.model.eval()
        for data_batch in loop.dataloader:
            with torch.no_grad(), autocast(enabled=loop.fp16):
                outputs = runner.model.val_step(data_batch)
            loop.evaluator.process(data_samples=outputs, data_batch=data_batch)
        metrics = loop.evaluator.evaluate(len(loop.dataloader.dataset))
        runner.model.train()
        print_log(f'Before training (iteration {runner.iter}): ' +
                  '  '.join(f'{k}: {v:.4f}' if isinstance(v, float) else f'{k}: {v}'
                            for k, v in metrics.items()), logger='current')
        self._record(runner, metrics)

    def after_val_epoch(self, runner: Runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        self._record(runner, metrics)

    def _record(self, runner: Runner, metrics: Optional[Dict[str, float]]) -> None:
        self.history.append(
            dict(epoch=runner.epoch, iter=runner.iter, metrics=dict(metrics or {})))
