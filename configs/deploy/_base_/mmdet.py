# mmdet end to end: boxes, scores and labels (and masks) come out of the ONNX graph,
# NMS included. mmdeploy takes the model's own test_cfg (score_thr, nms, max_per_img)
# where it has them and these values elsewhere, as mmdeploy's configs/mmdet/_base_.
_base_ = ['./onnxruntime.py']

onnx_config = dict(output_names=['dets', 'labels'])
codebase_config = dict(
    type='mmdet',
    task='ObjectDetection',
    model_type='end2end',
    post_processing=dict(
        score_threshold=0.05,
        confidence_threshold=0.005,
        iou_threshold=0.5,
        max_output_boxes_per_class=200,
        pre_top_k=5000,
        keep_top_k=100,
        background_label_id=-1))
