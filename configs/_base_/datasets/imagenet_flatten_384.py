# ImageNet-1k at 384 with the official FLatten evaluation transform for the
# 384 models: a square bicubic resize to 384x384, no crop.
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_384.py'
