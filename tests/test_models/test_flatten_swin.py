# Copyright (c) OpenMMLab. All rights reserved.
"""FLatten-Swin: presets, equivalence with an independent model of the
official one, and official checkpoints (the backbone contract of every type
is tested in ``test_backbone_contract.py``).

Official-format state dicts are generated from the official key table
(``flatten_swin_reference.official_state_dict``) and run through a
functional model that reads the official keys directly.
"""
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_ARCHS, stage_sizes
from flatten_swin_reference import (ARCHS, bias_index, official_shift_mask,
                                    official_state_dict, reference_forward)

from mmplugin_l2vit import FLattenSwin
from mmplugin_l2vit.models.backbones.flatten_swin import SwinFocusedAttention
from mmplugin_l2vit.models.converters import (FLATTEN_SWIN_CONVERTER,
                                              CheckpointFormatError)
from mmplugin_l2vit.models.layers.window_attention import (
    ShiftedWindowAttention, relative_position_index, shifted_window_mask)

# Spec 2.3: widths, depths, heads, softmax window, training size, and the
# parameters of the official model with its 1000-class head, counted on
# the official code (the spec rounds them to 29.19M, 50.51M, 88.97M and
# 91.43M).
PRESETS = {
    'tiny': ([96, 192, 384, 768], [2, 2, 6, 2], [3, 6, 12, 24], 7, 224,
             29192384),
    'small': ([96, 192, 384, 768], [2, 2, 18, 2], [3, 6, 12, 24], 7, 224,
              50510288),
    'base': ([128, 256, 512, 1024], [2, 2, 18, 2], [4, 8, 16, 32], 7, 224,
             88972488),
    'base-384': ([128, 256, 512, 1024], [2, 2, 18, 2], [4, 8, 16, 32], 12,
                 384, 91433928),
}
# Two blocks a stage: a shifted-window block in stages 3 and 4.
SMALL_SWIN = dict(SMALL_ARCHS['FLattenSwin'], depths=[2, 2, 2, 2])
SMALL = dict(
    dims=SMALL_SWIN['embed_dims'],
    depths=SMALL_SWIN['depths'],
    heads=SMALL_SWIN['num_heads'])


def reduced(arch, depths=(1, 1, 2, 2)):
    """A preset with fewer blocks (a shifted one in stages 3 and 4)."""
    return dict(FLattenSwin._resolve_arch(arch), depths=list(depths))


def small_official(window=7, img=224, **kwargs):
    return official_state_dict(SMALL['dims'], SMALL['depths'],
                               SMALL['heads'], window, img, **kwargs)


def small_arch(window=7, img=224):
    return dict(SMALL_SWIN, window_size=window, pretrain_img_size=img)


def build_converted(arch, sd, out_indices=(0, 1, 2, 3), **kwargs):
    model = FLattenSwin(arch, out_indices=out_indices, **kwargs)
    missing, unexpected = model.load_state_dict(
        FLATTEN_SWIN_CONVERTER.convert(sd), strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(
        f'norm{i}.{p}' for i in out_indices if i != 3
        for p in ('weight', 'bias'))
    return model.eval()


def stage_tokens(model, x):
    """The stage outputs before the per-output norms."""
    feats = []
    hooks = [
        stage.register_forward_hook(lambda m, i, o: feats.append(o[0]))
        for stage in model.stages
    ]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return feats


def to64(sd):
    return {k: v.double() if v.is_floating_point() else v
            for k, v in sd.items()}


@pytest.mark.parametrize('arch', list(PRESETS))
def test_preset_settings_and_parameter_count(arch):
    dims, depths, heads, window, img, official_params = PRESETS[arch]
    settings = FLattenSwin._resolve_arch(arch)
    assert settings == dict(embed_dims=dims, depths=depths, num_heads=heads,
                            window_size=window, pretrain_img_size=img,
                            mlp_ratio=4.)
    model = FLattenSwin(arch, out_indices=(3, ))
    head = dims[-1] * 1000 + 1000
    assert sum(p.numel() for p in model.parameters()) + head == \
        official_params
    stages = model.stages
    for i in (0, 1):
        attn = stages[i].blocks[1].attn
        assert isinstance(attn, SwinFocusedAttention)
        side = img // 4 >> i
        assert attn.pos_grid == (side, side)
        assert attn.positional_encoding.shape == (1, side * side, dims[i])
        assert attn.dwc.weight.shape == (32, 1, 5, 5)
    for i in (2, 3):
        attns = [block.attn for block in stages[i].blocks]
        assert all(isinstance(a, ShiftedWindowAttention) for a in attns)
        assert [a.shift_size for a in attns] == [0, window // 2
                                                 ] * (depths[i] // 2)
        assert attns[0].relative_position_bias_table.shape == (
            (2 * window - 1)**2, heads[i])


@pytest.mark.parametrize('size', [(225, 301), (512, 512), (800, 1333)])
@pytest.mark.parametrize('arch', list(PRESETS))
def test_any_input_size(arch, size):
    """Full depth for tiny, fewer blocks for the big presets."""
    model = FLattenSwin(arch if arch == 'tiny' else reduced(arch)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    dims = PRESETS[arch][0]
    assert [tuple(o.shape) for o in outs] == [
        (1, c, h, w) for c, (h, w) in zip(dims, stage_sizes(*size))
    ]
    assert all(torch.isfinite(o).all() for o in outs)


# 224: the training size (stage 3 shifts, stage 4 is one unshifted window);
# 160x224: stage 4 (5x7) is one non-square window; 224x320: stage 4 (7x10)
# is padded and shifted as in mmdet; the others need every padding.
@pytest.mark.parametrize('size', [(224, 224), (160, 224), (224, 320),
                                  (225, 301), (97, 131)])
def test_matches_reference_float64(size):
    sd = small_official()
    model = build_converted(small_arch(), sd).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    feats = stage_tokens(model, x)
    with torch.no_grad():
        ref, _ = reference_forward(to64(sd), x, SMALL['depths'],
                                   SMALL['heads'])
    for i, (ours, (theirs, hw)) in enumerate(zip(feats, ref)):
        assert hw == stage_sizes(*size)[i]
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10,
                                   msg=f'stage {i}')


@pytest.mark.parametrize('size', [(384, 384), (200, 264)])
def test_matches_reference_window12_float64(size):
    """The base-384 settings: window 12, encodings at 96x96 and 48x48."""
    sd = small_official(window=12, img=384)
    model = build_converted(small_arch(12, 384), sd).double()
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    feats = stage_tokens(model, x)
    with torch.no_grad():
        ref, _ = reference_forward(to64(sd), x, SMALL['depths'],
                                   SMALL['heads'], window=12, img=384)
    for i, (ours, (theirs, _)) in enumerate(zip(feats, ref)):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10,
                                   msg=f'stage {i}')


def test_matches_reference_float32_tiny():
    a = ARCHS['tiny']
    sd = official_state_dict(a['dims'], a['depths'], a['heads'])
    model = build_converted('tiny', sd)
    x = torch.randn(1, 3, 224, 224)
    feats = stage_tokens(model, x)
    with torch.no_grad():
        ref, _ = reference_forward(sd, x, a['depths'], a['heads'])
    for i, (ours, (theirs, _)) in enumerate(zip(feats, ref)):
        assert (ours - theirs).abs().max() < 1e-4, i


def test_logits_through_norm3_and_head():
    sd = small_official(num_classes=7)
    model = build_converted(small_arch(), sd, out_indices=(3, ))
    converted = FLATTEN_SWIN_CONVERTER.convert(sd, keep_head=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feat = model(x)[0]
        logits = F.linear(feat.mean((2, 3)), converted['head.fc.weight'],
                          converted['head.fc.bias'])
        _, ref_logits = reference_forward(sd, x, SMALL['depths'],
                                          SMALL['heads'])
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_positional_encoding_resize_mode():
    sd = small_official()
    bilinear = build_converted(small_arch(), sd)
    bicubic = build_converted(small_arch(), sd, pos_resize_mode='bicubic')
    # The native grid uses the encoding as is, whatever the mode.
    x = torch.randn(1, 3, 224, 224)
    for ours, theirs in zip(stage_tokens(bilinear, x),
                            stage_tokens(bicubic, x)):
        assert torch.equal(ours, theirs)
    x = torch.randn(1, 3, 200, 248)
    first = stage_tokens(bilinear, x)[0]
    assert not torch.allclose(first, stage_tokens(bicubic, x)[0])
    with pytest.raises(ValueError, match='pos_resize_mode'):
        FLattenSwin(SMALL_SWIN, pos_resize_mode='nearest')


def test_shift_masks_and_bias_index_rebuilt_as_official():
    """The buffers the converter drops are rebuilt identically."""
    for window, res in ((7, 14), (12, 24), (7, 28)):
        assert torch.equal(relative_position_index(window),
                           bias_index(window))
        assert torch.equal(
            shifted_window_mask((res, res), window, window // 2),
            official_shift_mask(res, window))


def test_map_within_one_window_is_not_shifted():
    shifted = ShiftedWindowAttention(32, 2, 7, shift_size=3)
    plain = ShiftedWindowAttention(32, 2, 7)
    plain.load_state_dict(shifted.state_dict())
    for hw in ((7, 7), (5, 7), (3, 2)):
        x = torch.randn(2, hw[0] * hw[1], 32)
        assert torch.equal(shifted(x, hw), plain(x, hw)), hw
    x = torch.randn(2, 7 * 8, 32)
    assert not torch.allclose(shifted(x, (7, 8)), plain(x, (7, 8)))


def official_container(sd):
    """An official release file: ``model`` and training state (the real
    ``config`` is a yacs CfgNode; a plain dict stands in for it here)."""
    return dict(
        model=sd,
        optimizer=dict(state={}, param_groups=[dict(lr=1e-3)]),
        lr_scheduler=dict(last_epoch=299),
        max_accuracy=82.106,
        epoch=299,
        config=dict(MODEL=dict(TYPE='flatten_swin')))


def test_pretrained_init_loads_official_release_file(tmp_path):
    sd = small_official()
    path = str(tmp_path / 'flatten_swin_tiny.pth')
    torch.save(official_container(sd), path)
    model = FLattenSwin(
        small_arch(), init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    expected = build_converted(small_arch(), sd).state_dict()
    for key, value in expected.items():
        if not key.startswith(('norm0', 'norm1', 'norm2')):
            assert torch.equal(model.state_dict()[key], value), key


def test_converter_round_trip_tiny():
    a = ARCHS['tiny']
    sd = official_state_dict(a['dims'], a['depths'], a['heads'])
    assert len(sd) == 196  # spec 3.2: 185 parameters and 11 buffers
    converted = FLATTEN_SWIN_CONVERTER.convert(sd)
    # Head and buffers (8 bias indices, 3 shift masks) dropped.
    assert len(converted) == 196 - 2 - 8 - 3
    assert 'stages.1.downsample.reduction.weight' in converted
    assert torch.equal(converted['norm3.weight'], sd['norm.weight'])
    with_head = FLATTEN_SWIN_CONVERTER.convert(sd, keep_head=True)
    assert set(with_head) - set(converted) == {
        'head.fc.weight', 'head.fc.bias'
    }
    model = FLattenSwin('tiny', out_indices=(3, ))
    model.load_state_dict(converted)
    assert model.state_dict().keys() == converted.keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, converted[key]), key
    # A converted checkpoint loads as it is.
    FLattenSwin('tiny', out_indices=(3, )).load_state_dict(model.state_dict())


WRONG_FAMILIES = {
    'FLatten-PVT': {
        'pos_embed1': torch.zeros(1, 3136, 64),
        'patch_embed1.proj.weight': torch.zeros(64, 3, 4, 4),
        'block1.0.attn.positional_encoding': torch.zeros(1, 3136, 64),
    },
    'FLatten-CSwin': {
        'stage1_conv_embed.0.weight': torch.zeros(64, 3, 7, 7),
        'stage1.0.attns.0.positional_encoding': torch.zeros(1, 3136, 64),
    },
    'Swin': {
        'patch_embed.proj.weight': torch.zeros(96, 3, 4, 4),
        'layers.0.blocks.0.attn.relative_position_bias_table':
        torch.zeros(169, 3),
    },
}


@pytest.mark.parametrize('family', list(WRONG_FAMILIES))
def test_wrong_family_refused(family):
    sd = WRONG_FAMILIES[family]
    with pytest.raises(CheckpointFormatError,
                       match='not an FLatten-Swin one'):
        FLattenSwin(SMALL_SWIN).load_state_dict(sd, strict=False)
    with pytest.raises(CheckpointFormatError,
                       match='not an official FLatten-Swin checkpoint'):
        FLattenSwin(SMALL_SWIN).load_state_dict(
            official_container(sd), strict=False)


def test_converter_rejects_unknown_official_keys():
    sd = small_official()
    sd['layers.3.downsample.norm.weight'] = torch.zeros(1)
    with pytest.raises(CheckpointFormatError,
                       match=r"\['layers.3.downsample.norm.weight'\]"):
        FLATTEN_SWIN_CONVERTER.convert(sd)


def test_bias_table_and_reduction_init():
    model = FLattenSwin(SMALL_SWIN)
    model.init_weights()
    for stage in model.stages[2:]:
        for block in stage.blocks:
            table = block.attn.relative_position_bias_table
            assert 0.015 < table.std() < 0.025
    assert model.stages[1].downsample.reduction.bias is None


def test_bad_shift_size():
    with pytest.raises(ValueError, match='shift_size'):
        ShiftedWindowAttention(32, 1, 7, shift_size=7)
