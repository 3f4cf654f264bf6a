# Copyright (c) OpenMMLab. All rights reserved.
"""L2ViT's arch presets, block layout and initialisation (the backbone
contract of every type is tested in ``test_backbone_contract.py``)."""
import pytest
import torch
from conftest import SMALL_ARCH, stage_sizes

from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.models.backbones.l2vit import (LinearGlobalBlock,
                                                   LocalWindowBlock)

EXPECTED_ARCHS = {
    'tiny': ([96, 192, 384, 768], [2, 2, 6, 2], 7),
    'small': ([96, 192, 384, 768], [2, 2, 18, 2], 7),
    'base': ([128, 256, 512, 1024], [2, 2, 18, 2], 7),
    'base-384': ([128, 256, 512, 1024], [2, 2, 18, 2], 12),
}
# Parameter count of the official L2ViT-T without its 1000-class head and
# final norm (spec: 28,596,781 in all) plus the four output norms.
TINY_BACKBONE_PARAMS = 28596781 - (768 * 1000 + 1000) - 2 * 768 + 2 * (
    96 + 192 + 384 + 768)


@pytest.mark.parametrize('arch', list(EXPECTED_ARCHS))
def test_arch_presets(arch):
    dims, depths, window = EXPECTED_ARCHS[arch]
    # Shallow copies of the big archs keep the test fast; the preset itself
    # is checked through the resolved settings.
    settings = L2ViT._resolve_arch(arch)
    assert settings['embed_dims'] == dims
    assert settings['depths'] == depths
    assert settings['window_size'] == window
    model = L2ViT(
        arch=dict(settings, depths=[2, 2, 2, 2]) if arch != 'tiny' else arch)
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [
        (1, c, h, w) for c, (h, w) in zip(dims, stage_sizes(64, 96))
    ]
    blocks = model.stages[0].blocks
    assert isinstance(blocks[0], LocalWindowBlock)
    assert isinstance(blocks[1], LinearGlobalBlock)
    assert blocks[0].attn.window_size == window


def test_tiny_block_layout_and_parameter_count():
    model = L2ViT('tiny')
    kinds = [[type(b).__name__ for b in s.blocks] for s in model.stages]
    assert kinds[2] == ['LocalWindowBlock', 'LinearGlobalBlock'] * 3
    assert sum(p.numel() for p in model.parameters()) == TINY_BACKBONE_PARAMS


def test_detection_size_tiny():
    model = L2ViT('tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert [tuple(o.shape) for o in outs] == [
        (1, c, h, w) for c, (h, w) in zip([96, 192, 384, 768],
                                          stage_sizes(800, 1333))
    ]
    assert stage_sizes(800, 1333)[0] == (200, 334)


def test_temperature_init():
    """One temperature per head, head_dim ** -0.5 as the official one."""
    model = L2ViT(SMALL_ARCH)
    model.init_weights()
    for heads, stage in zip(SMALL_ARCH['num_heads'], model.stages):
        torch.testing.assert_close(stage.blocks[1].attn.temperature,
                                   torch.full((heads, 1, 1), 32**-0.5))
