# Semantic FPN, BiFormer-T backbone, on your own semantic segmentation dataset in an
# ADE20K-like folder layout, fine-tuned from the ImageNet-1k weights with the ADE20K
# recipe (../fpn_biformer_t.py). Copy this file next to itself (it inherits through a
# relative path) and change the block below; docs/own_data.md walks through it. From
# scratch on small data: fpn_biformer_t_custom_scratch.py.
#
#   data_root/images/training/NAME.jpg       data_root/annotations/training/NAME.png
#   data_root/images/validation/NAME.jpg     data_root/annotations/validation/NAME.png
#
#   python tools/train.py configs/segmentation/custom/fpn_biformer_t_custom.py
_base_ = '../fpn_biformer_t.py'

# ---- Your dataset: change these lines ------------------------------------------------
# Every path below is built from data_root in THIS file. A config that inherits this one
# and sets only data_root changes nothing: the dataloaders were already built from the
# old value when this file was read. Copy this file (or repeat every path) instead.
data_root = 'data/my_seg'
train_img_dir = 'images/training'  # relative to data_root
train_seg_dir = 'annotations/training'  # label maps, same names as the images
val_img_dir = 'images/validation'
val_seg_dir = 'annotations/validation'
img_suffix = '.jpg'
seg_map_suffix = '.png'
# Label maps are single-channel PNGs whose pixel value v means classes[v]; 255 is
# ignored (not trained on, not evaluated).
classes = ('background', 'coin', 'bolt', 'nut')
# ADE20K's own convention instead (0 = unlabelled and ignored, v >= 1 means
# classes[v - 1]): set reduce_zero_label = True and list the classes without the
# unlabelled one.
reduce_zero_label = False
# Training crops (height, width) and the (long, short) side bound images are resized to
# around: ADE20K's.
crop_size = (512, 512)
image_scale = (2048, 512)
# ---------------------------------------------------------------------------------------

metainfo = dict(classes=classes)
num_classes = len(classes)

# The recipe's ADE20K pipelines (load the image, LoadAnnotations, RandomResize,
# RandomCrop, RandomFlip, PhotoMetricDistortion, pack; for testing: load, Resize,
# ResizeToMultiple to a multiple of 32, LoadAnnotations, pack) with the sizes above, and
# LoadAnnotations following the dataset's reduce_zero_label.
train_pipeline = _base_.train_pipeline
test_pipeline = _base_.test_pipeline
train_pipeline[1] = test_pipeline[3] = dict(type='LoadAnnotations')
train_pipeline[2].scale = test_pipeline[1].scale = image_scale
train_pipeline[3].crop_size = crop_size

seg_dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix=img_suffix,
    seg_map_suffix=seg_map_suffix,
    reduce_zero_label=reduce_zero_label)
# The rest of each dataloader is mmseg's ADE20K one: batch size 4 per GPU (1 for
# validation), 4 loading workers, an infinite shuffled sampler for training.
train_dataloader = dict(
    dataset=dict(
        seg_dataset,
        data_prefix=dict(img_path=train_img_dir, seg_map_path=train_seg_dir),
        pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(
        seg_dataset,
        data_prefix=dict(img_path=val_img_dir, seg_map_path=val_seg_dir),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
# mIoU over the classes (mmseg's IoUMetric, from the base).

# Every head that classifies (a UPerNet config also has model.auxiliary_head).
model = dict(data_preprocessor=dict(size=crop_size), decode_head=dict(num_classes=num_classes))

# The ADE20K schedule of the base config, restated here so that it can be changed in one
# place: 80k iterations (about 127 epochs of ADE20K's 20,210 training images at 8 GPUs x
# 4 images), a linear warm-up over the first 1000 iterations, then cosine annealing;
# validation and a checkpoint every 4000 iterations. Scale max_iters to your dataset
# (iterations = epochs x images / (4 x GPUs)) and keep warmup_iters well below it. The
# lr (AdamW 2e-4, fp16) is for 8 GPUs x 4 images: train with --auto-scale-lr to scale it
# to your batch.
max_iters = 80000
warmup_iters = 1000
val_interval = 4000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-8, by_epoch=False, begin=warmup_iters,
         end=max_iters),
]
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=val_interval))
