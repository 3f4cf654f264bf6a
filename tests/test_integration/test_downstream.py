# Copyright (c) OpenMMLab. All rights reserved.
"""Every backbone of the plugin swapped into mmdet's and mmseg's own
shipped configs (only the backbone dict and the channels that follow from
it change) runs a loss step with backward and a predict step."""
import pytest
import torch
from conftest import SMALL_ARCHS, SMALL_DIMS
from mmengine.config import ConfigDict
from mmengine.hub import get_config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import mmplugin_l2vit  # noqa: F401

DET_CONFIGS = {
    'mask-rcnn': 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
    'cascade-mask-rcnn':
    'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    'retinanet': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
}
SEG_CONFIGS = {
    'upernet': 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_'
    'upernet_8xb2-160k_ade20k-512x512.py',
    'semantic-fpn': 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
}


def swap_backbone(model_cfg, type_name, in_channels):
    """Replace the backbone; the neck/heads take ``in_channels``."""
    model_cfg.backbone = ConfigDict(
        type=f'mmplugin_l2vit.{type_name}', drop_path_rate=0.1,
        out_indices=tuple(range(4 - len(in_channels), 4)),
        arch=SMALL_ARCHS[type_name])
    model_cfg.pop('pretrained', None)


def backward_losses(losses, expected_keys):
    assert set(expected_keys) <= set(losses), sorted(losses)
    total = 0
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            assert torch.isfinite(v).all(), name
            if 'loss' in name:
                total = total + v.sum()
    total.backward()


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
@pytest.mark.parametrize('config', sorted(DET_CONFIGS))
def test_mmdet_loss_and_predict(config, type_name):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    init_default_scope('mmdet')
    cfg = get_config(DET_CONFIGS[config])
    # RetinaNet takes stages 2-4 (P3-P7 from the FPN), as in its configs.
    in_channels = SMALL_DIMS[1:] if config == 'retinanet' else SMALL_DIMS
    swap_backbone(cfg.model, type_name, in_channels)
    cfg.model.neck.in_channels = in_channels
    if config == 'retinanet':
        cfg.model.neck.update(start_level=0, add_extra_convs='on_input')
    model = MODELS.build(cfg.model)
    model.init_weights()
    with_mask = 'mask' in config
    packed = demo_mm_inputs(
        2, [[3, 128, 128], [3, 125, 130]], num_items=[3, 2],
        with_mask=with_mask)

    model.train()
    losses = model(**model.data_preprocessor(packed, True), mode='loss')
    expected = ['loss_cls', 'loss_bbox'] if config == 'retinanet' else [
        'loss_rpn_cls', 'loss_mask' if with_mask else 'loss_bbox'
    ]
    if config == 'cascade-mask-rcnn':
        expected = ['loss_rpn_cls', 's0.loss_cls', 's2.loss_mask']
    backward_losses(losses, expected)
    assert model.backbone.stem.norm.weight.grad is not None

    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    for result, shape in zip(results, [(128, 128), (125, 130)]):
        pred = result.pred_instances
        assert pred.bboxes.shape[1] == 4
        assert len(pred.scores) == len(pred.labels)
        if with_mask and len(pred):
            assert tuple(pred.masks.shape[-2:]) == shape


def seg_inputs(batch, size, num_classes):
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, *size), dtype=torch.uint8))
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, *size)))
        sample.set_metainfo(
            dict(img_shape=size, ori_shape=size, pad_shape=size))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
@pytest.mark.parametrize('config', sorted(SEG_CONFIGS))
def test_mmseg_loss_and_predict(config, type_name):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = get_config(SEG_CONFIGS[config])
    swap_backbone(cfg.model, type_name, SMALL_DIMS)
    if config == 'upernet':
        cfg.model.decode_head.in_channels = SMALL_DIMS
        cfg.model.auxiliary_head.in_channels = SMALL_DIMS[2]
    else:
        cfg.model.neck.in_channels = SMALL_DIMS
    cfg.model.data_preprocessor.size = (96, 96)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    model.init_weights()
    packed = seg_inputs(2, (96, 96), cfg.model.decode_head.num_classes)

    model.train()
    losses = model(**model.data_preprocessor(packed, True), mode='loss')
    backward_losses(losses, ['decode.loss_ce'])

    model.eval()
    with torch.no_grad():
        results = model(
            **model.data_preprocessor(packed, False), mode='predict')
    assert len(results) == 2
    assert results[0].pred_sem_seg.data.shape == (1, 96, 96)
    assert int(results[0].pred_sem_seg.data.max()) < \
        cfg.model.decode_head.num_classes
