# The entry point: Mask R-CNN with an L²ViT-T backbone, 1x on COCO, with
# the paper's recipe (see l2vit/mask-rcnn_l2vit-t_fpn_1x_coco.py).
_base_ = './l2vit/mask-rcnn_l2vit-t_fpn_1x_coco.py'
