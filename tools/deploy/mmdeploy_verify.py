"""Convert a BiFormer detector or segmentor to onnxruntime with mmdeploy (classic stack)
and compare the onnxruntime model with plain mmdet/mmseg on images.

    python tools/deploy/mmdeploy_verify.py DEPLOY_CFG MODEL_CFG CHECKPOINT IMAGE
        --work-dir DIR [--test-image IMG ...] [--top N] [--cfg-options K=V ...]
        [--deploy-options K=V ...] [--repeats N]

The conversion is mmdeploy's ``mmdeploy.apis.torch2onnx`` traced on IMAGE, as its
``tools/deploy.py`` does (``DIR/end2end.onnx``). For IMAGE and every ``--test-image``,
the input mmdeploy's task processor makes (``create_input``) goes through the PyTorch
model (``build_pytorch_model``: mmdet/mmseg as they are) and the onnxruntime model
(``build_backend_model``). One line per image: for detectors, each of PyTorch's
detections (its ``N`` best with ``--top N``) paired with the nearest onnxruntime one;
for segmentors, the largest logit difference (with ``with_argmax=False``) and the label
pixels that differ. docs/deploy.md lists the fields. ``--repeats N`` then times both
models (``test_step``: the data preprocessor, network, post-processing) on IMAGE's
input, the median of N calls after one untimed call each. The exit status is 1 where an
image fails :func:`problems`' rules. mmdeploy 1.3.1 needs torch <= 2.1.
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction

from biformer_mm.engine import load_config
from biformer_mm.safe_load import weights_only_path


def convert(deploy_cfg: Config, model_cfg: Config, checkpoint: Optional[str], image: str,
            work_dir: str) -> str:
    """Export ``model_cfg`` with ``checkpoint`` end to end to ONNX with mmdeploy, traced
    on ``image``; returns the path of the ``.onnx`` file."""
    from mmdeploy.apis import torch2onnx
    save_file = deploy_cfg.onnx_config.save_file
    torch2onnx(image, work_dir, save_file, deploy_cfg, model_cfg, checkpoint, device='cpu')
    return osp.join(work_dir, save_file)


def segmentation_logits(torch_model, ort_model, data: dict) -> List[torch.Tensor]:
    """PyTorch's and onnxruntime's ``(N, C, H, W)`` logits at the input size (``C`` is 1
    where the graph ends in an argmax): mmseg's ``inference`` in whole-image mode, the
    only one mmdeploy exports, and the graph's output (mmdeploy's backend model resizes
    and packs only the label map)."""
    mode = torch_model.test_cfg.get('mode', 'whole')
    if mode != 'whole':
        raise ValueError(f"model.test_cfg.mode is {mode!r}: mmdeploy exports whole-image "
                         f"inference only; set model.test_cfg.mode='whole'.")
    data = torch_model.data_preprocessor(copy.deepcopy(data), False)
    inputs = data['inputs']
    metas = [dict(s.metainfo, img_shape=inputs.shape[2:]) for s in data['data_samples']]
    ort_logits = ort_model.wrapper({ort_model.input_name: inputs})[ort_model.output_names[0]]
    return [torch_model.inference(inputs, metas), ort_logits]


def compare_detections(torch_sample, ort_sample, top: Optional[int] = None,
                       undecided: Optional[torch.Tensor] = None) -> Dict:
    """Differences between two mmdet predictions: each of PyTorch's ``top`` (default:
    all) highest-scoring detections is paired with the onnxruntime detection nearest to
    it (box and score), so that detections whose scores differ by less than the float
    error do not pair by their order. ``undecided`` (one ``(H, W)`` bool map per PyTorch
    detection) marks mask pixels not to compare: whose probability lies so close to the
    threshold that float noise decides them."""
    ta, oa = torch_sample.pred_instances, ort_sample.pred_instances
    ranked = ta.scores.sort(descending=True)
    order = ranked.indices[:top]
    result = dict(torch_dets=len(ta), ort_dets=len(oa), compared=len(order))
    if top is not None and len(ta) > top:  # how far the cut at ``top`` is from a tie
        result['rank_gap'] = (ranked.values[top - 1] - ranked.values[top]).item()
    if len(order) == 0 or len(oa) == 0:
        return result
    distance = (ta.bboxes[order, None] - oa.bboxes[None]).abs().amax(-1) \
        + (ta.scores[order, None] - oa.scores[None]).abs()
    match = distance.argmin(1)
    result['paired_twice'] = len(order) - len(set(match.tolist()))
    result['box_diff'] = (ta.bboxes[order] - oa.bboxes[match]).abs().max().item()
    result['score_diff'] = (ta.scores[order] - oa.scores[match]).abs().max().item()
    result['label_mismatches'] = int((ta.labels[order] != oa.labels[match]).sum())
    if 'masks' in ta and 'masks' in oa:
        t_masks = torch.as_tensor(ta.masks)[order].bool()
        o_masks = torch.as_tensor(oa.masks)[match].bool()
        differing = t_masks != o_masks
        if undecided is not None:
            differing &= ~undecided[order]
            result['mask_pixels_undecided'] = int(undecided[order].sum())
        result['mask_pixels_differing'] = int(differing.sum())
        result['mask_pixels'] = int(t_masks.sum())
    return result


def compare_segmentation(torch_logits: torch.Tensor, ort_logits: torch.Tensor) -> Dict:
    """Differences between the ``(C, H, W)`` logits (or label maps) of one image."""
    result = dict(shape=tuple(ort_logits.shape))
    if torch_logits.shape == ort_logits.shape:
        result['logit_diff'] = (torch_logits - ort_logits).abs().max().item()
        result['logit_range'] = torch_logits.abs().max().item()
    labels = [lg.argmax(0) if lg.shape[0] > 1 else lg[0].long()
              for lg in (torch_logits, ort_logits)]
    result['label_pixels_differing'] = int((labels[0] != labels[1]).sum())
    result['pixels'] = labels[0].numel()
    return result


def problems(report: Dict, tolerance: float) -> List[str]:
    """Why one image's report (:func:`compare_detections` or
    :func:`compare_segmentation`) shows a conversion that does not match PyTorch:
    detections missing, paired twice or with other labels, boxes (in pixels) or scores
    further apart than ``tolerance``, more than 1 in 1000 mask pixels differing; logits of
    another shape or further apart than ``tolerance`` times their range. Empty where it
    matches."""
    if 'pixels' in report:  # a segmentor
        if 'logit_diff' not in report:
            return ['the logits have another shape']
        return ([f"logit_diff {report['logit_diff']:.3g} > {tolerance:g} x logit_range"]
                if report['logit_diff'] > tolerance * max(1., report['logit_range']) else [])
    if report['compared'] and not report['ort_dets']:
        return ['onnxruntime found no detection']
    found = [f'{key} {report[key]}' for key in ('paired_twice', 'label_mismatches')
             if report.get(key)]
    found += [f'{key} {report[key]:.3g} > {tolerance:g}' for key in ('box_diff', 'score_diff')
              if report.get(key, 0.) > tolerance]
    if report.get('mask_pixels_differing', 0) > report.get('mask_pixels', 0) / 1000:
        found.append(f"mask_pixels_differing {report['mask_pixels_differing']} of "
                     f"{report['mask_pixels']}")
    return found


def is_segmentor(model_cfg: Config) -> bool:
    """Whether ``model_cfg`` is an mmseg config (else an mmdet one)."""
    return model_cfg.get('default_scope') == 'mmseg'


def models(deploy_cfg: Config, model_cfg: Config, checkpoint: Optional[str],
           onnx_file: str) -> Tuple[Any, Any, Any]:
    """mmdeploy's task processor, its PyTorch model (mmdet/mmseg as they are) and its
    onnxruntime model of ``onnx_file``, on the CPU."""
    from mmdeploy.apis import build_task_processor
    task = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    return task, task.build_pytorch_model(checkpoint), task.build_backend_model([onnx_file])


def timings(deploy_cfg: Config, model_cfg: Config, checkpoint: Optional[str],
            onnx_file: str, image: str, repeats: int) -> Dict[str, float]:
    """Milliseconds of one end-to-end ``test_step`` of the PyTorch and the onnxruntime
    model on ``image``'s input, each the median of ``repeats`` calls after an untimed one,
    and the onnxruntime model's speed-up."""
    from mmdeploy.utils import get_input_shape
    task, torch_model, ort_model = models(deploy_cfg, model_cfg, checkpoint, onnx_file)
    data, _ = task.create_input(image, get_input_shape(deploy_cfg))
    result = {}
    for name, model in (('pytorch', torch_model), ('onnxruntime', ort_model)):
        calls = []
        with torch.no_grad():
            for _ in range(repeats + 1):
                start = time.perf_counter()
                model.test_step(copy.deepcopy(data))
                calls.append(time.perf_counter() - start)
        result[f'{name}_ms'] = statistics.median(calls[1:]) * 1e3
    result['onnxruntime_speedup'] = result['pytorch_ms'] / result['onnxruntime_ms']
    return result


def predictions(deploy_cfg: Config, model_cfg: Config, checkpoint: Optional[str],
                onnx_file: str, images: Sequence[str]) -> Iterator[Tuple[str, Any, Any]]:
    """``(image, PyTorch's, onnxruntime's)`` prediction of each image (batch of one): an
    mmdet ``DetDataSample`` each, or mmseg's ``(C, H, W)`` logits and the graph's."""
    from mmdeploy.utils import get_input_shape
    task, torch_model, ort_model = models(deploy_cfg, model_cfg, checkpoint, onnx_file)
    for image in images:
        data, _ = task.create_input(image, get_input_shape(deploy_cfg))
        with torch.no_grad():
            if is_segmentor(model_cfg):
                torch_out, ort_out = segmentation_logits(torch_model, ort_model, data)
            else:
                torch_out, ort_out = (model.test_step(copy.deepcopy(data))
                                      for model in (torch_model, ort_model))
        yield image, torch_out[0], ort_out[0]


def verify(deploy_cfg: Config, model_cfg: Config, checkpoint: Optional[str],
           onnx_file: str, images: Sequence[str], top: Optional[int] = None) -> List[Dict]:
    """Compare the PyTorch and the onnxruntime model on each image; ``top`` as in
    :func:`compare_detections`."""
    segmentor = is_segmentor(model_cfg)
    return [dict(image=osp.basename(image),
                 **(compare_segmentation(torch_out, ort_out) if segmentor else
                    compare_detections(torch_out, ort_out, top)))
            for image, torch_out, ort_out in predictions(deploy_cfg, model_cfg, checkpoint,
                                                         onnx_file, images)]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('deploy_config', help='mmdeploy config, e.g. from configs/deploy/')
    parser.add_argument('config', help='detection or segmentation config')
    parser.add_argument('checkpoint', help='checkpoint (trusted://PATH to load in full)')
    parser.add_argument('image', help='image the conversion traces')
    parser.add_argument('--work-dir', required=True, help='where end2end.onnx goes')
    parser.add_argument('--test-image', nargs='*', default=[],
                        help='more images to compare on (the conversion image always is)')
    parser.add_argument('--top', type=int, help="compare PyTorch's N best detections only")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='overrides of CONFIG, e.g. "model.backbone.init_cfg=None"')
    parser.add_argument('--deploy-options', nargs='+', action=DictAction,
                        help='overrides of DEPLOY_CFG, e.g. '
                        '"codebase_config.post_processing.score_threshold=0.3"')
    parser.add_argument('--repeats', type=int, default=0,
                        help='time both models end to end on IMAGE, median of N calls')
    parser.add_argument('--tolerance', type=float, default=1e-3,
                        help='largest accepted box (pixels), score and relative logit '
                        'difference (default 1e-3)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    # Read weights-only (trusted://PATH in full), as every checkpoint of this project.
    checkpoint = weights_only_path(args.checkpoint, where='the CHECKPOINT argument')
    model_cfg = load_config(args.config, args.cfg_options)
    deploy_cfg = Config.fromfile(args.deploy_config)
    deploy_cfg.merge_from_dict(args.deploy_options or {})
    onnx_file = convert(deploy_cfg, model_cfg, checkpoint, args.image, args.work_dir)
    print(f'wrote {onnx_file}')
    failed = 0
    for report in verify(deploy_cfg, model_cfg, checkpoint, onnx_file,
                         [args.image] + args.test_image, args.top):
        print(', '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                        for k, v in report.items()))
        found = problems(report, args.tolerance)
        if found:
            failed += 1
            print(f"FAILED {report['image']}: {'; '.join(found)}")
    if args.repeats:
        times = timings(deploy_cfg, model_cfg, checkpoint, onnx_file, args.image,
                        args.repeats)
        print(', '.join(f'{k}={v:.4g}' for k, v in times.items()))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
