# L²ViT-S Mask R-CNN, 1x on COCO (drop path 0.1).
_base_ = './mask-rcnn_l2vit-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.1,
        init_cfg=dict(
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/'
            'download/v1.0/L2ViT-Small-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
