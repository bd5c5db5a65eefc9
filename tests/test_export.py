"""Specification of torch.export: the backbone exports with dynamic height and width to a
program of standard ATen operators that computes the padding to a multiple of ``n_win``
in the graph, so it equals eager at sizes that pad differently from the example, and
refuses (raises) sizes outside the range it was exported for."""
import operator

import pytest
import torch

# torch.export's automatic dynamic dims (Dim.AUTO) came with torch 2.6; the classic stack
# (torch 2.1) has neither them nor a stable torch.export.
Dim = getattr(torch.export, 'Dim', None)
if not hasattr(Dim, 'AUTO'):
    pytest.skip('torch.export with Dim.AUTO needs torch >= 2.6', allow_module_level=True)

from _export_cases import (EXPORT_SIZE, OTHER_SIZES, check_no_near_ties, image, max_errors,
                           tiny_backbone)

TOL = 1e-4


@pytest.fixture(scope='module')
def exported():
    model = tiny_backbone()
    check_no_near_ties(model, (EXPORT_SIZE, ) + OTHER_SIZES)
    program = torch.export.export(model, (image(EXPORT_SIZE), ),
                                  dynamic_shapes=({2: Dim.AUTO, 3: Dim.AUTO}, ))
    return model, program


def test_program_is_standard_aten_ops(exported):
    _, program = exported
    targets = {node.target for node in program.graph.nodes if node.op == 'call_function'}
    # No custom or higher-order operator: the program runs without biformer_mm.
    foreign = {t for t in targets
               if not (isinstance(t, torch._ops.OpOverload) and t.namespace == 'aten')
               and getattr(t, '__module__', None) not in ('_operator', operator.__name__)}
    assert not foreign, foreign
    names = {t.overloadpacket.__name__ for t in targets if isinstance(t, torch._ops.OpOverload)}
    assert {'pad', 'index_select', 'matmul', 'softmax'} <= names, names
    assert 'expand' not in names, names


@pytest.mark.parametrize('size', (EXPORT_SIZE, ) + OTHER_SIZES)
def test_program_equals_eager_at_sizes_that_pad_differently(exported, size):
    model, program = exported
    with torch.no_grad():
        errors = max_errors(model(image(size)), program.module()(image(size)))
    assert max(errors) <= TOL, f'{size}: exported program differs from eager by {errors}'


def test_program_refuses_sizes_outside_its_range(exported):
    _, program = exported
    # 16x16 leaves a stage map smaller than n_win: outside the range export derived.
    with pytest.raises(AssertionError, match='Guard failed'):
        program.module()(image((16, 16)))
