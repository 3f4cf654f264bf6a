# mmdet's Swin detection schedule: AdamW (lr 1e-4, weight decay 0.05, none
# on norms and relative position bias tables), 1000 linear warm-up
# iterations, 12 epochs with x0.1 steps after epochs 8 and 11.
_base_ = './adamw_1x.py'

optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
