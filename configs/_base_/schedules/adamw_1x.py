# The L²ViT detection schedule: AdamW (lr 1e-4, weight decay 0.05 on every
# parameter, no clipping), 500 linear warm-up iterations from 0.001 x lr,
# 12 epochs with x0.1 steps after epochs 8 and 11, for 8 GPUs x 2 images.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
