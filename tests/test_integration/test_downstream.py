# Copyright (c) OpenMMLab. All rights reserved.
"""Our backbone swapped into mmdet's and mmseg's own shipped configs runs a
loss step (with backward) and a predict step."""
import torch
from conftest import SMALL_ARCH
from mmengine.config import ConfigDict
from mmengine.hub import get_config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

import mmplugin_l2vit  # noqa: F401

CHANNELS = SMALL_ARCH['embed_dims']


def swap_backbone(model_cfg, **extra):
    model_cfg.backbone = ConfigDict(
        type='mmplugin_l2vit.L2ViT', arch=SMALL_ARCH, **extra)
    return model_cfg


def assert_finite_losses(losses, expected_keys):
    assert set(expected_keys) <= set(losses), sorted(losses)
    total = 0
    for name, value in losses.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            assert torch.isfinite(v).all(), name
            if 'loss' in name:
                total = total + v.sum()
    total.backward()


def test_mmdet_mask_rcnn_loss_and_predict():
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    init_default_scope('mmdet')
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    model_cfg = swap_backbone(cfg.model, drop_path_rate=0.1)
    model_cfg.neck.in_channels = CHANNELS
    model = MODELS.build(model_cfg)
    model.init_weights()
    packed = demo_mm_inputs(
        2, [[3, 128, 128], [3, 125, 130]], num_items=[3, 2], with_mask=True)

    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model.forward(**data, mode='loss')
    assert_finite_losses(losses, ['loss_rpn_cls', 'loss_cls', 'loss_bbox',
                                  'loss_mask'])
    assert model.backbone.stem.conv1.weight.grad is not None

    model.eval()
    data = model.data_preprocessor(packed, False)
    with torch.no_grad():
        results = model.forward(**data, mode='predict')
    assert len(results) == 2
    for result, shape in zip(results, [(128, 128), (125, 130)]):
        pred = result.pred_instances
        assert pred.bboxes.shape[1] == 4
        assert len(pred.scores) == len(pred.labels) == len(pred.masks)
        if len(pred):
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


def test_mmseg_upernet_loss_and_predict():
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = get_config('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_'
                     'upernet_8xb2-160k_ade20k-512x512.py')
    model_cfg = swap_backbone(cfg.model, drop_path_rate=0.1)
    model_cfg.pop('pretrained', None)
    model_cfg.decode_head.in_channels = CHANNELS
    model_cfg.auxiliary_head.in_channels = CHANNELS[2]
    model_cfg.data_preprocessor.size = (96, 96)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    model.init_weights()
    packed = seg_inputs(2, (96, 96), 150)

    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model.forward(**data, mode='loss')
    assert_finite_losses(losses, ['decode.loss_ce', 'aux.loss_ce'])

    model.eval()
    data = model.data_preprocessor(packed, False)
    with torch.no_grad():
        results = model.forward(**data, mode='predict')
    assert len(results) == 2
    assert results[0].pred_sem_seg.data.shape == (1, 96, 96)
    assert int(results[0].pred_sem_seg.data.max()) < 150
