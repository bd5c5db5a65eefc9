"""Specification of ONNX export with torch.onnx: both exporters turn the backbone, whatever
its ``attn_impl``, into standard ONNX operators (the routed attention as a ``Gather`` of
the routed key/value rows, ``MatMul`` and ``Softmax``, no ``Expand`` copy) that
onnxruntime runs to the eager outputs within 1e-4, at the export size and, with dynamic
height and width, at sizes that pad to a multiple of ``n_win`` differently; what cannot
be exported right is refused with the reason. tools/deploy/export_onnx.py exports
detectors and segmentors of our configs the same way and checks them on an image."""
import inspect
import os.path as osp
import warnings
from collections import Counter
from typing import Dict, List, Tuple
from unittest import mock

import mmcv
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import Tensor

from _export_cases import (EXPORT_SIZE, MIN_MARGIN, OTHER_SIZES, SEED, check_no_near_ties,
                           image, max_errors, routing_margin, tiny_backbone)
from biformer_mm.analysis import build_tensor_mode
from biformer_mm.engine import load_config
from biformer_mm import onnx_export
from biformer_mm.ops import ATTN_IMPLS, routed_attention, routed_attention_gather
from biformer_mm.ops import export_path
from biformer_mm.ops.export_path import EXPORT_SLICE_REGIONS, SLICED_EXPORT
from conftest import DET_TOY, REPO_ROOT, SEG_TOY, load_tool

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


def moves_one_axis(perm: List[int]) -> bool:
    """Whether a permutation moves a single axis, the others keeping their order."""
    return any(perm[:i] + perm[i + 1:] == sorted(perm[:i] + perm[i + 1:])
               for i in range(len(perm)))


def check_standard_ops(path: str) -> None:
    """The graph is default-domain ONNX; each of the four attention blocks is one
    ``Softmax`` between ``MatMul``s; routed rows are ``Gather``ed, never ``Expand``ed;
    every ``Transpose`` moves one axis, which onnxruntime runs as a strided copy (any
    other permutation one block at a time on one thread: docs/benchmarks.md measured the
    layout nodes of two BRA layers 28% and 41% faster this way)."""
    nodes = onnx.load(path).graph.node
    ops = Counter(node.op_type for node in nodes)
    assert {node.domain for node in nodes} <= {'', 'ai.onnx'}, ops
    assert 'Expand' not in ops, ops
    assert {'TopK', 'Gather', 'MatMul'} <= set(ops), ops
    assert ops['Softmax'] == 4, ops
    perms = [list(onnx.helper.get_attribute_value(a)) for node in nodes
             if node.op_type == 'Transpose' for a in node.attribute if a.name == 'perm']
    assert perms and all(map(moves_one_axis, perms)), perms


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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.onnx.export(tiny_backbone(attn_impl), (image(EXPORT_SIZE), ), path,
                          opset_version=opset, input_names=['image'],
                          dynamic_axes={'image': {2: 'height', 3: 'width'}}, **LEGACY)
    # A TracerWarning from our code means a size became a constant of the graph.
    ours = [f'{w.filename}:{w.lineno}' for w in caught
            if issubclass(w.category, torch.jit.TracerWarning) and 'biformer_mm' in w.filename]
    assert not ours, ours
    check_standard_ops(path)
    check_against_eager(path, eager_outputs)


@pytest.mark.classic
def test_legacy_exporter_refuses_opsets_without_dynamic_slices(tmp_path):
    # Opset 9 has no Slice with computed bounds: the crop would be fixed.
    with pytest.raises(torch.onnx.errors.SymbolicValueError, match='higher opset version'):
        torch.onnx.export(tiny_backbone(), (image(EXPORT_SIZE), ), str(tmp_path / 'b.onnx'),
                          opset_version=9, input_names=['image'],
                          dynamic_axes={'image': {2: 'height', 3: 'width'}}, **LEGACY)


@pytest.mark.parametrize('attn_impl', ATTN_IMPLS)
def test_dynamo_exporter_is_right_at_every_size(attn_impl, eager_outputs, tmp_path):
    path = str(tmp_path / 'backbone.onnx')
    auto = torch.export.Dim.AUTO
    torch.onnx.export(tiny_backbone(attn_impl), (image(EXPORT_SIZE), ), path, dynamo=True,
                      input_names=['image'], dynamic_shapes=({2: auto, 3: auto}, ))
    check_standard_ops(path)
    check_against_eager(path, eager_outputs)


@pytest.mark.parametrize('exporter', [pytest.param('legacy', marks=pytest.mark.classic),
                                      'dynamo'])
def test_routed_attention_is_exported_in_slices_of_regions_from_torch_2_4_right_at_every_size(
        exporter, tmp_path):
    # 40 query regions: slices of 16, 16 and 8, each one Softmax; the key/values of all
    # 40 regions are routed to every slice. Tokens per region is dynamic. Before torch
    # 2.4 (whose legacy exporter is quadratic in the nodes) one slice, and a log says so.
    n, heads, regions, topk, dim = 2, 2, 40, 4, 8
    assert SLICED_EXPORT == (tuple(map(int, torch.__version__.split('.')[:2])) >= (2, 4))
    generator = torch.Generator().manual_seed(SEED)

    def inputs(tokens: int) -> Tuple[Tensor, ...]:
        q, k, v = (torch.randn(n, heads, regions, tokens, dim, generator=generator)
                   for _ in range(3))
        r_idx = torch.stack([
            torch.randperm(regions, generator=generator)[:topk]
            for _ in range(n * regions)
        ]).view(n, regions, topk)
        return q, k, v, r_idx

    class Attention(torch.nn.Module):

        def forward(self, q, k, v, r_idx):
            return routed_attention(q, k, v, r_idx, dim**-0.5)

    path = str(tmp_path / 'attention.onnx')
    names = ['q', 'k', 'v', 'r_idx']
    with mock.patch.object(export_path, 'print_log') as log, \
            mock.patch.object(export_path, '_logged_one_slice', set()):
        if exporter == 'legacy':
            torch.onnx.export(Attention(), inputs(9), path, opset_version=17,
                              input_names=names, **LEGACY,
                              dynamic_axes={name: {3: 'tokens'} for name in names[:3]})
        else:
            tokens = torch.export.Dim('tokens', min=2, max=64)
            torch.onnx.export(Attention(), inputs(9), path, dynamo=True, input_names=names,
                              dynamic_shapes=[{3: tokens}] * 3 + [None])
    ops = Counter(node.op_type for node in onnx.load(path).graph.node)
    if SLICED_EXPORT:
        assert ops['Softmax'] == -(-regions // EXPORT_SLICE_REGIONS) == 3, ops
        log.assert_not_called()
    else:
        assert ops['Softmax'] == 1, ops
        log.assert_called_once()
        assert 'pytorch#121422' in log.call_args.args[0], log.call_args
    assert 'Expand' not in ops, ops
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for tokens in (9, 16, 25):
        case = inputs(tokens)
        actual, = session.run(None, dict(zip(names, (t.numpy() for t in case))))
        expected = routed_attention_gather(*case, dim**-0.5)
        assert np.abs(actual - expected.numpy()).max() <= TOL, tokens


export_onnx = load_tool('deploy/export_onnx.py')
RETINANET_TOY = osp.join(REPO_ROOT, 'configs', 'detection', 'toy',
                         'retinanet_biformer_t_toy_coco.py')
TOOL_SHAPE = (128, 160)
# 4x4 regions (as tests/test_get_flops.py): with 7x7 the random models route with near ties.
SMALL_REGIONS = {'model.backbone.n_win': 4}


def tool_model(config: str, photo: str, dynamic: bool, seed: int) -> str:
    """Write a checkpoint of the random weights of ``seed`` for ``config`` (with 4x4
    regions), checking that they route ``photo`` as ``--verify`` feeds it without a near
    tie; return its path."""
    torch.manual_seed(seed)
    network, inputs = build_tensor_mode(load_config(config, SMALL_REGIONS),
                                        TOOL_SHAPE)
    verify_inputs, _ = export_onnx.verify_inputs(network, photo, inputs.shape[2:], dynamic)
    checked = [verify_inputs]
    if dynamic:  # and the input the tool checks dynamic graphs with
        assert verify_inputs.shape != inputs.shape
        checked.append(onnx_export.other_size_input(inputs))
    for x in checked:
        assert routing_margin(network.model.backbone, x) >= MIN_MARGIN, 'near tie'
    checkpoint = osp.join(osp.dirname(photo), 'weights.pth')
    torch.save({'state_dict': network.model.state_dict()}, checkpoint)
    return checkpoint


@pytest.fixture
def photo(tmp_path) -> str:
    """A 90x200 image: --verify with --dynamic rescales it to 72x160 (padded to 96x160 for
    the detector), a size the export at 128x160 did not see, which pads differently."""
    path = str(tmp_path / 'photo.png')
    mmcv.imwrite(np.random.default_rng(0).integers(0, 256, (90, 200, 3), dtype=np.uint8),
                 path)
    return path


def run_tool(config, checkpoint, photo, *options) -> int:
    return export_onnx.main([
        config, '--checkpoint', checkpoint, '--out',
        osp.join(osp.dirname(photo), 'model.onnx'), '--shape', *map(str, TOOL_SHAPE),
        '--verify', photo, '--cfg-options', 'model.backbone.n_win=4', *options])


@pytest.mark.classic
def test_export_onnx_tool_verifies_a_dynamic_detector_at_another_size(photo, capsys):
    checkpoint = tool_model(RETINANET_TOY, photo, dynamic=True, seed=7)
    assert run_tool(RETINANET_TOY, checkpoint, photo, '--dynamic') == 0
    printed = capsys.readouterr().out
    assert 'dynamic height and width' in printed and 'at [1, 3, 96, 160]: max' in printed


@pytest.mark.classic
def test_export_onnx_tool_verifies_a_static_segmentor_exported_without_gradients(
        photo, capsys, monkeypatch):
    """The tool exports with autograd off: the legacy exporter runs the forward, and
    recording gradients would keep every activation alive (BiFormer-S at 800x1216: 9.1
    against 1.9 GB peak)."""
    checkpoint = tool_model(SEG_TOY, photo, dynamic=False, seed=12)
    grad_enabled, export = [], torch.onnx.export

    def recording_export(*args, **kwargs):
        grad_enabled.append(torch.is_grad_enabled())
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, 'export', recording_export)
    assert run_tool(SEG_TOY, checkpoint, photo) == 0
    assert 'at [1, 3, 128, 160]: max difference' in capsys.readouterr().out
    assert grad_enabled == [False]


@pytest.mark.classic
def test_export_onnx_tool_refuses_a_dynamic_graph_wrong_at_other_sizes(photo):
    # mmseg's Upsample in the Semantic FPN head computes its output size with int():
    # tracing fixes it at the export size.
    checkpoint = tool_model(SEG_TOY, photo, dynamic=True, seed=7)
    with pytest.raises(ValueError,
                       match=r'computes sizes in Python.*static sizes \(without --dynamic'):
        run_tool(SEG_TOY, checkpoint, photo, '--dynamic')


@pytest.mark.classic
def test_export_onnx_refuses_a_network_in_training_mode(tmp_path):
    """In training mode BatchNorm would use, update and export the example's batch
    statistics."""
    model = tiny_backbone().train()
    with pytest.raises(ValueError, match=r'eval mode \(network.eval\(\)\)'):
        onnx_export.export_onnx(model, image(EXPORT_SIZE), str(tmp_path / 'model.onnx'))
    assert not (tmp_path / 'model.onnx').exists()


@pytest.mark.classic
def test_a_nan_in_the_outputs_is_an_infinite_error_not_none(tmp_path):
    """NaN compares as no difference: the check reports it as infinite instead."""

    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x - 2)  # NaN for inputs in [0, 1), in both runtimes

    path = str(tmp_path / 'log.onnx')
    onnx_export.export_onnx(Log().eval(), torch.rand(1, 3, 8, 8), path)
    assert onnx_export.onnx_errors(path, Log().eval(), torch.rand(1, 3, 8, 8)) == [float('inf')]


@pytest.mark.classic
def test_export_onnx_tool_refuses_two_stage_detectors(tmp_path):
    with pytest.raises(ValueError, match='two-stage detector.*mmdeploy'):
        export_onnx.main([DET_TOY, '--shape', '128', '128',
                          '--out', str(tmp_path / 'maskrcnn.onnx')])
