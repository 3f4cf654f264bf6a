# L²ViT-B UperNet, 160k iterations on ADE20K at 512x512 (drop path
# 0.3 as for every size).
_base_ = './upernet_l2vit-t_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/'
            'download/v1.0/L2ViT-Base-checkpoint-best-ema.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
