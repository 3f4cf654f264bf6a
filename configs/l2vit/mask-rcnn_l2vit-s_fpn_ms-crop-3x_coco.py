# L²ViT-S Mask R-CNN, 3x on COCO (drop path 0.2).
_base_ = './mask-rcnn_l2vit-t_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.2,
        init_cfg=dict(
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/'
            'download/v1.0/L2ViT-Small-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[96, 192, 384, 768]))
