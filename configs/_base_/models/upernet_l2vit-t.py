# UperNet with an L²ViT-T backbone (ImageNet-1k weights, converted on load)
# for ADE20K: UPerHead on all four stages, FCN auxiliary head on stage 3.
_base_ = 'mmseg::_base_/models/upernet_swin.py'
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='L2ViT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/'
            'download/v1.0/L2ViT-Tiny-checkpoint-best-ema.pth')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))
