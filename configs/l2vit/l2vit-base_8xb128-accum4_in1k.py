# L²ViT-B on ImageNet-1k (official top-1 84.4, drop path 0.3).
_base_ = './l2vit-tiny_8xb128-accum4_in1k.py'

model = dict(
    backbone=dict(arch='base', drop_path_rate=0.3),
    head=dict(in_channels=1024))
