# FLatten-Swin-T Mask R-CNN, 3x on COCO with multi-scale + crop (mmdet's
# Swin recipe; paper: box AP 46.5, mask AP 42.1).
_base_ = [
    '../_base_/models/mask-rcnn_flatten-swin-t_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/adamw_swin_3x.py', 'mmdet::_base_/default_runtime.py'
]
