# FLatten-Swin-T Cascade Mask R-CNN, 3x on COCO with multi-scale +
# crop (drop path 0.2; paper: box AP 50.8, mask AP 44.1).
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
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        init_cfg=dict(
            type='Pretrained',
            checkpoint='https://cloud.tsinghua.edu.cn/f/'
            'e1518e76703e4e57a7f2/?dl=1')),
    neck=dict(in_channels=[96, 192, 384, 768]))
