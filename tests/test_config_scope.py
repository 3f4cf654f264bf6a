# Copyright (c) OpenMMLab. All rights reserved.
"""A user's config in another directory inherits ours by scope,
``_base_ = 'mmplugin_l2vit::l2vit/mask-rcnn_l2vit-t_fpn_1x_coco.py'``, once
the plugin is imported (it reads ``mmplugin_l2vit/.mim/configs``, which an
install lays out). The wheel test checks the same for an installed wheel.
"""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE
from mmengine.registry import init_default_scope
from mmengine.utils import get_installed_path

import mmplugin_l2vit
from mmplugin_l2vit.config_scope import PACKAGE_LOCATOR, SCOPE
from mmplugin_l2vit.registry import MODELS as PLUGIN_MODELS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs')
# Every config in a folder: mmengine resolves 'scope::folder/name.py' only
# (configs/mask_rcnn_l2vit.py, an alias at the top, cannot be inherited).
SCOPED_CONFIGS = sorted(
    osp.relpath(path, CONFIGS)
    for path in glob.glob(osp.join(CONFIGS, '*', '*.py'))
    if not path.startswith(osp.join(CONFIGS, '_base_')))


def user_config(directory, base, body=''):
    path = osp.join(str(directory), 'user_config.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = 'mmplugin_l2vit::{base}'\n{body}")
    return path


def test_scope_maps_to_the_imported_package():
    assert MODULE2PACKAGE[SCOPE] == PACKAGE_LOCATOR
    # mmengine finds the folder of the package Python imports, wherever
    # and however it is installed.
    package_dir = osp.dirname(osp.abspath(mmplugin_l2vit.__file__))
    assert get_installed_path(PACKAGE_LOCATOR) == package_dir
    assert osp.isdir(osp.join(package_dir, '.mim', 'configs')), (
        'mmplugin_l2vit/.mim is missing: pip install -e . links it')


@pytest.mark.parametrize('config', SCOPED_CONFIGS)
def test_every_config_inherits_by_scope(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(user_config(tmp_path, config))
    assert cfg.default_scope in ('mmdet', 'mmseg', 'mmpretrain')
    assert cfg.model.backbone.type in PLUGIN_MODELS
    # The model is built in its library's scope, not the plugin's, whose
    # registry has only the backbones.
    assert cfg.model._scope_ == cfg.default_scope


def test_model_of_a_scoped_config_builds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(
        user_config(
            tmp_path, 'l2vit/mask-rcnn_l2vit-t_fpn_1x_coco.py',
            'model = dict(backbone=dict(init_cfg=None), '
            'roi_head=dict(bbox_head=dict(num_classes=3)))\n'))
    init_default_scope(cfg.default_scope)
    from mmdet.registry import MODELS
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'MaskRCNN'
    assert type(model.backbone).__name__ == 'L2ViT'
    assert model.backbone.norm3.normalized_shape == (768, )
    assert model.roi_head.bbox_head.num_classes == 3
