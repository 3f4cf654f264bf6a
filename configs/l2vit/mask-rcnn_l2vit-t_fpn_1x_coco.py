# L²ViT-T Mask R-CNN, 1x on COCO, the paper's recipe (drop path 0.1; the
# multi-scale + crop augmentation is used for 1x too).
_base_ = [
    '../_base_/models/mask-rcnn_l2vit-t_fpn.py',
    '../_base_/datasets/coco_instance_ms-crop.py',
    '../_base_/schedules/adamw_1x.py', 'mmdet::_base_/default_runtime.py'
]
