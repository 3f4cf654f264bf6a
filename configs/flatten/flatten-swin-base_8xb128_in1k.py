# FLattenSwin base on ImageNet-1k at 224x224 (paper top-1 83.8),
# drop path 0.5; 8 GPUs x 128 images.
_base_ = [
    '../_base_/models/flatten_in1k.py',
    '../_base_/datasets/imagenet_flatten_224.py',
    '../_base_/schedules/flatten_in1k_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        type='FLattenSwin',
        arch='base',
        drop_path_rate=0.5,
    ),
    head=dict(in_channels=1024))
