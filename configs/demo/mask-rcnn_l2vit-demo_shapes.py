# Mask R-CNN with a small L²ViT backbone, trained from scratch on the
# synthetic shapes dataset (tools/misc/generate_demo_data.py) in a few CPU
# minutes: 128x128 images, slim FPN/RPN/RoI heads, fewer proposals and RoIs,
# AdamW with warmup and cosine decay, 400 iterations of 4 images.
# `python tools/misc/run_demo.py` generates the data, trains and evaluates.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

# Must match mmplugin_l2vit.datasets.SHAPE_CLASSES / SHAPE_PALETTE.
metainfo = dict(
    classes=('circle', 'square', 'triangle', 'star'),
    palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 200, 0)])
num_classes = 4
image_size = 128
max_iters = 400
feat_channels = 64

model = dict(
    backbone=dict(
        _delete_=True,
        type='L2ViT',
        arch=dict(
            embed_dims=[32, 64, 128, 256],
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 4, 8],
            window_size=7),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=feat_channels),
    rpn_head=dict(in_channels=feat_channels, feat_channels=feat_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(
            roi_layer=dict(sampling_ratio=1), out_channels=feat_channels),
        # Convolutions before the FC layer learn the shape classes in
        # fewer iterations than the default two FC layers.
        bbox_head=dict(
            type='ConvFCBBoxHead',
            num_shared_convs=2,
            num_shared_fcs=1,
            in_channels=feat_channels,
            conv_out_channels=feat_channels,
            fc_out_channels=256,
            num_classes=num_classes),
        mask_roi_extractor=dict(
            roi_layer=dict(sampling_ratio=1), out_channels=feat_channels),
        mask_head=dict(
            num_convs=2,
            in_channels=feat_channels,
            conv_out_channels=feat_channels,
            num_classes=num_classes)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=50),
        rcnn=dict(max_per_img=20)))

data_root = '{{fileDirname}}/../../demo_data/coco/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                   'scale_factor'))
]
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=0),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW',
        lr=2e-3,
        betas=(0.9, 0.999),
        weight_decay=0.05,
        foreach=True),
    clip_grad=dict(max_norm=10.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50,
         end=max_iters, eta_min=1e-5)
]

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=200,
        max_keep_ckpts=2),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(by_epoch=False, window_size=20)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
