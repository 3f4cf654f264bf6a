# L²ViT-B RetinaNet, 1x on COCO (drop path 0.2).
_base_ = './retinanet_l2vit-t_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.2,
        init_cfg=dict(
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/'
            'download/v1.0/L2ViT-Base-checkpoint-best-ema.pth')),
    neck=dict(in_channels=[256, 512, 1024]))
