"""Specification of ONNX export with torch.onnx: both exporters turn the backbone, whatever
its ``attn_impl``, into standard ONNX operators (the routed attention as a ``Gather`` of
the routed key/value rows, ``MatMul`` and ``Softmax``, no ``Expand`` copy) that
onnxruntime runs to the eager outputs within 1e-4, at the export size and, with dynamic
height and width, at sizes that pad to a multiple of ``n_win`` differently; what cannot
be exported right is refused with the reason."""
import inspect
from collections import Counter
from typing import Dict, List, Tuple

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor

from _export_cases import (EXPORT_SIZE, OTHER_SIZES, check_no_near_ties, image, max_errors,
                           tiny_backbone)
from biformer_mm.ops import ATTN_IMPLS

TOL = 1e-4
SIZES = (EXPORT_SIZE, ) + OTHER_SIZES
# torch >= 2.5 picks its exporter with dynamo= (the dynamo one by default from 2.9); the
# classic stack's torch 2.1 has only the legacy (TorchScript) one.
LEGACY = {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}


@pytest.fixture(scope='module')
def eager_outputs() -> Dict[Tuple[int, int], Tuple[Tensor, ...]]:
    """The eager outputs (CPU implementation) at every size, after checking that no input
    has a routing near tie."""
    model = tiny_backbone('torch')
    check_no_near_ties(model, SIZES)
    with torch.no_grad():
        return {size: model(image(size)) for size in SIZES}


def check_standard_ops(path: str) -> None:
    """The graph is default-domain ONNX; each of the four attention blocks is one
    ``Softmax`` between ``MatMul``s; routed rows are ``Gather``ed, never ``Expand``ed."""
    nodes = onnx.load(path).graph.node
    ops = Counter(node.op_type for node in nodes)
    assert {node.domain for node in nodes} <= {'', 'ai.onnx'}, ops
    assert 'Expand' not in ops, ops
    assert {'TopK', 'Gather', 'MatMul'} <= set(ops), ops
    assert ops['Softmax'] == 4, ops


def onnxruntime_outputs(path: str, size: Tuple[int, int]) -> List[np.ndarray]:
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return session.run(None, {'image': image(size).numpy()})


def check_against_eager(path: str, eager_outputs) -> None:
    for size in SIZES:
        errors = max_errors(eager_outputs[size], onnxruntime_outputs(path, size))
        assert max(errors) <= TOL, f'{size}: onnxruntime differs from eager by {errors}'


@pytest.mark.classic
@pytest.mark.parametrize('opset', [11, 17])
@pytest.mark.parametrize('attn_impl', ATTN_IMPLS)
def test_legacy_exporter_is_right_at_every_size(attn_impl, opset, eager_outputs, tmp_path):
    path = str(tmp_path / 'backbone.onnx')
    torch.onnx.export(tiny_backbone(attn_impl), (image(EXPORT_SIZE), ), path,
                      opset_version=opset, input_names=['image'],
                      dynamic_axes={'image': {2: 'height', 3: 'width'}}, **LEGACY)
    check_standard_ops(path)
    check_against_eager(path, eager_outputs)


@pytest.mark.classic
def test_legacy_exporter_refuses_opsets_without_dynamic_padding(tmp_path):
    # Opsets before 11 have no Pad with computed sizes: the padding would be fixed.
    with pytest.raises(torch.onnx.errors.SymbolicValueError, match='opset version 11'):
        torch.onnx.export(tiny_backbone(), (image(EXPORT_SIZE), ), str(tmp_path / 'b.onnx'),
                          opset_version=10, input_names=['image'],
                          dynamic_axes={'image': {2: 'height', 3: 'width'}}, **LEGACY)


@pytest.mark.parametrize('attn_impl', ATTN_IMPLS)
def test_dynamo_exporter_is_right_at_every_size(attn_impl, eager_outputs, tmp_path):
    path = str(tmp_path / 'backbone.onnx')
    auto = torch.export.Dim.AUTO
    torch.onnx.export(tiny_backbone(attn_impl), (image(EXPORT_SIZE), ), path, dynamo=True,
                      input_names=['image'], dynamic_shapes=({2: auto, 3: auto}, ))
    check_standard_ops(path)
    check_against_eager(path, eager_outputs)
