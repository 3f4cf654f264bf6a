# UPerNet with a small L²ViT backbone, trained from scratch on the ADE-style
# synthetic shapes dataset (tools/misc/generate_demo_data.py) in a few CPU
# minutes: 128x128 images, AdamW at lr 5e-4 with warmup and cosine decay,
# 1400 iterations of 4 images. At lr 1e-3 the gradient noise of 4-image
# batches makes the backbone's tokens collapse to a position-independent
# constant and the model only learns the class prior. As in ADE20K, label 0
# (the background) is ignored (reduce_zero_label=True) and the shapes become
# classes 0..3. `python tools/misc/run_demo.py --task seg` runs it end to end.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py'
]
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

# Must match mmplugin_l2vit.datasets.SHAPE_CLASSES / SHAPE_PALETTE.
metainfo = dict(
    classes=('circle', 'square', 'triangle', 'star'),
    palette=[(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 200, 0)])
num_classes = 4
image_size = 128
max_iters = 1400
embed_dims = [32, 64, 128, 256]
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=(image_size, image_size)),
    backbone=dict(
        _delete_=True,
        type='L2ViT',
        arch=dict(
            embed_dims=embed_dims,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 4, 8],
            window_size=7),
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.),
    decode_head=dict(
        in_channels=embed_dims,
        channels=64,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        loss_decode=dict(avg_non_ignore=True)),
    auxiliary_head=dict(
        in_channels=embed_dims[2],
        channels=32,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        loss_decode=dict(avg_non_ignore=True)))

data_root = '{{fileDirname}}/../../demo_data/ade/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
shapes_dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **shapes_dataset,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        **shapes_dataset,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.))
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
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=700, max_keep_ckpts=2),
    visualization=dict(draw=False))
log_processor = dict(window_size=50)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
