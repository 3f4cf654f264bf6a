# L²ViT-T on ImageNet-1k (official top-1 83.1): 8 GPUs x 128 images with 4
# accumulation steps (a batch of 4096, as officially); the evaluation
# resizes the short side to 256 (bicubic) and center-crops 224, as the
# official evaluation does.
_base_ = [
    '../_base_/models/l2vit-tiny_in1k.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/l2vit_in1k_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
train_dataloader = dict(batch_size=128)
optim_wrapper = dict(accumulative_counts=4)
