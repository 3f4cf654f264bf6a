# Mask R-CNN with an L²ViT-T backbone (ImageNet-1k weights, converted on
# load) and FPN.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='L2ViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/'
            'download/v1.0/L2ViT-Tiny-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
