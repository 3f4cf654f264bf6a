# FLatten-Swin-T Mask R-CNN, 1x on COCO with mmdet's Swin recipe (single
# scale 1333x800 + flip; paper: box AP 44.2, mask AP 40.2).
_base_ = [
    '../_base_/models/mask-rcnn_flatten-swin-t_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/adamw_swin_1x.py', 'mmdet::_base_/default_runtime.py'
]
