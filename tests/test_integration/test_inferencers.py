# Copyright (c) OpenMMLab. All rights reserved.
"""The three codebases' inferencers with our configs and checkpoints saved
from our models: mmpretrain's ``ImageClassificationInferencer`` (from a
config and by a model-index name), mmdet's ``DetInferencer`` and mmseg's
``MMSegInferencer``, each on a generated image, with the class names
carried in the checkpoint's ``dataset_meta``."""
import importlib
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import save_checkpoint

from mmplugin_l2vit.datasets import (SHAPE_CLASSES, SHAPE_PALETTE,
                                     generate_demo_data)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'configs', 'demo')
CLS_CONFIG = osp.join(DEMO, 'l2vit-demo_1xb32_shapes.py')
DET_CONFIG = osp.join(DEMO, 'mask-rcnn_l2vit-demo_shapes.py')
SEG_CONFIG = osp.join(DEMO, 'upernet_l2vit-demo_shapes.py')
SIZE = 96


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo_data'))
    generate_demo_data(root, num_train=0, num_val=4, size=SIZE)
    return root


def save_model(config, scope, path):
    """The model of ``config``, freshly initialised, saved as a checkpoint
    with the shapes' ``dataset_meta``; returns ``path``."""
    cfg = Config.fromfile(config)
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry')
    torch.manual_seed(0)
    model = registry.MODELS.build(cfg.model)
    model.init_weights()
    meta = dict(
        dataset_meta=dict(
            classes=SHAPE_CLASSES, palette=[list(c) for c in SHAPE_PALETTE]))
    save_checkpoint(dict(state_dict=model.state_dict(), meta=meta), path)
    return path


def test_image_classification_inferencer(data_root, tmp_path):
    from mmpretrain.apis import ImageClassificationInferencer
    checkpoint = save_model(CLS_CONFIG, 'mmpretrain',
                            str(tmp_path / 'cls.pth'))
    inferencer = ImageClassificationInferencer(
        CLS_CONFIG, pretrained=checkpoint, device='cpu')
    assert type(inferencer.model.backbone).__name__ == 'L2ViT'
    images = [
        osp.join(data_root, 'imagenet', 'val', f'val_{i:06d}.JPEG')
        for i in range(2)
    ]
    results = inferencer(images)
    assert len(results) == 2
    for result in results:
        assert result['pred_class'] in SHAPE_CLASSES
        assert 0 <= result['pred_label'] < len(SHAPE_CLASSES)
        assert result['pred_scores'].shape == (len(SHAPE_CLASSES), )
        np.testing.assert_allclose(result['pred_scores'].sum(), 1, rtol=1e-5)


def test_image_classification_inferencer_by_name(data_root):
    """A model-index name, as mmpretrain's own models are used."""
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(
        'l2vit-tiny_8xb128-accum4_in1k', pretrained=False, device='cpu')
    assert type(inferencer.model.backbone).__name__ == 'L2ViT'
    (result, ) = inferencer(
        osp.join(data_root, 'imagenet', 'val', 'val_000000.JPEG'))
    assert result['pred_scores'].shape == (1000, )


def test_det_inferencer(data_root, tmp_path):
    from mmdet.apis import DetInferencer
    checkpoint = save_model(DET_CONFIG, 'mmdet', str(tmp_path / 'det.pth'))
    inferencer = DetInferencer(DET_CONFIG, checkpoint, device='cpu')
    assert type(inferencer.model.backbone).__name__ == 'L2ViT'
    assert inferencer.model.dataset_meta['classes'] == SHAPE_CLASSES
    out_dir = str(tmp_path / 'out')
    result = inferencer(
        osp.join(data_root, 'coco', 'val', '000000.jpg'),
        out_dir=out_dir,
        no_save_pred=False)
    (prediction, ) = result['predictions']
    assert set(prediction) >= {'labels', 'scores', 'bboxes', 'masks'}
    assert len(prediction['labels']) == len(prediction['bboxes'])
    assert all(0 <= label < len(SHAPE_CLASSES)
               for label in prediction['labels'])
    assert osp.isfile(osp.join(out_dir, 'vis', '000000.jpg'))
    assert osp.isfile(osp.join(out_dir, 'preds', '000000.json'))


def test_mmseg_inferencer(data_root, tmp_path):
    from mmseg.apis import MMSegInferencer
    checkpoint = save_model(SEG_CONFIG, 'mmseg', str(tmp_path / 'seg.pth'))
    inferencer = MMSegInferencer(SEG_CONFIG, checkpoint, device='cpu')
    assert type(inferencer.model.backbone).__name__ == 'L2ViT'
    image = osp.join(data_root, 'ade', 'images', 'validation', '000000.jpg')
    result = inferencer(image, return_datasamples=False)
    prediction = result['predictions']
    # The label map at the input image's size, over the shapes' classes.
    assert prediction.shape == (SIZE, SIZE)
    assert set(np.unique(prediction)) <= set(range(len(SHAPE_CLASSES)))
