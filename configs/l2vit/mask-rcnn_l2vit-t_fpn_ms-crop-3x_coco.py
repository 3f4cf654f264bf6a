# L²ViT-T Mask R-CNN, 3x (36 epochs) on COCO with multi-scale + crop
# augmentation (drop path 0.2).
_base_ = [
    '../_base_/models/mask-rcnn_l2vit-t_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/adamw_3x.py', 'mmdet::_base_/default_runtime.py'
]

model = dict(backbone=dict(drop_path_rate=0.2))
