"""FLOPs and parameters of any module, by the convention of the BiFormer paper."""
from typing import Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer, parameter_count


def count_complexity(model: nn.Module, inputs: Tuple[torch.Tensor, ...],
                     parts: Sequence[str] = ()) -> dict:
    """FLOPs and parameters of ``model(*inputs)`` and of its submodules ``parts``.

    FLOPs are mmengine's ``FlopAnalyzer`` counts with the handles of
    :mod:`biformer_mm.analysis.flop_handles`: fvcore's convention, one fused
    multiply-add per FLOP; element-wise additions and activations, softmax and top-k not
    counted (norms, upsampling and adaptive pooling are, by mmengine's handles). An
    op counts towards a part when it runs inside that submodule's call.

    Args:
        model (nn.Module): Any module, traced as it is (put it in eval mode first).
        inputs (tuple[Tensor]): Positional inputs of ``model``.
        parts (Sequence[str]): Submodule names (as in ``named_modules``) to report.

    Returns:
        dict: ``flops`` and ``params`` of the model; ``parts``: ``{name: {'flops',
        'params', 'by_operator'}}``; ``by_operator``: FLOPs per counted operator;
        ``uncounted_ops``: operator -> number of calls the convention does not count.
    """
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        flops = analyzer.by_module()
        flops_by_operator = analyzer.by_module_and_operator()
    params = parameter_count(model)
    return dict(flops=flops[''], params=params[''],
                parts={name: dict(flops=flops[name], params=params[name],
                                  by_operator=dict(flops_by_operator[name]))
                       for name in parts},
                by_operator=dict(analyzer.by_operator()),
                uncounted_ops=dict(analyzer.unsupported_ops()))
