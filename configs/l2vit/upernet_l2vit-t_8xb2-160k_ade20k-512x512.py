# L²ViT-T UperNet, 160k iterations on ADE20K at 512x512, the paper's recipe:
# drop path 0.3, AdamW (lr 6e-5, weight decay 0.01 on every parameter),
# 1500 linear warm-up iterations from 1e-6 x lr, then poly decay (power 1)
# to 0; 8 GPUs x 2 images.
_base_ = [
    '../_base_/models/upernet_l2vit-t.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py'
]
crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        by_epoch=False,
        begin=1500,
        end=160000)
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=16000))
