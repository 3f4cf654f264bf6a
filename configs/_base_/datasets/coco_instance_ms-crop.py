# COCO instance segmentation with the multi-scale + crop augmentation.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py', './ms-crop_augmentation.py'
]

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    {{_base_.random_flip}},
    {{_base_.multi_scale_crop}},
    dict(type='PackDetInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
