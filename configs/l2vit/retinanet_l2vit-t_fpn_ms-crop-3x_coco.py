# L²ViT-T RetinaNet, 3x on COCO (drop path 0.2, multi-scale + crop).
_base_ = [
    '../_base_/models/retinanet_l2vit-t_fpn.py',
    '../_base_/datasets/coco_detection_ms-crop.py',
    '../_base_/schedules/adamw_3x.py', 'mmdet::_base_/default_runtime.py'
]

model = dict(backbone=dict(drop_path_rate=0.2))
