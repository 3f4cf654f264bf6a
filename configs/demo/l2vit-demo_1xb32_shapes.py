# An ImageNet-style classifier with a small L²ViT backbone, trained from
# scratch on the synthetic shapes images in the ImageNet folder layout
# (tools/misc/generate_demo_data.py writes demo_data/imagenet: one shape per
# image in its class's colour, the class one of SHAPE_CLASSES) in a few CPU
# minutes: 64x64 inputs, AdamW with warmup and cosine decay, 300 iterations
# of 32 images.
# `python tools/misc/run_demo.py --task cls` runs it end to end.
_base_ = [
    '../_base_/models/l2vit-tiny_in1k.py',
    'mmpretrain::_base_/default_runtime.py'
]

# Must match mmplugin_l2vit.datasets.SHAPE_CLASSES.
metainfo = dict(classes=('circle', 'square', 'triangle', 'star'))
num_classes = 4
# The generated images are 128x128; the classifier sees them at half size.
image_size = 128
input_size = 64
max_iters = 300
embed_dims = [32, 64, 128, 256]

model = dict(
    data_preprocessor=dict(
        num_classes=num_classes,
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        to_rgb=True),
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=embed_dims,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 4, 8],
            window_size=7),
        drop_path_rate=0.),
    head=dict(
        num_classes=num_classes,
        in_channels=embed_dims[-1],
        loss=dict(
            _delete_=True, type='CrossEntropyLoss', loss_weight=1.0),
        topk=(1, )),
    train_cfg=None)

data_root = '{{fileDirname}}/../../demo_data/imagenet/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size)),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(input_size, input_size)),
    dict(type='PackInputs')
]
train_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type='ImageNet',
        data_root=data_root,
        split='train',
        metainfo=metainfo,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ImageNet',
        data_root=data_root,
        split='val',
        metainfo=metainfo,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

train_cfg = dict(
    type='IterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
        end=50),
    dict(
        type='CosineAnnealingLR',
        by_epoch=False,
        begin=50,
        end=max_iters,
        eta_min=1e-5)
]
# No EMA of the weights and no learning-rate scaling: one process.
custom_hooks = []
auto_scale_lr = dict(enable=False, base_batch_size=32)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=50)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
