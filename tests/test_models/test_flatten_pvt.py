# Copyright (c) OpenMMLab. All rights reserved.
"""FLattenPVT and FLattenPVTv2: presets, equivalence with the official
models (through an independent functional reference that reads
official-format weights) and checkpoint conversion (the backbone contract
of every type is tested in ``test_backbone_contract.py``)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import SMALL_ARCHS, stage_sizes
from flatten_pvt_reference import (HEADS, PVT_ARCHS, PVT_V2_ARCHS,
                                   official_shapes, official_state_dict,
                                   reference_forward)

from mmplugin_l2vit import FLattenPVT, FLattenPVTv2
from mmplugin_l2vit.models.backbones.flatten_pvt import ConvMlp
from mmplugin_l2vit.models.converters import (FLATTEN_PVT_CONVERTER,
                                              FLATTEN_PVT_V2_CONVERTER,
                                              CheckpointFormatError)

# Head dims 32 (as in PVTv2-b0) keep the float64 tests fast.
SMALL = dict(SMALL_ARCHS['FLattenPVT'], depths=[1, 2, 1, 1])
FAMILIES = {
    'v1': (FLattenPVT, FLATTEN_PVT_CONVERTER, False),
    'v2': (FLattenPVTv2, FLATTEN_PVT_V2_CONVERTER, True),
}


def small_state_dict(v2, num_classes=10, seed=0):
    return official_state_dict(
        v2,
        SMALL['embed_dims'],
        SMALL['depths'],
        SMALL['num_heads'],
        num_classes=num_classes,
        seed=seed)


def build_converted(family, sd, arch=SMALL, **kwargs):
    """A model loaded strictly with the converted official weights; PVT v1
    without output norms, so its outputs are the official stage tokens."""
    cls, converter, _ = FAMILIES[family]
    if family == 'v1':
        kwargs.setdefault('norm_outputs', False)
    model = cls(arch, **kwargs)
    model.load_state_dict(converter.convert(sd))
    return model.eval()


def to64(sd):
    return {k: v.double() for k, v in sd.items()}


def flat(out):
    return out.flatten(2).transpose(1, 2)


def shallow(cls, arch):
    return dict(cls._resolve_arch(arch), depths=[1, 1, 1, 1])


def floor_sizes(h, w):
    sizes = [(h // 4, w // 4)]
    for _ in range(3):
        sizes.append((sizes[-1][0] // 2, sizes[-1][1] // 2))
    return sizes


# --- Presets ----------------------------------------------------------------


@pytest.mark.parametrize('arch', list(PVT_ARCHS))
def test_pvt_presets_and_parameter_counts(arch):
    depths, official_params, spec_millions = PVT_ARCHS[arch]
    settings = FLattenPVT._resolve_arch(arch)
    assert settings == dict(
        embed_dims=[64, 128, 320, 512],
        depths=depths,
        num_heads=HEADS,
        mlp_ratios=[8, 8, 4, 4])
    shapes = official_shapes(False, settings['embed_dims'], depths, HEADS)
    official = sum(torch.Size(s).numel() for s in shapes.values())
    assert official == official_params
    assert official / 1e6 == pytest.approx(spec_millions, abs=0.006)
    model = FLattenPVT(arch)
    # No 1000-class head, no unused final norm, four new output norms.
    expected = official - (512 * 1000 +
                           1000) - 2 * 512 + 2 * (64 + 128 + 320 + 512)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert [len(s.blocks) for s in model.stages] == depths
    assert model.stem.proj.kernel_size == (4, 4)
    assert model.stages[1].downsample.proj.stride == (2, 2)
    attn = model.stages[3].blocks[0].attn
    assert (attn.num_heads, attn.head_dims) == (8, 64)
    assert attn.positional_encoding.shape == (1, 49, 512)
    assert model.stages[0].blocks[0].mlp.fc1.out_features == 512


@pytest.mark.parametrize('arch', list(PVT_V2_ARCHS))
def test_pvt_v2_presets_and_parameter_counts(arch):
    dims, depths, official_params, spec_millions = PVT_V2_ARCHS[arch]
    settings = FLattenPVTv2._resolve_arch(arch)
    assert settings == dict(
        embed_dims=dims,
        depths=depths,
        num_heads=HEADS,
        mlp_ratios=[8, 8, 4, 4])
    shapes = official_shapes(True, dims, depths, HEADS)
    official = sum(torch.Size(s).numel() for s in shapes.values())
    assert official == official_params
    assert official / 1e6 == pytest.approx(spec_millions, abs=0.006)
    model = FLattenPVTv2(arch)
    # The official model less its 1000-class head: norm1..4 are kept.
    expected = official - (dims[3] * 1000 + 1000)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.stem.proj.kernel_size == (7, 7)
    assert model.stem.proj.padding == (3, 3)
    assert isinstance(model.stages[0].blocks[0].mlp, ConvMlp)
    assert model.norm3.eps == 1e-6


# --- Equivalence with the official model ------------------------------------


@pytest.mark.parametrize('family', ['v1', 'v2'])
@pytest.mark.parametrize('size', [(64, 96), (45, 77)])
def test_matches_reference_float64(family, size):
    """Tight agreement where the position tables are resized. (float64
    depthwise convs are slow on CPU, so the 224x224 grids, where the tables
    are used as they are, are checked in float32 below.)"""
    v2 = FAMILIES[family][2]
    sd = small_state_dict(v2)
    model = build_converted(family, sd).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        outs = model(x)
        taps, _ = reference_forward(
            to64(sd), x, v2, SMALL['depths'], SMALL['num_heads'])
    for i, (out, (tap, hw)) in enumerate(zip(outs, taps)):
        assert tuple(out.shape[-2:]) == hw
        torch.testing.assert_close(
            flat(out), tap, rtol=1e-10, atol=1e-10, msg=f'stage {i}')


@pytest.mark.parametrize('family,arch', [('v1', 'tiny'), ('v2', 'b0')])
def test_matches_reference_float32_real_archs_at_224(family, arch):
    cls, _, v2 = FAMILIES[family]
    settings = cls._resolve_arch(arch)
    sd = official_state_dict(v2, settings['embed_dims'], settings['depths'],
                             HEADS)
    model = build_converted(family, sd, arch=arch)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs = model(x)
        taps, _ = reference_forward(sd, x, v2, settings['depths'], HEADS)
    for out, (tap, _) in zip(outs, taps):
        assert (flat(out) - tap).abs().max() < 1e-4


def test_pvt_stage_tokens_before_output_norms():
    """With the default output norms, output i is a fresh LayerNorm of the
    same official stage tokens; the unused official ``norm`` is not it."""
    sd = small_state_dict(False)
    plain = build_converted('v1', sd)
    normed = FLattenPVT(SMALL).eval()
    missing, _ = normed.load_state_dict(
        FLATTEN_PVT_CONVERTER.convert(sd), strict=False)
    assert sorted(missing) == sorted(f'norm{i}.{p}' for i in range(4)
                                     for p in ('weight', 'bias'))
    assert isinstance(normed.norm3, nn.LayerNorm) and normed.norm3.eps == 1e-6
    with torch.no_grad():
        normed.norm3.weight.normal_()
        x = torch.randn(1, 3, 64, 64)
        tokens = flat(plain(x)[3])
        expected = F.layer_norm(tokens, (256, ), normed.norm3.weight,
                                normed.norm3.bias, 1e-6)
        torch.testing.assert_close(flat(normed(x)[3]), expected)
    assert not torch.equal(normed.norm3.weight, sd['norm.weight'])


@pytest.mark.parametrize('family', ['v1', 'v2'])
def test_logits_through_last_output_and_head(family):
    """Official logits: PVT v1 pools the unnormalised last stage, PVTv2 its
    ``norm4`` output (our ``norm3``)."""
    cls, converter, v2 = FAMILIES[family]
    sd = small_state_dict(v2, num_classes=7)
    model = build_converted(family, sd, out_indices=(3, ))
    head = converter.convert(sd, keep_head=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feat = model(x)[0]
        logits = F.linear(
            feat.mean((2, 3)), head['head.fc.weight'], head['head.fc.bias'])
        _, ref_logits = reference_forward(sd, x, v2, SMALL['depths'],
                                          SMALL['num_heads'])
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


# --- Any input size ---------------------------------------------------------

ALL_ARCHS = [(FLattenPVT, a) for a in PVT_ARCHS] + [(FLattenPVTv2, a)
                                                    for a in PVT_V2_ARCHS]


def run_shallow(cls, arch, size):
    """Outputs of ``arch`` with one block per stage (the grid sizes do not
    depend on the depths)."""
    model = cls(shallow(cls, arch)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    dims = cls._resolve_arch(arch)['embed_dims']
    assert [tuple(o.shape) for o in outs
            ] == [(1, c, *hw) for c, hw in zip(dims, stage_sizes(*size))]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('cls,arch', ALL_ARCHS)
def test_any_input_size(cls, arch):
    run_shallow(cls, arch, (225, 301))


# With one block per stage, PVT small/medium/large are the same network as
# tiny, and PVTv2-b2..b4 the same as b1.
@pytest.mark.parametrize('cls,arch',
                         [(FLattenPVT, 'tiny'), (FLattenPVTv2, 'b0'),
                          (FLattenPVTv2, 'b1')])
@pytest.mark.parametrize('size', [(512, 512), (800, 1333)])
def test_segmentation_and_detection_sizes(cls, arch, size):
    run_shallow(cls, arch, size)


def test_spec_floor_stage_sizes():
    assert floor_sizes(225, 301) == [(56, 75), (28, 37), (14, 18), (7, 9)]


def test_pvt_padding_modes():
    sd = small_state_dict(False)
    padded = build_converted('v1', sd)
    floored = build_converted('v1', sd, pad_to_patch=False)
    # Multiples of 32 need no padding.
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(padded(x), floored(x)):
            assert torch.equal(a, b)
        x = torch.randn(1, 3, 66, 98, dtype=torch.float64)
        outs = floored.double()(x)
        taps, _ = reference_forward(
            to64(sd), x, False, SMALL['depths'], SMALL['num_heads'], pad=False)
    assert [tuple(o.shape[-2:]) for o in outs] == floor_sizes(66, 98)
    assert floor_sizes(66, 98) != stage_sizes(66, 98)
    for out, (tap, _) in zip(outs, taps):
        torch.testing.assert_close(flat(out), tap, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('family', ['v1', 'v2'])
def test_position_tables_resized_to_live_grid(family):
    v2 = FAMILIES[family][2]
    sd = small_state_dict(v2)
    bilinear = build_converted(family, sd)
    bicubic = build_converted(family, sd, pos_resize_mode='bicubic')
    with torch.no_grad():
        # Unchanged at the native grid: the mode makes no difference.
        x = torch.randn(1, 3, 224, 224)
        assert all(torch.equal(a, b) for a, b in zip(bilinear(x), bicubic(x)))
        x = torch.randn(1, 3, 64, 96, dtype=torch.float64)
        bilinear.double()
        bicubic.double()
        assert not torch.allclose(bilinear(x)[0], bicubic(x)[0])
        outs = bicubic(x)
        taps, _ = reference_forward(
            to64(sd),
            x,
            v2,
            SMALL['depths'],
            SMALL['num_heads'],
            mode='bicubic')
    for out, (tap, _) in zip(outs, taps):
        torch.testing.assert_close(flat(out), tap, rtol=1e-10, atol=1e-10)
    # The stored tables keep their 224x224 grids.
    attn = bicubic.stages[2].blocks[0].attn
    assert attn.positional_encoding.shape == (1, 196, 128)


# --- Checkpoints ------------------------------------------------------------


def test_official_key_tables():
    tiny = official_shapes(False, [64, 128, 320, 512], [2, 2, 2, 2], HEADS)
    b0 = official_shapes(True, [32, 64, 160, 256], [2, 2, 2, 2], HEADS)
    assert (len(tiny), len(b0)) == (168, 186)
    assert list(tiny)[:4] == [f'pos_embed{s}' for s in range(1, 5)]
    sd = official_state_dict(False, [64, 128, 320, 512], [2, 2, 2, 2], HEADS)
    converted = FLATTEN_PVT_CONVERTER.convert(sd)
    # Head and the never-applied final norm dropped.
    assert len(converted) == 164
    assert set(FLattenPVT('tiny',
                          norm_outputs=False).state_dict()) == set(converted)
    assert converted['stem.pos_embed'] is sd['pos_embed1']
    assert converted['stages.3.downsample.pos_embed'] is sd['pos_embed4']
    assert converted['stages.1.blocks.1.attn.kv.weight'] is sd[
        'block2.1.attn.kv.weight']
    with_head = FLATTEN_PVT_CONVERTER.convert(sd, keep_head=True)
    assert set(with_head) - set(converted) == {
        'head.fc.weight', 'head.fc.bias'
    }

    sd = official_state_dict(True, [32, 64, 160, 256], [2, 2, 2, 2], HEADS)
    converted = FLATTEN_PVT_V2_CONVERTER.convert(sd)
    assert len(converted) == 184
    assert set(FLattenPVTv2('b0',
                            out_indices=(3, )).state_dict()) == set(converted)
    assert converted['norm0.weight'] is sd['norm1.weight']
    assert converted['stages.2.blocks.0.mlp.dwconv.weight'] is sd[
        'block3.0.mlp.dwconv.dwconv.weight']


def official_container(sd):
    """What the official training script saves (its yacs ``config`` is
    replaced by a plain dict here)."""
    return dict(
        model=sd,
        optimizer=dict(state={}, param_groups=[dict(lr=1e-3)]),
        lr_scheduler=dict(last_epoch=299),
        max_accuracy=77.758,
        epoch=299,
        config=dict(MODEL=dict(TYPE='flatten_pvt_tiny')))


@pytest.mark.parametrize('family', ['v1', 'v2'])
def test_pretrained_init_loads_official_release_file(family, tmp_path):
    cls, converter, v2 = FAMILIES[family]
    sd = small_state_dict(v2)
    path = str(tmp_path / 'flatten_pvt.pth')
    torch.save(official_container(sd), path)
    model = cls(SMALL, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    converted = converter.convert(sd)
    state = model.state_dict()
    new_norms = {f'norm{i}.{p}' for i in range(4) for p in ('weight', 'bias')}
    assert set(state) - set(converted) == (set() if v2 else new_norms)
    for key, value in converted.items():
        assert torch.equal(state[key], value), key
    # Loading does not re-initialise anything on a second call.
    model.init_weights()
    assert torch.equal(model.state_dict()['stem.proj.weight'],
                       sd['patch_embed1.proj.weight'])


def test_wrong_family_refused(tmp_path):
    v1_sd, v2_sd = small_state_dict(False), small_state_dict(True)
    with pytest.raises(
            CheckpointFormatError,
            match=r"FLattenPVTv2 checkpoint: load it into "
            r"type='FLattenPVTv2'"):
        FLattenPVT(SMALL).load_state_dict(v2_sd)
    with pytest.raises(
            CheckpointFormatError, match="It is a FLattenPVT checkpoint"):
        FLattenPVTv2(SMALL).load_state_dict(dict(model=v1_sd))
    converted_v2 = FLATTEN_PVT_V2_CONVERTER.convert(v2_sd)
    with pytest.raises(CheckpointFormatError, match='FLattenPVTv2 checkpoint'):
        FLattenPVT(SMALL).load_state_dict(converted_v2)
    with pytest.raises(CheckpointFormatError, match='FLattenPVTv2 checkpoint'):
        FLATTEN_PVT_CONVERTER.convert(v2_sd)
    swin = {
        'patch_embed.proj.weight': torch.zeros(96, 3, 4, 4),
        'layers.0.blocks.0.attn.qkv.weight': torch.zeros(288, 96),
    }
    with pytest.raises(
            CheckpointFormatError,
            match=r'not an FLattenPVT one.*patch_embed\.proj'):
        FLattenPVT(SMALL).load_state_dict(swin)
    # Through init_cfg as well.
    path = str(tmp_path / 'flatten_pvt_v2_b0.pth')
    torch.save(official_container(v2_sd), path)
    model = FLattenPVT(
        SMALL, init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointFormatError, match='FLattenPVTv2 checkpoint'):
        model.init_weights()


def test_spatial_reduction_checkpoint_refused():
    sd = small_state_dict(False)
    sd['block1.0.attn.sr.weight'] = torch.zeros(32, 32, 8, 8)
    sd['block1.0.attn.norm.weight'] = torch.zeros(32)
    with pytest.raises(
            CheckpointFormatError,
            match=r"'block1.0.attn.sr.weight', "
            r"'block1.0.attn.norm.weight'"):
        FLATTEN_PVT_CONVERTER.convert(sd)


def test_position_tables_and_conv_init():
    v1 = FLattenPVT(SMALL)
    v1.init_weights()
    attn = v1.stages[1].blocks[0].attn
    assert attn.scale.shape == (1, 1, 64)
    assert attn.positional_encoding.shape == (1, 784, 64)
    assert 0.015 < v1.stem.pos_embed.std() < 0.025
    v2 = FLattenPVTv2(SMALL)
    v2.init_weights()
    dwc = v2.stages[0].blocks[0].attn.dwc
    # normal(0, sqrt(2 / fan_out)) with fan_out = 25 for the head-shared
    # depthwise conv.
    assert 0.2 < dwc.weight.std() < 0.36 and dwc.bias.abs().sum() == 0


def test_bad_arguments():
    # The presets of one version are unknown to the other.
    with pytest.raises(ValueError, match="unknown FLattenPVT arch 'b0'"):
        FLattenPVT('b0')
    with pytest.raises(ValueError, match="unknown FLattenPVTv2 arch 'tiny'"):
        FLattenPVTv2('tiny')
    with pytest.raises(ValueError, match='one value per stage'):
        FLattenPVTv2(dict(SMALL, mlp_ratios=[4, 4]))
    with pytest.raises(
            ValueError,
            match=r"pos_resize_mode must be one of "
            r".*'bicubic'.*got 'cubic'"):
        FLattenPVT(SMALL, pos_resize_mode='cubic')
    with pytest.raises(ValueError, match='not divisible by num_heads'):
        FLattenPVT(dict(SMALL, num_heads=[3, 2, 4, 8]))
