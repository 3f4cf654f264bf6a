# Mask R-CNN with a FLatten-Swin-T backbone (the official ImageNet-1k
# release, converted on load) and FPN.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='FLattenSwin',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://cloud.tsinghua.edu.cn/f/'
            'e1518e76703e4e57a7f2/?dl=1')),
    neck=dict(in_channels=[96, 192, 384, 768]))
