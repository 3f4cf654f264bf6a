# ImageNet-1k classifier on L²ViT-T: the backbone's last stage (its
# output norm holds the official final norm), global average pooling and
# a linear head. Converted official weights for the whole classifier:
# tools/model_converters/l2vit2mmdet.py SRC DST --mmpretrain.
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

# mmpretrain's scope, stated: a config inheriting this one by
# 'mmplugin_l2vit::...' would otherwise give the classifier the plugin's
# scope, whose registry has no ImageClassifier.
model = dict(
    _scope_='mmpretrain',
    type='ImageClassifier',
    backbone=dict(
        type='L2ViT', arch='tiny', out_indices=(3, ), drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        init_cfg=None,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer=['Linear', 'Conv2d'], std=.02,
             bias=0.),
        dict(type='Constant', layer=['LayerNorm', 'BatchNorm2d'], val=1.,
             bias=0.)
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))
