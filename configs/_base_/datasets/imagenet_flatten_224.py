# ImageNet-1k at 224 with the FLatten training augmentation (mmpretrain's
# Swin recipe) and the official FLatten evaluation transform: a square
# bicubic resize to 256x256, then a 224 center crop.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='Resize',
        scale=(256, 256),
        backend='pillow',
        interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(batch_size=128, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
train_dataloader = dict(batch_size=128)
