# Mask R-CNN + FPN, BiFormer-T backbone, on your own COCO-format instance segmentation
# dataset, fine-tuned from the ImageNet-1k weights with the COCO 1x recipe
# (../maskrcnn_biformer_t.py). Copy this file next to itself (it inherits through a
# relative path) and change the block below; docs/own_data.md walks through it. From
# scratch on small data: maskrcnn_biformer_t_custom_scratch.py.
#
#   python tools/train.py configs/detection/custom/maskrcnn_biformer_t_custom.py
_base_ = '../maskrcnn_biformer_t.py'

# ---- Your dataset: change these lines ------------------------------------------------
# Every path below is built from data_root in THIS file. A config that inherits this one
# and sets only data_root changes nothing: the dataloaders and the evaluator were already
# built from the old value when this file was read. Copy this file (or repeat every
# path) instead.
data_root = 'data/my_coco/'  # keep the trailing slash
train_ann_file = 'annotations/instances_train.json'  # relative to data_root
train_img_dir = 'train/'  # the images train_ann_file lists, relative to data_root
val_ann_file = 'annotations/instances_val.json'
val_img_dir = 'val/'
# Names of the annotation file's categories to train on, in the order of its categories
# list: mmdet matches them by name and numbers the labels in the file's order (the dataset
# check refuses another order). Categories left out are ignored.
classes = ('coin', 'bolt', 'nut')
# (width, height) each image is resized to, keeping its aspect ratio: COCO's.
image_scale = (1333, 800)
# ---------------------------------------------------------------------------------------

metainfo = dict(classes=classes)
num_classes = len(classes)

# The recipe's pipelines (mmdet's COCO ones: load the image, load the boxes and masks,
# Resize, RandomFlip, pack; for testing: load, Resize, annotations, pack), resized to
# image_scale.
train_pipeline = _base_.train_pipeline
test_pipeline = _base_.test_pipeline
train_pipeline[2].scale = test_pipeline[1].scale = image_scale

# The rest of each dataloader is mmdet's COCO one: CocoDataset, batch size 2 per GPU for
# training (1 for validation), 2 loading workers; training skips images without
# annotations and images whose shorter side is under filter_cfg.min_size (32) pixels.
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file=train_ann_file,
        data_prefix=dict(img=train_img_dir),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        train_dataloader['dataset'],
        ann_file=val_ann_file,
        data_prefix=dict(img=val_img_dir),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# COCO-style box and mask mAP against the same annotation file.
val_evaluator = dict(ann_file=data_root + val_ann_file)
test_evaluator = val_evaluator

# Every head that classifies: the box and the mask head (the RPN is class-agnostic).
model = dict(
    roi_head=dict(
        bbox_head=dict(num_classes=num_classes), mask_head=dict(num_classes=num_classes)))

# The COCO 1x schedule of the base config, restated here so that it can be changed in
# one place: 12 epochs, lr x0.1 after epochs 8 and 11, and a linear warm-up over the
# first 500 iterations. An epoch is (training images) / (2 x GPUs) iterations: on a small
# dataset the warm-up can outlast the whole run (40 images on one GPU: 20 iterations an
# epoch, 240 in 12 epochs), so shorten warmup_iters with it. Set the milestones with
# max_epochs. The lr (AdamW 1e-4, fp16) is for 8 GPUs x 2 images: train with
# --auto-scale-lr to scale it to your batch.
max_epochs = 12
milestones = [8, 11]
warmup_iters = 500
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=milestones,
         gamma=0.1),
]
