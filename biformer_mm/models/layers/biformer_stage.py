import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from torch import Tensor


class BiFormerStage(nn.Sequential):
    """The blocks of one BiFormer stage, run in order.

    A module of its own (rather than a loop over blocks in the model's forward) so that
    hooks on ``stages.{i}``, such as timm's ``FeatureHookNet``, see each stage's output.

    Attributes:
        with_cp (bool): Activation checkpointing per block while gradients are enabled:
            each block's activations are recomputed in the backward. Defaults to False.
    """

    def __init__(self, *blocks: nn.Module) -> None:
        super().__init__(*blocks)
        self.with_cp = False

    def forward(self, x: Tensor) -> Tensor:
        for block in self:
            if self.with_cp and torch.is_grad_enabled():
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x
