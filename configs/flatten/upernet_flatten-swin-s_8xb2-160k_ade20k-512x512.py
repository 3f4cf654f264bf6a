# FLatten-Swin-S UperNet, 160k iterations on ADE20K at 512x512 with
# mmseg's Swin recipe (paper: mIoU 48.14).
_base_ = './upernet_flatten-swin-t_8xb2-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            checkpoint='https://cloud.tsinghua.edu.cn/f/'
            '94188e52af354bf4a88b/?dl=1')))
