"""Convert a BiFormer detector or segmentor to onnxruntime with mmdeploy (classic stack)
and compare the onnxruntime model with plain mmdet/mmseg on images.

    python tools/deploy/mmdeploy_verify.py DEPLOY_CFG MODEL_CFG CHECKPOINT IMAGE
        --work-dir DIR [--test-image IMG ...] [--top N] [--cfg-options K=V ...]

DEPLOY_CFG is one of ``configs/deploy/`` (or any mmdeploy onnxruntime config). The tool
runs ``mmdeploy.apis.torch2onnx`` with IMAGE, as mmdeploy's ``tools/deploy.py`` does,
writing ``DIR/end2end.onnx``; then, for IMAGE and every ``--test-image``, it preprocesses
the image as the conversion did (mmdeploy's ``create_input``) and runs the same input
through the PyTorch model (mmdet/mmseg as they are, no mmdeploy rewrite) and through the
onnxruntime model (mmdeploy's backend model, with its custom-op library). It prints:

- detectors: the number of detections of each; each of PyTorch's detections (its ``N``
  best with ``--top N``) paired with the nearest onnxruntime detection: the largest box
  and score difference, label mismatches, mask pixels that differ, and how many
  onnxruntime detections were paired twice (0 when the two agree);
- segmentors: the largest logit difference (the graph's raw output with
  ``with_argmax=False``; the label map otherwise) and the pixels whose label differs.

mmdeploy 1.3.1 needs torch <= 2.1: run it with the classic stack (docs/deploy.md).
"""
import argparse
import copy
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

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


def build_models(deploy_cfg: Config, model_cfg: Config, checkpoint: Optional[str],
                 onnx_file: str) -> Tuple[object, torch.nn.Module, torch.nn.Module]:
    """mmdeploy's task processor, the PyTorch model (mmdet/mmseg as they are: built
    from ``model_cfg``, ``checkpoint`` loaded, SyncBN reverted, eval mode; no mmdeploy
    rewrite applies outside the conversion) and the onnxruntime model (mmdeploy's
    backend model, with its custom-op library)."""
    from mmdeploy.apis import build_task_processor
    task = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    return task, task.build_pytorch_model(checkpoint), task.build_backend_model([onnx_file])


def run_both(task, torch_model: torch.nn.Module, ort_model: torch.nn.Module,
             image: str) -> Tuple[list, list]:
    """The PyTorch and the onnxruntime predictions (mmdet/mmseg data samples) on
    ``image``, preprocessed once, as for the conversion (mmdeploy's ``create_input``).

    For segmentors both are dicts of ``seg_logits`` (``(C, H, W)`` at the network's
    input size; the label map ``(1, H, W)`` where the graph ends in an argmax) and
    ``pred_sem_seg``.
    """
    from mmdeploy.utils import get_input_shape
    data, _ = task.create_input(image, get_input_shape(task.deploy_cfg))
    with torch.no_grad():
        if task.model_cfg.get('default_scope') == 'mmseg':
            return _segmentation_logits(torch_model, ort_model, data)
        return (torch_model.test_step(copy.deepcopy(data)),
                ort_model.test_step(copy.deepcopy(data)))


def _segmentation_logits(torch_model, ort_model, data: dict) -> Tuple[list, list]:
    """Both models' logits at the input size: mmseg's ``inference`` (whole-image mode, the
    only one mmdeploy exports) and the onnxruntime graph's output."""
    mode = torch_model.test_cfg.get('mode', 'whole')
    if mode != 'whole':
        raise ValueError(f"model.test_cfg.mode is {mode!r}: mmdeploy exports whole-image "
                         f"inference only; set model.test_cfg.mode='whole'.")
    data = torch_model.data_preprocessor(copy.deepcopy(data), False)
    inputs, samples = data['inputs'], data['data_samples']
    metas = [dict(s.metainfo, img_shape=inputs.shape[2:]) for s in samples]
    torch_logits = torch_model.inference(inputs, metas)
    ort_out = ort_model.wrapper({ort_model.input_name: inputs})[ort_model.output_names[0]]
    results = []
    for logits in (torch_logits, ort_out):
        labels = logits.argmax(1, keepdim=True) if logits.shape[1] > 1 else logits
        results.append([dict(seg_logits=lg, pred_sem_seg=lb) for lg, lb in zip(logits, labels)])
    return results[0], results[1]


def compare_detections(torch_sample, ort_sample, top: Optional[int] = None) -> Dict:
    """Differences between two mmdet predictions: each of PyTorch's ``top`` (default:
    all) highest-scoring detections is paired with the onnxruntime detection nearest to
    it (box and score), so that detections whose scores differ by less than the float
    error do not pair by their order."""
    ta, oa = torch_sample.pred_instances, ort_sample.pred_instances
    order = ta.scores.argsort(descending=True)[:top]
    result = dict(torch_dets=len(ta), ort_dets=len(oa), compared=len(order))
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
        result['mask_pixels_differing'] = int((t_masks != o_masks).sum())
        result['mask_pixels'] = int(t_masks.sum())
    return result


def compare_segmentation(torch_result: dict, ort_result: dict) -> Dict:
    """Differences between the logits (or label maps) of :func:`run_both`."""
    t_logits, o_logits = torch_result['seg_logits'], ort_result['seg_logits']
    result = dict(shape=tuple(o_logits.shape))
    if t_logits.shape == o_logits.shape:
        result['logit_diff'] = (t_logits - o_logits).abs().max().item()
        result['logit_range'] = t_logits.abs().max().item()
    labels_differ = torch_result['pred_sem_seg'] != ort_result['pred_sem_seg'].to(
        torch_result['pred_sem_seg'].dtype)
    result['label_pixels_differing'] = int(labels_differ.sum())
    result['pixels'] = labels_differ.numel()
    return result


def verify(deploy_cfg: Config, model_cfg: Config, checkpoint: Optional[str],
           onnx_file: str, images: Sequence[str], top: Optional[int] = None) -> List[Dict]:
    """:func:`run_both` and the comparison, for each image (batch of one); ``top`` as
    in :func:`compare_detections`."""
    models = build_models(deploy_cfg, model_cfg, checkpoint, onnx_file)
    reports = []
    for image in images:
        torch_out, ort_out = run_both(*models, image)
        if model_cfg.get('default_scope') == 'mmseg':
            report = compare_segmentation(torch_out[0], ort_out[0])
        else:
            report = compare_detections(torch_out[0], ort_out[0], top)
        reports.append(dict(image=osp.basename(image), **report))
    return reports


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
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    # Read weights-only (trusted://PATH in full), as every checkpoint of this project.
    checkpoint = weights_only_path(args.checkpoint, where='the CHECKPOINT argument')
    model_cfg = load_config(args.config, args.cfg_options)
    deploy_cfg = Config.fromfile(args.deploy_config)
    onnx_file = convert(deploy_cfg, model_cfg, checkpoint, args.image, args.work_dir)
    print(f'wrote {onnx_file}')
    for report in verify(deploy_cfg, model_cfg, checkpoint, onnx_file,
                         [args.image] + args.test_image, args.top):
        print(', '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                        for k, v in report.items()))


if __name__ == '__main__':
    main()
