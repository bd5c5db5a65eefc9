"""An optimizer-wrapper constructor whose parameter groups ``torch.compile`` can trace."""
import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class CompilableOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, with the optimizer's parameter groups as plain
    dicts.

    With a ``paramwise_cfg``, mmengine 0.10.7 hands the optimizer its groups inside the
    optimizer's ``ConfigDict``, which turns them into ``ConfigDict``s; torch 2.14's dynamo
    cannot read a dict subclass in ``torch.optim``'s ``step``, so a config with
    ``compile=True``, whose compiled ``train_step`` includes that step, fails. The
    groups' contents (parameters, lr and weight-decay multipliers) are unchanged::

        compile = True
        optim_wrapper = dict(constructor='CompilableOptimWrapperConstructor')
    """

    def __call__(self, model: nn.Module) -> OptimWrapper:
        optim_wrapper = super().__call__(model)
        groups = optim_wrapper.optimizer.param_groups
        groups[:] = [dict(group) for group in groups]
        return optim_wrapper
