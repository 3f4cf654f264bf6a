# Copyright (c) OpenMMLab. All rights reserved.
"""``tools/train.py`` and ``tools/test.py`` on our ImageNet configs, as they
are (whole L²ViT-T and FLatten-PVTv2-b0 classifiers, mmpretrain's training
pipeline with RandAugment, Mixup/CutMix, EMA, the official evaluation
transforms): generated images in the ImageNet folder layout
(``train/<class>/*.JPEG``, ``val/*.JPEG``, ``meta/*.txt``), read by
mmpretrain's ``ImageNet`` dataset; only the crop sizes, the batch size and
the length of the schedule are made small. The tools run in this process
through their ``main(argv)``."""
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from repo_scripts import load_script

from mmplugin_l2vit.datasets import SHAPE_CLASSES, generate_demo_data

pytestmark = pytest.mark.slow

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = [
    'configs/l2vit/l2vit-tiny_8xb128-accum4_in1k.py',
    'configs/flatten/flatten-pvtv2-b0_8xb128_in1k.py',
]
NUM_TRAIN = 4
NUM_VAL = 4
CROP = 64


@pytest.fixture(scope='module')
def imagenet_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo_data'))
    return generate_demo_data(
        root, num_train=NUM_TRAIN, num_val=NUM_VAL, size=96)['imagenet']


def pipeline_options(cfg, loader):
    """``--cfg-options`` that shrink the crops of a loader's pipeline to
    :data:`CROP`, wherever the config puts them."""
    options = []
    prefix = f'{loader}.dataset.pipeline'
    for index, step in enumerate(cfg[loader].dataset.pipeline):
        if step.type == 'RandomResizedCrop':
            options.append(f'{prefix}.{index}.scale={CROP}')
        elif step.type == 'ResizeEdge':
            options.append(f'{prefix}.{index}.scale={CROP + 8}')
        elif step.type == 'Resize':
            options.append(f'{prefix}.{index}.scale=({CROP + 8},{CROP + 8})')
        elif step.type == 'CenterCrop':
            options.append(f'{prefix}.{index}.crop_size={CROP}')
    return options


def small_options(config, data_root):
    cfg = Config.fromfile(osp.join(REPO, config))
    # Warm-up for one epoch, cosine decay for the other.
    options = [
        'train_cfg.max_epochs=2', 'param_scheduler.0.end=1',
        'param_scheduler.1.begin=1', 'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=1'
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [
            f'{loader}.dataset.data_root={data_root}',
            f'{loader}.batch_size=2', f'{loader}.num_workers=0',
            f'{loader}.persistent_workers=False'
        ]
        options += pipeline_options(cfg, loader)
    return options


def latest_metrics(work_dir):
    runs = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    with open(runs[-1]) as f:
        return json.load(f)


@pytest.mark.parametrize('config', CONFIGS)
def test_train_and_test_tools_on_imagenet_config(config, imagenet_root,
                                                 tmp_path):
    work_dir = str(tmp_path / 'work')
    options = small_options(config, imagenet_root)
    torch.manual_seed(0)
    load_script('tools/train.py').main([
        osp.join(REPO, config), '--work-dir', work_dir, '--cfg-options',
        *options
    ])
    checkpoint = osp.join(work_dir, 'epoch_2.pth')
    assert osp.isfile(checkpoint)
    # Trained for two epochs of two iterations, validated after each.
    (scalars, ) = glob.glob(osp.join(work_dir, '*', 'vis_data',
                                     'scalars.json'))
    with open(scalars) as f:
        logged = [json.loads(line) for line in f]
    assert [entry['step'] for entry in logged
            if 'loss' in entry] == [1, 2, 3, 4]
    assert [set(entry) >= {'accuracy/top1', 'accuracy/top5'}
            for entry in logged if 'accuracy/top1' in entry] == [True, True]
    # The checkpoint is mmpretrain's classifier, with the EMA weights where
    # the schedule keeps them (L²ViT's).
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)
    assert 'head.fc.weight' in state['state_dict']
    assert state['state_dict']['head.fc.weight'].shape[0] == 1000
    hooks = Config.fromfile(osp.join(REPO, config)).get('custom_hooks', [])
    uses_ema = any(hook.type == 'EMAHook' for hook in hooks)
    assert uses_ema == config.startswith('configs/l2vit/')
    assert ('ema_state_dict' in state) == uses_ema

    test_dir = str(tmp_path / 'test')
    load_script('tools/test.py').main([
        osp.join(REPO, config), checkpoint, '--work-dir', test_dir,
        '--out', osp.join(test_dir, 'predictions.pkl'), '--cfg-options',
        *options
    ])
    metrics = latest_metrics(test_dir)
    assert 0 <= metrics['accuracy/top1'] <= 100
    assert 0 <= metrics['accuracy/top5'] <= 100
    assert osp.isfile(osp.join(test_dir, 'predictions.pkl'))


def test_the_generated_layout_is_imagenets(imagenet_root):
    """mmpretrain's ImageNet dataset reads the generated lists; the labels
    are the classes' folders."""
    from mmpretrain.datasets import ImageNet
    train = ImageNet(
        data_root=imagenet_root,
        split='train',
        metainfo=dict(classes=SHAPE_CLASSES))
    assert len(train) == NUM_TRAIN
    for index in range(len(train)):
        info = train.get_data_info(index)
        folder = osp.basename(osp.dirname(info['img_path']))
        assert folder == SHAPE_CLASSES[info['gt_label']]
    val = ImageNet(
        data_root=imagenet_root,
        split='val',
        metainfo=dict(classes=SHAPE_CLASSES))
    assert len(val) == NUM_VAL
    assert sorted(val.get_gt_labels().tolist()) == list(range(NUM_VAL))
