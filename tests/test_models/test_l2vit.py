# Copyright (c) OpenMMLab. All rights reserved.
"""The L2ViT backbone contract: shapes, sizes, freezing, checkpointing."""
import pytest
import torch
from conftest import SMALL_ARCH
from torch.nn.modules.batchnorm import _BatchNorm

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


def stage_sizes(h, w):
    sizes = [(-(-h // 4), -(-w // 4))]
    for _ in range(3):
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    return sizes


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


@pytest.mark.parametrize('out_indices', [(0, ), (1, ), (2, ), (3, ),
                                         (1, 2, 3), (0, 1, 2, 3), (-1, )])
def test_out_indices(out_indices):
    model = L2ViT(SMALL_ARCH, out_indices=out_indices).eval()
    expected = sorted(i % 4 for i in out_indices)
    assert [n for n, _ in model.named_children() if n.startswith('norm')
            ] == [f'norm{i}' for i in expected]
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 64))
    sizes = stage_sizes(64, 64)
    assert [tuple(o.shape) for o in outs] == [
        (2, SMALL_ARCH['embed_dims'][i], *sizes[i]) for i in expected
    ]


@pytest.mark.parametrize('size', [(32, 32), (225, 301), (511, 511),
                                  (33, 97)])
def test_any_input_size(size):
    model = L2ViT(SMALL_ARCH).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[-2:]) for o in outs] == stage_sizes(*size)
    assert all(torch.isfinite(o).all() for o in outs)


def test_detection_size_tiny():
    model = L2ViT('tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert [tuple(o.shape) for o in outs] == [
        (1, c, h, w) for c, (h, w) in zip([96, 192, 384, 768],
                                          stage_sizes(800, 1333))
    ]
    assert stage_sizes(800, 1333)[0] == (200, 334)


def test_spec_stage_sizes():
    assert stage_sizes(225, 301) == [(57, 76), (29, 38), (15, 19), (8, 10)]


def _requires_grad(module):
    return {p.requires_grad for p in module.parameters()}


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 4])
def test_frozen_stages(frozen_stages):
    model = L2ViT(SMALL_ARCH, frozen_stages=frozen_stages)
    model.train()
    stem_frozen = frozen_stages >= 0
    assert _requires_grad(model.stem) == {not stem_frozen}
    assert model.stem.bn1.training is not stem_frozen
    for i, stage in enumerate(model.stages):
        frozen = i < frozen_stages
        assert _requires_grad(stage) == {not frozen}, i
        assert _requires_grad(getattr(model, f'norm{i}')) == {not frozen}
        assert all(m.training is not frozen for m in stage.modules())
    # Frozen stages stay frozen through train()/eval() round trips.
    model.eval().train()
    assert model.stem.bn1.training is not stem_frozen


def test_frozen_stages_gradients_stop():
    model = L2ViT(SMALL_ARCH, frozen_stages=1)
    model.train()
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    assert model.stem.conv1.weight.grad is None
    assert model.stages[0].blocks[0].attn.qkv.weight.grad is None
    assert model.stages[1].blocks[0].attn.qkv.weight.grad is not None


def test_norm_eval():
    model = L2ViT(SMALL_ARCH, norm_eval=True)
    assert model.train() is model
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    # Stem (2) and one LCM per LGA block (4 stages x 1).
    assert len(bns) == 6
    assert not any(m.training for m in bns)
    assert model.stages[0].blocks[0].norm_attn.training
    model = L2ViT(SMALL_ARCH, norm_eval=False).train()
    assert all(m.training for m in model.modules())


def test_with_cp_same_gradients():
    torch.manual_seed(1)
    plain = L2ViT(SMALL_ARCH, drop_path_rate=0.)
    plain.init_weights()
    checkpointed = L2ViT(SMALL_ARCH, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 70, 90)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        outs = model(x)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum()
            for o in outs).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(
            grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_drop_path_rates():
    model = L2ViT('tiny', drop_path_rate=0.11)
    rates = [
        getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages
        for b in s.blocks
    ]
    expected = torch.linspace(0, 0.11, 12).tolist()
    assert rates == pytest.approx(expected)
    model.train()
    out_a = model(torch.ones(2, 3, 64, 64))[3]
    out_b = model(torch.ones(2, 3, 64, 64))[3]
    assert not torch.equal(out_a, out_b)


def test_init_weights_keeps_loaded_weights(tmp_path):
    source = L2ViT(SMALL_ARCH)
    source.init_weights()
    path = str(tmp_path / 'backbone.pth')
    torch.save(source.state_dict(), path)
    model = L2ViT(
        SMALL_ARCH, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # A second call must not re-initialise anything.
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_default_init():
    model = L2ViT(SMALL_ARCH)
    model.init_weights()
    block = model.stages[1].blocks[1]
    assert block.attn.qkv.bias.abs().sum() == 0
    assert 0.015 < block.attn.qkv.weight.std() < 0.025
    assert torch.equal(block.norm_lcm.weight, torch.ones(64))
    torch.testing.assert_close(block.attn.temperature,
                               torch.full((2, 1, 1), 32**-0.5))
    assert torch.equal(block.lcm.bn.weight, torch.ones(64))


def test_bad_arch():
    with pytest.raises(ValueError, match=r"unknown L2ViT arch 'huge'.*"
                       r"'base', 'base-384', 'small', 'tiny'"):
        L2ViT('huge')
    with pytest.raises(ValueError, match='missing .*window_size'):
        L2ViT(dict(embed_dims=[32] * 4, depths=[1] * 4, num_heads=[1] * 4))
    with pytest.raises(ValueError, match="unknown .*'dims'"):
        L2ViT(dict(SMALL_ARCH, dims=[1, 2, 3, 4]))
    with pytest.raises(ValueError, match='one value per stage'):
        L2ViT(dict(SMALL_ARCH, depths=[2, 2, 2]))
    with pytest.raises(TypeError, match='str or a dict'):
        L2ViT(3)


@pytest.mark.parametrize('out_indices', [(4, ), (0, 5), (-5, ), ()])
def test_bad_out_indices(out_indices):
    with pytest.raises(ValueError, match='out_indices'):
        L2ViT(SMALL_ARCH, out_indices=out_indices)


def test_bad_frozen_stages():
    with pytest.raises(ValueError, match=r'frozen_stages .*\[-1, 4\]'):
        L2ViT(SMALL_ARCH, frozen_stages=5)


def test_bad_inputs():
    model = L2ViT(SMALL_ARCH).eval()
    with pytest.raises(ValueError, match=r'in_channels=3 \(expected\) but '
                       r'the input has 1 channels \(got\)'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='at least 32x32, got 31x64'):
        model(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 64, 64))
    four_channel = L2ViT(SMALL_ARCH, in_channels=4).eval()
    assert len(four_channel(torch.randn(1, 4, 32, 32))) == 4
