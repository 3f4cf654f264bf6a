# Copyright (c) OpenMMLab. All rights reserved.
"""Every config in the repository loads and builds its model, with the
necks and heads wired to the backbone's real output channels."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmplugin_l2vit  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(
    p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'),
                         recursive=True) if '_base_' not in p)


def test_configs_found():
    names = {osp.relpath(p, osp.join(REPO, 'configs')) for p in CONFIGS}
    assert 'mask_rcnn_l2vit.py' in names
    assert 'l2vit/upernet_l2vit-b_8xb2-160k_ade20k-512x512.py' in names


def backbone_channels(backbone, size=64):
    with torch.no_grad():
        return [o.shape[1] for o in backbone.eval()(
            torch.randn(1, 3, size, size))]


def expected_in_channels(cfg):
    model = cfg.model
    if 'neck' in model and 'in_channels' in model.neck:
        return list(model.neck.in_channels)
    if 'decode_head' in model:
        return list(model.decode_head.in_channels)
    return [model.head.in_channels]


@pytest.mark.parametrize(
    'path', CONFIGS, ids=[osp.relpath(p, REPO) for p in CONFIGS])
def test_config_builds(path):
    cfg = Config.fromfile(path)
    scope = cfg.get('default_scope')
    assert scope in ('mmdet', 'mmseg', 'mmpretrain'), scope
    assert 'mmplugin_l2vit' in cfg.custom_imports.imports
    # Nothing is downloaded: the architecture is what is checked.
    cfg.model.backbone.pop('init_cfg', None)
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    if scope == 'mmseg':
        bn = dict(type='BN', requires_grad=True)
        cfg.model.decode_head.norm_cfg = bn
        if 'auxiliary_head' in cfg.model:
            cfg.model.auxiliary_head.norm_cfg = bn
    # The whole model: mmpretrain's classifiers too (their library imports
    # torchvision, part of the installed stack).
    model = registry.build(cfg.model)
    assert backbone_channels(model.backbone) == expected_in_channels(cfg)
    if scope == 'mmpretrain':
        assert type(model).__name__ == 'ImageClassifier'
        assert type(model.neck).__name__ == 'GlobalAveragePooling'
        assert type(model.head).__name__ == 'LinearClsHead'
        size = 64
        with torch.no_grad():
            scores = model.eval()(torch.randn(1, 3, size, size))
        assert scores.shape == (1, cfg.model.head.num_classes)
