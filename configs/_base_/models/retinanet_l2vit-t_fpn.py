# RetinaNet with an L²ViT-T backbone: stages 2-4 feed an FPN whose extra
# levels come from its input (P3-P7), as in the L²ViT configs.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='L2ViT',
        arch='tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://github.com/ChuanyangZheng/L2ViT/releases/'
            'download/v1.0/L2ViT-Tiny-checkpoint-best-ema.pth')),
    neck=dict(
        in_channels=[192, 384, 768],
        start_level=0,
        add_extra_convs='on_input',
        num_outs=5))
