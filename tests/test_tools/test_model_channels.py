# Copyright (c) OpenMMLab. All rights reserved.
"""A neck or head whose ``in_channels`` do not match the backbone's outputs
is reported before the first iteration, naming both lists: by
:func:`mmplugin_l2vit.check_model_channels` and by tools/train.py and
tools/test.py."""
import importlib
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from repo_scripts import load_script

from mmplugin_l2vit import check_model_channels

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(REPO, 'configs', 'demo',
                      'mask-rcnn_l2vit-demo_shapes.py')
SEG_CONFIG = osp.join(REPO, 'configs', 'demo', 'upernet_l2vit-demo_shapes.py')
CLS_CONFIG = osp.join(REPO, 'configs', 'demo', 'l2vit-demo_1xb32_shapes.py')
TINY = {'model.backbone.arch.depths': [1, 1, 1, 1]}
DIMS = '[32, 64, 128, 256]'


def build(config, scope, **options):
    """The model of ``config``, with one block per stage unless it names
    an arch preset."""
    cfg = Config.fromfile(config)
    if isinstance(cfg.model.backbone.arch, dict):
        cfg.merge_from_dict(TINY)
    cfg.merge_from_dict(options)
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry')
    return registry.MODELS.build(cfg.model)


def test_matching_models_pass():
    check_model_channels(build(DET_CONFIG, 'mmdet'))
    check_model_channels(build(SEG_CONFIG, 'mmseg'))
    check_model_channels(build(CLS_CONFIG, 'mmpretrain'))


def test_det_neck_mismatch():
    model = build(DET_CONFIG, 'mmdet',
                  **{'model.neck.in_channels': [96, 192, 384, 768]})
    with pytest.raises(
            ValueError,
            match=r'^the neck FPN takes in_channels \[96, 192, 384, 768\] '
            rf'but the backbone L2ViT outputs {re.escape(DIMS)} '
            r'\(out_indices \(0, 1, 2, 3\)\)$'):
        check_model_channels(model)


def test_det_out_indices_mismatch():
    model = build(DET_CONFIG, 'mmdet',
                  **{'model.backbone.out_indices': (1, 2, 3)})
    with pytest.raises(
            ValueError,
            match=r'takes in_channels \[32, 64, 128, 256\] but the backbone '
            r'L2ViT outputs \[64, 128, 256\]'):
        check_model_channels(model)


def test_seg_decode_head_mismatch():
    model = build(SEG_CONFIG, 'mmseg',
                  **{'model.decode_head.in_channels': [32, 64, 128, 512]})
    with pytest.raises(
            ValueError,
            match=r'^the decode_head UPerHead takes in_channels \[32, 64, '
            rf'128, 512\] but the backbone L2ViT outputs {re.escape(DIMS)} '
            r'\(out_indices \(0, 1, 2, 3\)\), of which it gets \[32, 64, 128, '
            r'256\]$'):
        check_model_channels(model)


def test_seg_auxiliary_head_mismatch():
    model = build(SEG_CONFIG, 'mmseg',
                  **{'model.auxiliary_head.in_channels': 64})
    with pytest.raises(
            ValueError,
            match=r'the auxiliary_head FCNHead takes in_channels 64 .*, of '
            r'which it gets 128$'):
        check_model_channels(model)
    model = build(SEG_CONFIG, 'mmseg', **{'model.auxiliary_head.in_index': 5})
    with pytest.raises(ValueError, match=r'reads outputs in_index 5 but'):
        check_model_channels(model)


def test_cls_head_mismatch():
    model = build(CLS_CONFIG, 'mmpretrain',
                  **{'model.head.in_channels': 512})
    assert type(model).__name__ == 'ImageClassifier'
    with pytest.raises(
            ValueError,
            match=r'the head LinearClsHead takes in_channels 512 but the '
            r'backbone L2ViT outputs \[256\] .*, of which it gets 256$'):
        check_model_channels(model)


def test_wrappers_are_looked_into():
    from mmdet.models import DetTTAModel
    model = build(DET_CONFIG, 'mmdet',
                  **{'model.neck.in_channels': [1, 2, 3, 4]})
    with pytest.raises(ValueError, match='the neck FPN'):
        check_model_channels(DetTTAModel(module=model))


@pytest.fixture
def never_run(monkeypatch):
    """Fails if the runner starts training or testing."""

    def refuse(runner):
        raise AssertionError('the runner started')

    monkeypatch.setattr(Runner, 'train', refuse)
    monkeypatch.setattr(Runner, 'test', refuse)


WRONG_NECK = ['model.neck.in_channels=[96,192,384,768]']


def test_train_tool_reports_before_training(tmp_path, never_run):
    with pytest.raises(
            SystemExit,
            match=r'^the neck FPN takes in_channels \[96, 192, 384, 768\] '
            r'but the backbone L2ViT outputs \[32, 64, 128, 256\]'):
        load_script('tools/train.py').main([
            DET_CONFIG, '--work-dir',
            str(tmp_path), '--cfg-options',
            'model.backbone.arch.depths=[1,1,1,1]', *WRONG_NECK
        ])


def test_test_tool_reports_before_testing(tmp_path, never_run):
    checkpoint = tmp_path / 'any.pth'
    torch.save(dict(state_dict={}, meta={}), checkpoint)
    with pytest.raises(SystemExit, match=r'^the neck FPN takes in_channels'):
        load_script('tools/test.py').main([
            DET_CONFIG,
            str(checkpoint), '--work-dir',
            str(tmp_path), '--cfg-options',
            'model.backbone.arch.depths=[1,1,1,1]', *WRONG_NECK
        ])
