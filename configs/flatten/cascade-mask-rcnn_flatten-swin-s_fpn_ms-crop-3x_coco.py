# FLatten-Swin-S Cascade Mask R-CNN, 3x on COCO with multi-scale + crop
# (drop path 0.3; paper: box AP 52.2, mask AP 45.4).
_base_ = './cascade-mask-rcnn_flatten-swin-t_fpn_ms-crop-3x_coco.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(
            checkpoint='https://cloud.tsinghua.edu.cn/f/'
            '94188e52af354bf4a88b/?dl=1')))
