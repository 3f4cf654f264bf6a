# L²ViT-B (window 12) fine-tuned at 384x384 on ImageNet-1k from its
# ImageNet-22k weights (official top-1 87.0): 30 epochs, lr 4e-5, weight
# decay 1e-8, 5 warm-up epochs, drop path 0.2, EMA; 8 GPUs x 64 images x 2
# accumulation steps. The evaluation warps the image to 384x384 (bicubic,
# no crop), as the official evaluation does.
_base_ = [
    '../_base_/models/l2vit-tiny_in1k.py',
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_384.py',
    '../_base_/schedules/l2vit_in1k_300e.py',
    'mmpretrain::_base_/default_runtime.py'
]
model = dict(
    backbone=dict(arch='base-384', drop_path_rate=0.2),
    head=dict(in_channels=1024))
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(
    optimizer=dict(lr=4e-5, weight_decay=1e-8), accumulative_counts=2)
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=4e-7,
        by_epoch=True,
        begin=5,
        convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=30)
auto_scale_lr = dict(base_batch_size=1024)
