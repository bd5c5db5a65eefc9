"""A hook that evaluates the model before it is trained."""
from typing import Dict, List, Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import Runner


@HOOKS.register_module()
class ValidateBeforeTrainingHook(Hook):
    """Run the validation loop once right before the first training iteration, and
    record the metrics of every validation run.

    With it, one training run reports what the freshly initialised model scores and what
    training made of it, on the same evaluator::

        custom_hooks = [dict(type='ValidateBeforeTrainingHook')]

    Attributes:
        history (list[dict]): ``dict(epoch, iter, metrics)`` of each validation run, in
            order; the first is the untrained model's.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.history: List[Dict] = []

    def before_train(self, runner: Runner) -> None:
        """Validate the model as initialised (or as resumed)."""
        runner.val_loop.run()

    def after_val_epoch(self, runner: Runner,
                        metrics: Optional[Dict[str, float]] = None) -> None:
        """Record the metrics of a validation run."""
        self.history.append(
            dict(epoch=runner.epoch, iter=runner.iter, metrics=dict(metrics or {})))
