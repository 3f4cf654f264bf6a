# FLattenPVTv2 b3 on ImageNet-1k at 224x224 (paper top-1 ~83.7),
# drop path 0.3; 8 GPUs x 128 images.
_base_ = [
    '../_base_/models/flatten_in1k.py',
    '../_base_/datasets/imagenet_flatten_224.py',
    '../_base_/schedules/flatten_in1k_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
model = dict(
    backbone=dict(
        type='FLattenPVTv2',
        arch='b3',
        drop_path_rate=0.3,
    ),
    head=dict(in_channels=512))
