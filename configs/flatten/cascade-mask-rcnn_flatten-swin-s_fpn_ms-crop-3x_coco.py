# FLatten-Swin-S Cascade Mask R-CNN, 3x on COCO with multi-scale +
# crop (drop path 0.3; paper: box AP 52.2, mask AP 45.4).
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/adamw_swin_3x.py', 'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='FLattenSwin',
        arch='small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://cloud.tsinghua.edu.cn/f/'
            '94188e52af354bf4a88b/?dl=1')),
    neck=dict(in_channels=[96, 192, 384, 768]))
