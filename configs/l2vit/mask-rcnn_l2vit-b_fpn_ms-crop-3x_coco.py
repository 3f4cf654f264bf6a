# L²ViT-B Mask R-CNN, 3x on COCO (drop path 0.3).
_base_ = './mask-rcnn_l2vit-t_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/'
            'download/v1.0/L2ViT-Base-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[128, 256, 512, 1024]))
