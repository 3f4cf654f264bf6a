# Copyright (c) OpenMMLab. All rights reserved.
"""The model index: every config of ours has a metafile entry, every entry's
config exists, the metafiles' Parameters and FLOPs are what our counter
gives, and the classifiers are listed by mmpretrain's ``ModelHub``.

Metadata convention (stated in the metafiles): for a classifier the whole
model (backbone, global average pooling, linear head) at its input size;
for a detector or segmentor the backbone alone at the paper's input size
(COCO 800x1280, ADE20K 512x2048). FLOPs are multiply-adds, counted by
``mmplugin_l2vit.analysis.count_macs_of`` (attention matmuls included).
Parameters are checked for every entry; FLOPs for the Tiny/b0 entries only
(the larger ones take minutes on two cores, and share the counted code).
"""
import functools
import glob
import os.path as osp
import re

import pytest
import torch
import yaml
from mmengine.config import Config

from mmplugin_l2vit.analysis import count_macs_of
from mmplugin_l2vit.model_index import (CLASSIFIER_DATA, MODEL_INDEX,
                                        load_model_index)
from mmplugin_l2vit.registry import MODELS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FAMILIES = ('l2vit', 'flatten')
# The paper's input size (H, W) by the config's default scope.
DENSE_INPUT = dict(mmdet=(800, 1280), mmseg=(512, 2048))


def family_configs():
    """Every config of ours that a user may inherit: configs/<family>/."""
    return sorted(
        osp.relpath(path, REPO) for family in FAMILIES
        for path in glob.glob(osp.join(REPO, 'configs', family, '*.py')))


@functools.lru_cache()
def metafile_models():
    """``{config path: metafile entry}`` over both metafiles."""
    models = {}
    for family in FAMILIES:
        with open(osp.join(REPO, 'configs', family, 'metafile.yml')) as f:
            for model in yaml.safe_load(f)['Models']:
                assert model['Config'] not in models, model['Config']
                models[model['Config']] = model
    return models


class Classifier(torch.nn.Module):
    """A backbone's last stage, global average pooling and a linear head:
    the mmpretrain ``ImageClassifier`` of our configs, as counted (its
    parameters equal the real model's: ``test_get_model_builds``)."""

    def __init__(self, backbone, in_channels, num_classes):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean((2, 3)))


def counted_model(config):
    """The model a metafile entry counts, and its input size (H, W)."""
    cfg = Config.fromfile(osp.join(REPO, config))
    backbone_cfg = cfg.model.backbone.to_dict()
    backbone_cfg.pop('init_cfg', None)
    backbone = MODELS.build(backbone_cfg)
    if cfg.default_scope != 'mmpretrain':
        return backbone.eval(), DENSE_INPUT[cfg.default_scope]
    size = 384 if config.endswith('-384px.py') else 224
    classifier = Classifier(backbone, cfg.model.head.in_channels,
                            cfg.model.head.num_classes)
    return classifier.eval(), (size, size)


def count(config, flops=True):
    """``(Parameters, FLOPs)`` of a config as the metafile states them;
    FLOPs is None when ``flops`` is False."""
    model, (height, width) = counted_model(config)
    params = sum(p.numel() for p in model.parameters())
    if not flops:
        return params, None
    x = torch.zeros(1, 3, height, width)
    with torch.no_grad():
        macs = count_macs_of(lambda: model(x))['total']
    return params, macs


def test_every_config_has_one_entry_and_every_entry_a_config():
    configs = family_configs()
    assert len(configs) > 40
    assert sorted(metafile_models()) == configs


def test_model_index_imports_both_metafiles():
    with open(osp.join(REPO, 'model-index.yml')) as f:
        index = yaml.safe_load(f)
    assert index['Import'] == [
        f'configs/{family}/metafile.yml' for family in FAMILIES
    ]
    # What mim and mmpretrain read, with the collections merged in.
    index = load_model_index(osp.join(REPO, 'model-index.yml'))
    papers = {
        collection.name: collection.paper['URL']
        for collection in index.collections
    }
    assert papers == dict(
        L2ViT='https://arxiv.org/abs/2501.16182',
        FLatten='https://arxiv.org/abs/2308.00442')
    assert sorted(m.config for m in index.models) == family_configs()
    for model in index.models:
        assert model.name == osp.splitext(osp.basename(model.config))[0]
        assert model.in_collection in papers


@pytest.mark.parametrize('config', family_configs())
def test_parameters_are_what_the_counter_gives(config):
    entry = metafile_models()[config]
    params, _ = count(config, flops=False)
    assert entry['Metadata']['Parameters'] == params


# The Tiny/b0 configs, one per (backbone, input size): the 1x and 3x
# schedules count the same.
SMALL_CONFIGS = [
    config for config in family_configs()
    if re.search(r'[-_](tiny|t|b0)[-_]', osp.basename(config))
    and '_ms-crop-3x_' not in config
]


@pytest.mark.slow
@pytest.mark.parametrize('config', SMALL_CONFIGS)
def test_flops_are_what_the_counter_gives(config):
    entry = metafile_models()[config]
    assert entry['Metadata']['FLOPs'] == count(config)[1]


def test_classifiers_are_in_mmpretrain_model_hub():
    """``list_models`` lists our classifiers (and only those)."""
    mmpretrain = pytest.importorskip('mmpretrain')
    assert osp.isfile(MODEL_INDEX), (
        'mmplugin_l2vit/.mim is missing: pip install -e . links it')
    classifiers = sorted(
        model['Name'] for model in metafile_models().values()
        if set(model['Metadata']['Training Data']) <= CLASSIFIER_DATA)
    assert len(classifiers) == 21
    listed = mmpretrain.list_models('*l2vit*') + mmpretrain.list_models(
        '*flatten*')
    assert sorted(listed) == classifiers
    # Only classifiers: mmpretrain builds every model in its own scope.
    assert not mmpretrain.list_models('mask-rcnn_l2vit')
    assert mmpretrain.list_models(
        'l2vit-tiny',
        task='Image Classification') == ['l2vit-tiny_8xb128-accum4_in1k']
    from mmpretrain.apis import ModelHub
    metainfo = ModelHub.get('l2vit-tiny_8xb128-accum4_in1k')
    assert metainfo.config.model.backbone.type == 'L2ViT'
    assert metainfo.weights == (
        'https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/'
        'L2ViT-Tiny-checkpoint-best-ema.pth')


@pytest.mark.parametrize('name', [
    'l2vit-tiny_8xb128-accum4_in1k', 'flatten-pvtv2-b0_8xb128_in1k'
])
def test_get_model_builds(name):
    """``mmpretrain.get_model(NAME)`` builds the whole classifier (through
    ``mmpretrain.models``, which imports torchvision) in mmpretrain's scope,
    with the parameters the metafile states, and it classifies."""
    import mmpretrain
    model = mmpretrain.get_model(name)
    assert type(model).__name__ == 'ImageClassifier'
    assert type(model.backbone).__module__.startswith('mmplugin_l2vit.')
    params = sum(p.numel() for p in model.parameters())
    family = name.split('-')[0]
    config = f'configs/{family}/{name}.py'
    assert params == metafile_models()[config]['Metadata']['Parameters']
    with torch.no_grad():
        scores = model.eval()(torch.randn(1, 3, 64, 64))
    assert scores.shape == (1, 1000)
