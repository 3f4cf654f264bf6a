# Copyright (c) OpenMMLab. All rights reserved.
"""Wrong weights stop a run instead of testing or training random ones:
``tools/test.py`` given an official release file, a bare ResNet state dict
or a checkpoint of another model, ``load_from`` another model in
``tools/train.py``, and the converters given an official file that lacks
part of the network."""
import os.path as osp
import re
import subprocess
import sys

import flatten_cswin_reference as cswin_ref
import flatten_pvt_reference as pvt_ref
import flatten_swin_reference as swin_ref
import pytest
import torch
from l2vit_reference import official_state_dict
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import IterBasedTrainLoop
from repo_scripts import load_script

from mmplugin_l2vit import FLattenSwin
from mmplugin_l2vit.datasets import generate_demo_data

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(REPO, 'configs', 'demo',
                      'mask-rcnn_l2vit-demo_shapes.py')
CONVERTERS = osp.join(REPO, 'tools', 'model_converters')
DIMS, HEADS = [32, 64, 128, 256], [1, 2, 4, 8]
TINY = ['model.backbone.arch.depths=[1,1,1,1]']

TEST_TOOL = load_script('tools/test.py')
TRAIN_TOOL = load_script('tools/train.py')


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo_data'))
    generate_demo_data(root, num_train=2, num_val=1, size=64)
    return osp.join(root, 'coco') + osp.sep


def data_options(coco_root):
    return [
        f'{split}_dataloader.dataset.data_root={coco_root}'
        for split in ('train', 'val', 'test')
    ] + [
        f'{split}_evaluator.ann_file={coco_root}annotations/'
        'instances_val.json' for split in ('val', 'test')
    ]


@pytest.fixture(scope='module')
def detector_state_dict():
    cfg = Config.fromfile(DET_CONFIG)
    cfg.merge_from_dict({'model.backbone.arch.depths': [1, 1, 1, 1]})
    init_default_scope('mmdet')
    from mmdet.registry import MODELS
    return MODELS.build(cfg.model).state_dict()


@pytest.fixture
def no_test_loop(monkeypatch):
    """Fails the test if the runner gets to run the test loop."""
    from mmengine.runner import TestLoop

    def run(loop):
        raise AssertionError('the test loop ran with wrong weights')

    monkeypatch.setattr(TestLoop, 'run', run)


def run_test_tool(checkpoint, work_dir, coco_root):
    TEST_TOOL.main([
        DET_CONFIG,
        str(checkpoint), '--work-dir',
        str(work_dir), '--cfg-options', *TINY, *data_options(coco_root)
    ])


def test_release_file_names_the_converter(tmp_path, coco_root, no_test_loop):
    release = tmp_path / 'l2vit_release.pth'
    torch.save(
        dict(model=official_state_dict(DIMS, [1, 1, 1, 1], HEADS), epoch=299),
        release)
    with pytest.raises(
            SystemExit,
            match=rf'^{release}: this is an official L2ViT release file, '
            r'which holds a backbone only, not a checkpoint of this model: '
            r'convert it with `python tools/model_converters/l2vit2mmdet.py '
            r'RELEASE.pth BACKBONE.pth`'):
        run_test_tool(release, tmp_path / 'work', coco_root)


def test_resnet_state_dict_refused(tmp_path, coco_root, no_test_loop):
    resnet = tmp_path / 'resnet50.pth'
    torch.save(
        {
            'conv1.weight': torch.zeros(64, 3, 7, 7),
            'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1),
            'fc.weight': torch.zeros(1000, 2048)
        }, resnet)
    with pytest.raises(
            SystemExit,
            match=rf"^{resnet}: L2ViT: only 0 of its \d+ weights would load "
            r"from this checkpoint under the prefix 'backbone.'\. It holds no "
            r"key under 'backbone.'"):
        run_test_tool(resnet, tmp_path / 'work', coco_root)


def other_model_checkpoint(detector_state_dict, path):
    """The demo detector with a FLatten-Swin backbone instead."""
    swin = FLattenSwin(
        dict(embed_dims=DIMS, depths=[1, 1, 1, 1], num_heads=HEADS))
    state_dict = {
        k: v
        for k, v in detector_state_dict.items()
        if not k.startswith('backbone.')
    }
    state_dict.update(
        (f'backbone.{k}', v) for k, v in swin.state_dict().items())
    torch.save(dict(state_dict=state_dict, meta={}), path)
    return path


def test_checkpoint_of_another_model_refused_by_test(tmp_path, coco_root,
                                                     detector_state_dict,
                                                     no_test_loop):
    path = other_model_checkpoint(detector_state_dict,
                                  tmp_path / 'swin_detector.pth')
    with pytest.raises(SystemExit, match=r'L2ViT: only \d+ of its'):
        run_test_tool(path, tmp_path / 'work', coco_root)


def test_load_from_another_model_refused_by_train(tmp_path, coco_root,
                                                  detector_state_dict,
                                                  monkeypatch):
    path = other_model_checkpoint(detector_state_dict,
                                  tmp_path / 'swin_detector.pth')
    steps = []
    monkeypatch.setattr(IterBasedTrainLoop, 'run_iter',
                        lambda loop, batch: steps.append(batch))
    with pytest.raises(SystemExit, match=rf'^{path}: L2ViT: only \d+ of its'):
        TRAIN_TOOL.main([
            DET_CONFIG, '--work-dir',
            str(tmp_path / 'work'), '--cfg-options', *TINY,
            *data_options(coco_root), f'load_from={path}',
            'train_cfg.max_iters=1'
        ])
    assert steps == []


def test_own_checkpoint_still_tests(tmp_path, coco_root, detector_state_dict):
    path = tmp_path / 'detector.pth'
    torch.save(dict(state_dict=detector_state_dict, meta={}), path)
    run_test_tool(path, tmp_path / 'work', coco_root)


def convert(script, *args):
    return subprocess.run(
        [sys.executable,
         osp.join(CONVERTERS, script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300)


def without(state_dict, *prefixes):
    return {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}


DEPTHS = [2, 2, 2, 2]
L2VIT_OFFICIAL = official_state_dict(DIMS, DEPTHS, HEADS)


@pytest.mark.parametrize(
    'weights,listed',
    [(without(L2VIT_OFFICIAL, 'stages.2.',
              'downsample_layers.2.'), r"no block at all in \['stages.2'\]"),
     (without(L2VIT_OFFICIAL, 'stages.1.0.'),
      r"missing weights of \['stages.1.blocks.0 \(\d+ tensors\)'\]"),
     (without(L2VIT_OFFICIAL, 'stages.3.1.attn.qkv.weight',
              'downsample_layers.0.proj.proj.0.'),
      r"missing weights of \['stem \(2 tensors\)', 'stages.3.blocks.1 "
      r"\(1 tensors\)'\]")])
def test_converter_refuses_missing_blocks(tmp_path, weights, listed):
    src, dst = tmp_path / 'official.pth', tmp_path / 'out.pth'
    torch.save(dict(model=weights), src)
    result = convert('l2vit2mmdet.py', src, dst)
    assert result.returncode != 0
    assert result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith(f'{src}: incomplete L2ViT weights')
    assert re.search(listed, result.stderr), result.stderr
    assert not dst.exists()


FLATTEN = {
    'pvt': (lambda: pvt_ref.official_state_dict(False, DIMS, DEPTHS, HEADS),
            ('block3.', 'patch_embed3.', 'pos_embed3')),
    'pvt_v2': (lambda: pvt_ref.official_state_dict(True, DIMS, DEPTHS, HEADS),
               ('block3.', 'patch_embed3.', 'norm3.')),
    'swin': (lambda: swin_ref.official_state_dict(DIMS, DEPTHS, HEADS),
             ('layers.2.', )),
    'cswin': (lambda: cswin_ref.official_state_dict(DIMS, DEPTHS, HEADS),
              ('stage3.', 'merge2.')),
}


@pytest.mark.parametrize('family', sorted(FLATTEN))
def test_flatten_converter_refuses_a_missing_stage(tmp_path, family):
    official, stage_prefixes = FLATTEN[family]
    src, dst = tmp_path / 'official.pth', tmp_path / 'out.pth'
    torch.save(dict(model=without(official(), *stage_prefixes)), src)
    result = convert('flatten2mmdet.py', '--family', family, src, dst)
    assert result.returncode != 0
    assert "no block at all in ['stages.2']" in result.stderr, result.stderr
    assert not dst.exists()
