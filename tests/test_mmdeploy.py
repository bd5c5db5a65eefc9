"""mmdeploy 1.3.1 end to end on the classic stack: the deploy configs of configs/deploy/
convert BiFormer detectors (Mask R-CNN, RetinaNet) and segmentors (UperNet, Semantic
FPN) to onnxruntime with mmdeploy.apis.torch2onnx, and the onnxruntime models predict
what mmdet/mmseg predict on the same image.

Weights are random (SEED), with the classifiers sharpened so that scores and mask
probabilities spread out instead of sitting at their initial near-ties. Outputs go
through discrete decisions (top-k routing, the ranking and NMS of detections, the mask
threshold) that float noise flips wherever a decision lies within that noise of a tie,
differently on different CPUs. So the tests compare PyTorch's TOP best detections, and
first check that every routing, ranking and NMS decision shaping them has a margin
(MIN_MARGIN), rather than loosen a tolerance: a seed that decides near a tie fails with
"pick another SEED". Mask pixels are too many for that (some always lie within
MIN_MARGIN of the threshold): those few are left out, every other pixel must be equal.
"""
import contextlib
import glob
import os.path as osp
from typing import Dict, Iterator

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

from _export_cases import recorded_routing_margins
from biformer_mm.engine import load_config
from conftest import DET_TOY, REPO_ROOT, load_tool

pytestmark = [
    pytest.mark.classic,
    pytest.mark.skipif(
        tuple(int(v) for v in torch.__version__.split('.')[:2]) >= (2, 2),
        reason='mmdeploy 1.3.1 needs torch <= 2.1: the classic stack (docs/deploy.md)'),
]

DEPLOY_DIR = osp.join(REPO_ROOT, 'configs', 'deploy')
RETINANET_TOY = osp.join(REPO_ROOT, 'configs', 'detection', 'toy',
                         'retinanet_biformer_t_toy_coco.py')
UPERNET_CONFIG = osp.join(REPO_ROOT, 'configs', 'segmentation', 'upernet_biformer_t.py')
FPN_CONFIG = osp.join(REPO_ROOT, 'configs', 'segmentation', 'fpn_biformer_t.py')
SEED = 0
# Random weights from SEED (no ImageNet checkpoint) and 4x4 routing regions: with 16
# regions per map the routing decisions keep margins far above float32 noise (with the
# configs' 16x16 regions, some of the thousands of decisions per image come within 1e-7
# of a tie), so PyTorch and onnxruntime must route alike.
TEST_BACKBONE = {'model.backbone.init_cfg': None, 'model.backbone.n_win': 4}
MIN_MARGIN = 1e-5
TOP = 20  # PyTorch's best detections compared per image


def deploy_config(name: str) -> str:
    return osp.join(DEPLOY_DIR, f'{name}.py')


@pytest.fixture(autouse=True)
def one_thread():
    """PyTorch on one thread, as the seed was chosen: with more threads its reductions
    round differently (1e-7), and a mask pixel whose probability lies that close to the
    0.5 threshold can flip, a near tie of the binarisation, not an export error."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def verify():
    return load_tool('deploy/mmdeploy_verify.py')


@contextlib.contextmanager
def postprocessing_margins() -> Iterator[Dict[str, list]]:
    """Record, per image, how far from a tie mmdet decides its TOP best detections:
    ``'nms'``: for each of them and every other candidate of its class in the last NMS
    (the RoI head's, RetinaNet's), the distance of their IoU from the NMS threshold and,
    where it is above (one suppresses the other), the gap of their scores. And, as
    ``'undecided'``, one map per detection of the mask pixels whose probability lies
    within MIN_MARGIN of ``mask_thr_binary``: each pasted mask has thousands of pixels
    and some always lie that close, so those pixels are left out of the comparison
    rather than the seed chosen around them. The RPN's NMS is not recorded: a flipped
    proposal shows as a box difference."""
    from mmcv.ops import batched_nms
    from mmdet.models.dense_heads import base_dense_head
    from mmdet.models.layers import bbox_nms
    from mmdet.models.roi_heads.mask_heads import fcn_mask_head
    from mmdet.structures.bbox import bbox_overlaps
    recorded: Dict[str, list] = {'nms': [], 'undecided': []}
    originals = {(m, name): getattr(m, name) for m, name in [
        (base_dense_head, 'batched_nms'), (bbox_nms, 'batched_nms'),
        (fcn_mask_head, '_do_paste_mask'), (fcn_mask_head.FCNMaskHead, 'predict_by_feat')]}
    pasted: list = []

    def recording_nms(boxes, scores, idxs, nms_cfg, class_agnostic=False):
        dets, keep = batched_nms(boxes, scores, idxs, nms_cfg, class_agnostic)
        threshold, margin = nms_cfg['iou_threshold'], float('inf')
        for t in keep[:TOP].tolist():
            others = (idxs == idxs[t]) | class_agnostic
            others[t] = False
            if others.any():
                iou = bbox_overlaps(boxes[t, None], boxes[others])[0]
                gap = (scores[others] - scores[t]).abs().masked_fill(iou <= threshold, 1.)
                margin = min(margin, (iou - threshold).abs().min().item(), gap.min().item())
        recorded['nms'].append(margin)
        return dets, keep

    def recording_paste(masks, boxes, img_h, img_w, skip_empty=True):
        pasted_masks, spatial = originals[(fcn_mask_head, '_do_paste_mask')](
            masks, boxes, img_h, img_w, skip_empty)
        pasted.append((pasted_masks, spatial, img_h, img_w))  # one call per detection
        return pasted_masks, spatial

    def recording_predict(self, *args, rcnn_test_cfg, **kwargs):
        pasted.clear()
        results = originals[(fcn_mask_head.FCNMaskHead, 'predict_by_feat')](
            self, *args, rcnn_test_cfg=rcnn_test_cfg, **kwargs)
        undecided = torch.zeros(len(pasted), *pasted[0][2:], dtype=torch.bool)
        for i, (probabilities, spatial, _, _) in enumerate(pasted):
            undecided[(i, ) + spatial] = (
                probabilities[0] - rcnn_test_cfg.mask_thr_binary).abs() <= MIN_MARGIN
        recorded['undecided'].append(undecided)
        return results

    for module, name in originals:
        setattr(module, name, {'batched_nms': recording_nms, '_do_paste_mask': recording_paste,
                               'predict_by_feat': recording_predict}[name])
    try:
        yield recorded
    finally:
        for (module, name), value in originals.items():
            setattr(module, name, value)


def make_checkpoint(cfg: Config, path: str, sharpen: Dict[str, float]) -> str:
    """Seeded weights of ``cfg.model``, with the weights of the last layers named in
    ``sharpen`` scaled by its factors, so that scores and mask probabilities spread over
    (0, 1) instead of sitting at their initial near-ties (sigmoid 0.5, softmax
    1/(C+1))."""
    init_default_scope(cfg.default_scope)
    torch.manual_seed(SEED)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        for name, factor in sharpen.items():
            model.get_submodule(name).weight.mul_(factor)
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


def toy_image(path: str, height: int, width: int) -> str:
    """An image of the toy COCO dataset (shapes on a noisy background), cropped to
    ``height x width``."""
    make_image = load_tool('dataset/make_toy_coco.py').make_image
    side = max(height, width)
    image, _ = make_image(np.random.default_rng(SEED), side, side, max_shapes=4)
    cv2.imwrite(path, image[:height, :width])
    return path


def toy_scene(path: str, height: int, width: int) -> str:
    """An image of the toy ADE20K dataset (a street scene)."""
    render_scene = load_tool('dataset/make_toy_ade20k.py').render_scene
    cv2.imwrite(path, render_scene(np.random.default_rng(SEED), height, width)[0])
    return path


def test_deploy_configs_are_complete_and_say_what_they_export():
    """Each config loads without an mmdeploy checkout (no _base_ outside this folder)
    and exports for onnxruntime with the codebase, task and shapes its name says."""
    from mmdeploy.utils import (get_backend, get_codebase, get_task_type, is_dynamic_shape,
                                load_config as load_deploy_config)
    expected = {
        'instance-seg_onnxruntime_static': ('mmdet', 'ObjectDetection', False),
        'instance-seg_onnxruntime_dynamic': ('mmdet', 'ObjectDetection', True),
        'detection_onnxruntime_static': ('mmdet', 'ObjectDetection', False),
        'detection_onnxruntime_dynamic': ('mmdet', 'ObjectDetection', True),
        'segmentation_onnxruntime_static-512x512': ('mmseg', 'Segmentation', False),
    }
    shipped = sorted(osp.splitext(osp.basename(p))[0]
                     for p in glob.glob(osp.join(DEPLOY_DIR, '*.py')))
    assert shipped == sorted(expected)
    for name, (codebase, task, dynamic) in expected.items():
        cfg = load_deploy_config(deploy_config(name))[0]
        assert get_backend(cfg).value == 'onnxruntime'
        assert get_codebase(cfg).value == codebase and get_task_type(cfg).value == task
        assert is_dynamic_shape(cfg) == dynamic, name
        outputs = cfg.onnx_config.output_names
        assert ('masks' in outputs) == name.startswith('instance-seg'), name


@pytest.mark.parametrize('model_config, deploy_name, sharpen', [
    (DET_TOY, 'instance-seg_onnxruntime_dynamic', {
        'rpn_head.rpn_cls': 10., 'roi_head.bbox_head.fc_cls': 10.,
        'roi_head.mask_head.conv_logits': 100.}),
    (RETINANET_TOY, 'detection_onnxruntime_dynamic', {'bbox_head.retina_cls': 100.}),
], ids=['mask_rcnn', 'retinanet'])
def test_detector_converts_and_matches_mmdet_at_two_sizes(tmp_path, verify, model_config,
                                                          deploy_name, sharpen):
    """Mask R-CNN and RetinaNet BiFormer-T through the dynamic deploy configs, converted
    on one image and run on it and on an image whose stage maps pad differently: mmdet's
    TOP best detections, with the same boxes, scores and labels (and masks)."""
    model_cfg = load_config(model_config, TEST_BACKBONE)
    checkpoint = make_checkpoint(model_cfg, str(tmp_path / 'detector.pth'), sharpen)
    square = toy_image(str(tmp_path / 'square.png'), 256, 256)
    # 224x256: the stride-16 map, 14x16, pads to n_win=4 (the 256x256 maps need no pad).
    # Both are multiples of 32, so no padding to the detector's size divisor: mmdeploy
    # clips boxes to the padded input, mmdet to the image (docs/deploy.md).
    wide = toy_image(str(tmp_path / 'wide.png'), 224, 256)
    deploy_cfg = Config.fromfile(deploy_config(deploy_name))
    onnx_file = verify.convert(deploy_cfg, model_cfg, checkpoint, square, str(tmp_path))

    with_masks = 'masks' in deploy_cfg.onnx_config.output_names
    reports = []
    with recorded_routing_margins() as margins, postprocessing_margins() as decisions:
        for image, torch_out, ort_out in verify.predictions(
                deploy_cfg, model_cfg, checkpoint, onnx_file, [square, wide]):
            undecided = decisions['undecided'][-1] if with_masks else None
            reports.append(verify.compare_detections(torch_out, ort_out, TOP, undecided))
    assert min(margins) > MIN_MARGIN, 'the test routes near a tie: pick another SEED'
    assert min(decisions['nms']) > MIN_MARGIN, \
        f'NMS decides near a tie ({min(decisions["nms"]):.2g}): pick another SEED'
    for report in reports:
        assert report['compared'] == TOP and report['ort_dets'] >= TOP, report
        assert report['rank_gap'] > MIN_MARGIN, f'pick another SEED: {report}'
        assert report['paired_twice'] == 0, report
        assert report['box_diff'] < 1e-3 and report['score_diff'] < 1e-5, report
        assert report['label_mismatches'] == 0, report
        assert verify.problems(report, 1e-3) == [], report  # the tool's exit status 0
        assert ('mask_pixels' in report) == with_masks, report
        if with_masks:
            assert report['mask_pixels_differing'] == 0 and report['mask_pixels'] > 0, report
            assert report['mask_pixels_undecided'] < report['mask_pixels'] / 1000, report


@pytest.mark.parametrize('model_config', [UPERNET_CONFIG, FPN_CONFIG],
                         ids=['upernet', 'semantic_fpn'])
def test_segmentor_converts_and_matches_mmseg_logits(tmp_path, verify, model_config):
    """UperNet and Semantic FPN BiFormer-T through the static segmentation config at
    192x192, where mmdeploy's avg_pool2d stand-in for UperNet's adaptive_avg_pool2d is
    exact (a 6x6 stride-32 map), with_argmax=False: the same logits as mmseg."""
    model_cfg = load_config(model_config, TEST_BACKBONE)
    checkpoint = make_checkpoint(model_cfg, str(tmp_path / 'segmentor.pth'),
                                 {'decode_head.conv_seg': 10.})
    image = toy_scene(str(tmp_path / 'scene.png'), 160, 224)
    deploy_cfg = Config.fromfile(deploy_config('segmentation_onnxruntime_static-512x512'))
    deploy_cfg.merge_from_dict({'onnx_config.input_shape': [192, 192],
                                'codebase_config.with_argmax': False})
    onnx_file = verify.convert(deploy_cfg, model_cfg, checkpoint, image, str(tmp_path))

    with recorded_routing_margins() as margins:
        report, = verify.verify(deploy_cfg, model_cfg, checkpoint, onnx_file, [image])
    assert min(margins) > MIN_MARGIN, 'the test routes near a tie: pick another SEED'
    assert report['shape'] == (150, 192, 192)
    assert report['logit_diff'] < 1e-4 * report['logit_range'], report
    assert verify.problems(report, 1e-4) == [], report  # the tool's exit status 0
    times = verify.timings(deploy_cfg, model_cfg, checkpoint, onnx_file, image, repeats=1)
    assert times['pytorch_ms'] > 0 and times['onnxruntime_ms'] > 0
    assert times['onnxruntime_speedup'] == times['pytorch_ms'] / times['onnxruntime_ms']


@pytest.mark.parametrize('report,problem', [
    (dict(torch_dets=5, ort_dets=0, compared=5), 'onnxruntime found no detection'),
    (dict(torch_dets=5, ort_dets=5, compared=5, paired_twice=0, box_diff=2e-5,
          score_diff=1e-6, label_mismatches=1), 'label_mismatches 1'),
    (dict(torch_dets=5, ort_dets=5, compared=5, paired_twice=1, box_diff=3.0,
          score_diff=1e-6, label_mismatches=0), 'paired_twice 1; box_diff 3 > 0.001'),
    (dict(shape=(150, 24, 24), label_pixels_differing=0, pixels=576),
     'the logits have another shape'),
    (dict(shape=(150, 24, 24), logit_diff=0.5, logit_range=10., label_pixels_differing=3,
          pixels=576), 'logit_diff 0.5 > 0.001 x logit_range'),
])
def test_the_tool_names_what_does_not_match(verify, report, problem):
    """What makes tools/deploy/mmdeploy_verify.py print FAILED and exit 1."""
    assert '; '.join(verify.problems(report, 1e-3)) == problem
