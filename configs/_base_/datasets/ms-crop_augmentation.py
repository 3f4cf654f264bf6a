# The multi-scale + crop augmentation that the L²ViT and Swin papers use
# for both 1x and 3x detection schedules: random flip, then either a resize
# of the short side to 480..800 (step 32, long side <= 1333) or a resize to
# 400/500/600, a random 384..600 crop and the same multi-scale resize.
# coco_{instance,detection}_ms-crop.py put it into their pipelines.
short_sides = [(s, 1333) for s in range(480, 801, 32)]
random_flip = dict(type='RandomFlip', prob=0.5)
multi_scale_crop = dict(
    type='RandomChoice',
    transforms=[
        [dict(type='RandomChoiceResize', scales=short_sides, keep_ratio=True)],
        [
            dict(
                type='RandomChoiceResize',
                scales=[(400, 1333), (500, 1333), (600, 1333)],
                keep_ratio=True),
            dict(
                type='RandomCrop',
                crop_type='absolute_range',
                crop_size=(384, 600),
                allow_negative_crop=True),
            dict(
                type='RandomChoiceResize',
                scales=short_sides,
                keep_ratio=True)
        ],
    ])
