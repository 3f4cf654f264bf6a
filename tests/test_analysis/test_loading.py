# Copyright (c) OpenMMLab. All rights reserved.
"""Every tool names a backbone and an input shape the same way, through
``mmplugin_l2vit.analysis.loading``."""
import argparse

import cv2
import numpy as np
import pytest
import torch
from conftest import SMALL_ARCH

from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.analysis import (SHORT_NAMES, add_shape_argument,
                                     backbone_config, build_backbone,
                                     image_normalisation, image_to_tensor,
                                     parse_shape, parse_shapes, read_image)

SMALL_CONFIG = f'''
model = dict(
    data_preprocessor=dict(mean=[1., 2., 3.], std=[4., 5., 6.],
                           bgr_to_rgb=False),
    backbone=dict(type='mmplugin_l2vit.L2ViT', arch={SMALL_ARCH!r},
                  init_cfg=dict(type='Pretrained', checkpoint='nowhere')))
'''


@pytest.mark.parametrize('spec,expected', [
    ('L2ViT', dict(type='L2ViT')),
    ('FLattenSwin:small', dict(type='FLattenSwin', arch='small')),
    ('l2vit-t', dict(type='L2ViT', arch='tiny')),
    ('mmdet.SwinTransformer', dict(type='mmdet.SwinTransformer')),
    ('pvt-t',
     dict(type='mmdet.PyramidVisionTransformer', num_layers=[2, 2, 2, 2])),
])
def test_types_archs_and_short_names(spec, expected):
    assert backbone_config(spec) == expected


def test_every_short_name_is_a_type_and_arch():
    for name, spec in SHORT_NAMES.items():
        assert ':' in spec
        assert backbone_config(name) == backbone_config(spec)


@pytest.mark.parametrize('spec', ['FLattenPVTv2:b0', 'pvt-t'])
def test_types_build_whatever_default_scope_is_left_set(spec):
    # A Runner leaves mmengine's own scope as the default, where our bare
    # type names are not registered.
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmengine'):
        backbone = build_backbone(spec)
    expected = backbone_config(spec)['type'].rpartition('.')[2]
    assert type(backbone).__name__ == expected


@pytest.mark.parametrize('spec,error,message', [
    ('NoSuchNet:tiny', ValueError, "'NoSuchNet' is not a registered"),
    ('mmdet.SwinTransformer:huge', ValueError, 'archs known here: tiny'),
    ('nowhere/model.py', FileNotFoundError, 'does not exist'),
])
def test_bad_names_are_refused(spec, error, message):
    with pytest.raises(error, match=message):
        backbone_config(spec)


def test_config_without_backbone_is_refused(tmp_path):
    config = tmp_path / 'head_only.py'
    config.write_text('model = dict(type=\'ImageClassifier\')\n')
    with pytest.raises(ValueError, match='has no model.backbone'):
        backbone_config(str(config))


def test_config_gives_backbone_normalisation_and_loads_checkpoints(tmp_path):
    config = tmp_path / 'small.py'
    config.write_text(SMALL_CONFIG)
    # No download: the config's init_cfg is dropped.
    assert 'init_cfg' not in backbone_config(str(config))
    assert image_normalisation(str(config)) == dict(
        mean=[1., 2., 3.], std=[4., 5., 6.], to_rgb=False)
    assert image_normalisation('L2ViT')['to_rgb'] is True
    trained = L2ViT(arch=SMALL_ARCH)
    for parameter in trained.parameters():
        torch.nn.init.normal_(parameter)
    checkpoint = tmp_path / 'model.pth'
    torch.save(
        dict(
            state_dict={
                f'backbone.{key}': value
                for key, value in trained.state_dict().items()
            }), checkpoint)
    backbone = build_backbone(
        str(config), str(checkpoint), all_outputs=True, with_cp=True)
    assert not backbone.training and backbone.with_cp
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(backbone.state_dict()[key], value)
    assert len(backbone(torch.randn(1, 3, 32, 32))) == 4


def test_images_are_read_resized_and_normalised(tmp_path):
    path = tmp_path / 'image.png'
    image = np.zeros((6, 4, 3), np.uint8)
    image[..., 0] = 10  # blue
    cv2.imwrite(str(path), image)
    read = read_image(str(path))
    np.testing.assert_array_equal(read, image)
    x = image_to_tensor(read, (3, 2), mean=(0., 0., 5.), std=(1., 1., 5.))
    assert x.shape == (1, 3, 3, 2)
    # RGB order: blue is the last channel.
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([0., 0., 1.]))
    with pytest.raises(ValueError, match='cannot read'):
        read_image(str(tmp_path / 'missing.png'))


def test_one_shape_flag(capsys):
    parser = argparse.ArgumentParser()
    add_shape_argument(parser, 'one')
    assert parse_shape(parser, parser.parse_args([]).shape) is None
    assert parse_shape(parser,
                       parser.parse_args(['--shape', '5']).shape) == (5, 5)
    assert parse_shape(parser,
                       parser.parse_args(['--shape', '5',
                                          '7']).shape) == (5, 7)
    with pytest.raises(SystemExit):
        parse_shape(parser,
                    parser.parse_args(['--shape', '1', '2', '3']).shape)
    assert 'H (square) or H W, got [1, 2, 3]' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(['--shape', '0'])
    assert 'positive sizes, got 0' in capsys.readouterr().err
    several = argparse.ArgumentParser()
    add_shape_argument(several, 'several', repeatable=True)
    values = several.parse_args(['--shape', '5', '--shape', '6', '8']).shape
    assert parse_shapes(several, values) == [(5, 5), (6, 8)]
