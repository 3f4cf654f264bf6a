# Copyright (c) OpenMMLab. All rights reserved.
"""The numbers behind the receptive-field pictures: gradients vanish outside
the theoretical receptive field of a purely local block and reach its edge,
and the reported areas are those of the gradient mass."""
import importlib.util
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from conftest import SMALL_ARCH

from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.analysis import (centre_gradients,
                                     effective_receptive_field, log_heat_map,
                                     mass_area, mass_share, summary_line)
from mmplugin_l2vit.models.layers import tokens_to_nchw

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def stem_and_window_block(model):
    """L²ViT's stem and first block (CPE, 7x7 window attention, CPE, MLP):
    a purely local network."""

    def forward(image):
        x, hw = model.stem(image)
        return [tokens_to_nchw(model.stages[0].blocks[0](x, hw), hw)]

    return forward


def test_gradients_vanish_outside_the_local_receptive_field():
    model = L2ViT(arch=SMALL_ARCH).eval()
    # 64 x 64 pixels -> 16 x 16 tokens; the centre token (8, 8) sits in
    # the window of token rows and columns 7..13, and so do its 3x3
    # neighbours, which the second CPE reads. The first CPE widens that to
    # tokens 6..14, and the stem's two 3x3 stride-2 convs see pixels
    # 4t - 3 .. 4t + 3 for token t: pixels 21..59.
    gradient, = effective_receptive_field(
        stem_and_window_block(model),
        [torch.randn(1, 3, 64, 64) for _ in range(2)])
    inside = torch.zeros(64, 64, dtype=torch.bool)
    inside[21:60, 21:60] = True
    assert gradient[~inside].abs().max() == 0
    # It reaches every edge of that square: the window attention, not only
    # the convolutions around the centre (pixels 21..43), carries it there.
    for edge in (gradient[21], gradient[59], gradient[:, 21],
                 gradient[:, 59]):
        assert edge.max() > 1e-6 * gradient.max()
    assert gradient[44:60, 44:60].sum() > 1e-3 * gradient.sum()


def test_global_attention_reaches_the_whole_image():
    model = L2ViT(arch=SMALL_ARCH).eval()
    maps = centre_gradients(model, torch.randn(1, 3, 32, 32))
    assert [tuple(m.shape) for m in maps] == [(32, 32)] * 4
    # The first LGA block already attends over the whole stage.
    assert (maps[0] > 0).float().mean() > 0.9


def test_average_over_images():
    model = stem_and_window_block(L2ViT(arch=SMALL_ARCH).eval())
    images = [torch.randn(1, 3, 32, 32) for _ in range(3)]
    expected = sum(centre_gradients(model, image)[0] for image in images) / 3
    torch.testing.assert_close(
        effective_receptive_field(model, images)[0], expected)
    with pytest.raises(ValueError, match='at least one image'):
        effective_receptive_field(model, [])


def test_mass_area_and_heat_map():
    gradient = torch.zeros(100, 100)
    gradient[:10, :10] = 1.
    gradient[50, 50] = 100.
    # The peak holds half of the 200 units; 90% needs 80 more pixels.
    assert mass_area(gradient, 0.5) == 1
    assert mass_area(gradient, 0.9) == 81
    assert mass_share(gradient, 0.9) == pytest.approx(0.0081)
    heat = log_heat_map(gradient)
    assert heat.max() == 0
    assert heat[0, 0] == pytest.approx(-2)
    assert heat.min() == pytest.approx(-4)
    line = summary_line('toy', [gradient])
    assert line == ('toy: stage 0: 50% in 1 px (0.01%), '
                    '90% in 81 px (0.81%)')


def test_cli_compares_with_mmdet_swin(tmp_path, capsys):
    path = osp.join(REPO, 'tools', 'analysis_tools',
                    'effective_receptive_field.py')
    spec = importlib.util.spec_from_file_location('erf_tool', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    images = tmp_path / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ('a.png', 'b.tif'):
        cv2.imwrite(
            str(images / name), rng.integers(0, 255, (48, 40, 3), np.uint8))
    # Listed first, and skipped: OpenCV cannot read it.
    (images / 'README.txt').write_text('not an image')
    out = tmp_path / 'erf.png'
    tool.main([
        'FLattenPVTv2:b0', 'mmdet.SwinTransformer:tiny', '--img',
        str(images), '--max-images', '1', '--shape', '64', '--out',
        str(out)
    ])
    assert cv2.imread(str(out)) is not None
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('FLattenPVTv2:b0: stage 0: 50% in ')
    assert any(
        line.startswith('mmdet.SwinTransformer:tiny: ') for line in lines)
    with pytest.raises(SystemExit):
        tool.main(['L2ViT', '--img', str(images / 'README.txt'), '--out',
                   str(out)])
    assert 'cannot read' in capsys.readouterr().err
