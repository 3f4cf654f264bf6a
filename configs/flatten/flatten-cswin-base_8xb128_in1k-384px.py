# FLattenCSWin base-384 on ImageNet-1k at 384x384 (paper top-1 85.5),
# drop path 0.7; 8 GPUs x 128 images.
_base_ = [
    '../_base_/models/flatten_in1k.py',
    '../_base_/datasets/imagenet_flatten_384.py',
    '../_base_/schedules/flatten_in1k_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        type='FLattenCSWin',
        arch='base-384',
        drop_path_rate=0.7,
    ),
    head=dict(in_channels=768))
train_dataloader = dict(batch_size=128)
