# An ImageNet-1k classifier on a FLatten backbone (its last stage, global
# average pooling, a linear head); the leaf configs set the backbone type,
# arch and head width. Converted official weights for the whole
# classifier: tools/model_converters/flatten2mmdet.py --mmpretrain.
custom_imports = dict(imports=['mmplugin_l2vit'], allow_failed_imports=False)

# mmpretrain's scope, stated: a config inheriting this one by
# 'mmplugin_l2vit::...' would otherwise give the classifier the plugin's
# scope, whose registry has no ImageClassifier.
model = dict(
    _scope_='mmpretrain',
    type='ImageClassifier',
    backbone=dict(out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        init_cfg=None,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False),
    init_cfg=[
        dict(type='TruncNormal', layer='Linear', std=.02, bias=0.),
        dict(type='Constant', layer='LayerNorm', val=1., bias=0.)
    ],
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))
