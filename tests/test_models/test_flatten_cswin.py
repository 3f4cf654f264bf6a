# Copyright (c) OpenMMLab. All rights reserved.
"""FLattenCSWin: presets, equivalence with an independent reference of the
official model, and loading of official checkpoints (the backbone contract
of every type is tested in ``test_backbone_contract.py``).

Official-format state dicts are generated from the spec's key table
(``flatten_cswin_reference.official_state_dict``) and run through a
functional model that reads the official keys directly.
"""
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_ARCHS, overlapping_quarter, stage_sizes
from flatten_cswin_reference import (ARCHS, official_state_dict,
                                     reference_forward)

from mmplugin_l2vit import FLattenCSWin
from mmplugin_l2vit.models.backbones.flatten_cswin import (
    LePEAttention, LePEFocusedLinearAttention)
from mmplugin_l2vit.models.converters import (FLATTEN_CSWIN_CONVERTER,
                                              CheckpointFormatError)

SMALL_ARCH = dict(SMALL_ARCHS['FLattenCSWin'], depths=[1, 2, 2, 1])
SMALL = dict(
    dims=SMALL_ARCH['embed_dims'],
    depths=SMALL_ARCH['depths'],
    heads=SMALL_ARCH['num_heads'])

# Parameters of the official models with their 1000-class head, measured
# from the official code (the spec rounds them to 21.20M, 35.45M, 74.87M
# and 78.37M).
OFFICIAL_PARAMS = {
    'tiny': 21201768,
    'small': 35451752,
    'base': 74867032,
    'base-384': 78369112,
}
# Sizes every arch must take (the list).
DENSE_SIZES = [(225, 301), (512, 512), (800, 1333)]


def stage_tokens(model, x):
    """The stage outputs before the per-output norms, and the outputs."""
    feats = []
    hooks = [
        stage.register_forward_hook(lambda m, i, o: feats.append(o[0]))
        for stage in model.stages
    ]
    with torch.no_grad():
        outs = model(x)
    for hook in hooks:
        hook.remove()
    return feats, outs


def build_converted(arch, sd, out_indices=(0, 1, 2, 3), **kwargs):
    model = FLattenCSWin(arch, out_indices=out_indices, **kwargs)
    missing, unexpected = model.load_state_dict(
        FLATTEN_CSWIN_CONVERTER.convert(sd), strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(f'norm{i}.{p}' for i in out_indices
                                     if i != 3 for p in ('weight', 'bias'))
    return model.eval()


def to64(sd):
    return {k: v.double() for k, v in sd.items()}


@pytest.mark.parametrize('arch', list(ARCHS))
def test_arch_presets(arch):
    spec = ARCHS[arch]
    settings = FLattenCSWin._resolve_arch(arch)
    assert settings['embed_dims'] == spec['dims']
    assert settings['depths'] == spec['depths']
    assert settings['num_heads'] == spec['heads']
    assert settings['split_size'] == spec['split']
    assert settings['pretrain_img_size'] == spec['img']
    # Shallow copies keep the test fast; widths, heads and grids are real.
    model = FLattenCSWin(dict(settings, depths=[1, 1, 1, 1])).eval()
    stages = model.stages
    side = spec['img'] // 4
    assert stages[0].blocks[0].attns[0].pos_grid == (side, side)
    assert stages[1].blocks[0].attns[0].pos_grid == (side // 2, side // 2)
    split = spec['split']
    windows = [[a.window for a in s.blocks[0].attns] for s in stages[2:]]
    assert windows == [[(None, split), (split, None)], [(None, None)]]
    # With one block per stage 'small' is the very model 'tiny' is.
    sizes = DENSE_SIZES[:1] if arch == 'small' else DENSE_SIZES
    for size in sizes:
        with torch.no_grad():
            outs = model(torch.randn(1, 3, *size))
        grids = stage_sizes(*size, overlapping_quarter)
        assert [tuple(o.shape) for o in outs
                ] == [(1, c, h, w) for c, (h, w) in zip(spec['dims'], grids)]
        assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('arch', list(OFFICIAL_PARAMS))
def test_parameter_count_matches_official(arch):
    model = FLattenCSWin(arch)
    dims = ARCHS[arch]['dims']
    official_head_and_norm = dims[3] * 1000 + 1000 + 2 * dims[3]
    out_norms = 2 * sum(dims)
    assert sum(p.numel() for p in model.parameters()) == (
        OFFICIAL_PARAMS[arch] - official_head_and_norm + out_norms)


def test_block_layout():
    model = FLattenCSWin('tiny')
    kinds = [[type(a).__name__ for a in s.blocks[0].attns]
             for s in model.stages]
    assert kinds == [['LePEFocusedLinearAttention'],
                     ['LePEFocusedLinearAttention'],
                     ['LePEAttention', 'LePEAttention'], ['LePEAttention']]
    assert [len(s.blocks) for s in model.stages] == [2, 4, 18, 1]
    assert model.stages[0].downsample is None
    get_v = model.stages[2].blocks[0].attns[0].get_v
    assert get_v.weight.shape == (128, 1, 3, 3)


def test_linear_attention_tables():
    attn = FLattenCSWin(SMALL_ARCH).stages[1].blocks[1].attns[0]
    assert attn.positional_encoding.shape == (1, 28 * 28, 64)
    assert attn.dwc.weight.shape == (32, 1, 5, 5)


@pytest.mark.parametrize('size', [(224, 224), (225, 301), (97, 131)])
def test_matches_reference_float64(size):
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    model = build_converted(SMALL_ARCH, sd).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    feats, outs = stage_tokens(model, x)
    with torch.no_grad():
        ref, _ = reference_forward(
            to64(sd), x, SMALL['depths'], SMALL['heads'])
    for i, (ours, (theirs, hw)) in enumerate(zip(feats, ref)):
        assert outs[i].shape[-2:] == hw
        torch.testing.assert_close(
            ours, theirs, rtol=1e-10, atol=1e-10, msg=f'stage {i}')


def test_bicubic_position_resize_matches_reference():
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    model = build_converted(SMALL_ARCH, sd, pos_resize_mode='bicubic')
    x = torch.randn(1, 3, 161, 193, dtype=torch.float64)
    feats, _ = stage_tokens(model.double(), x)
    with torch.no_grad():
        ref, _ = reference_forward(
            to64(sd), x, SMALL['depths'], SMALL['heads'], pos_mode='bicubic')
        bilinear, _ = reference_forward(
            to64(sd), x, SMALL['depths'], SMALL['heads'])
    torch.testing.assert_close(feats[1], ref[1][0], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(feats[1], bilinear[1][0])


def test_positional_encoding_used_as_is_at_training_grid():
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    x = torch.randn(1, 3, 224, 224)
    bilinear, _ = stage_tokens(build_converted(SMALL_ARCH, sd), x)
    bicubic, _ = stage_tokens(
        build_converted(SMALL_ARCH, sd, pos_resize_mode='bicubic'), x)
    assert all(torch.equal(a, b) for a, b in zip(bilinear, bicubic))


@pytest.mark.parametrize('arch', ['tiny', 'base-384'])
def test_matches_reference_float32_real_archs(arch):
    # Real widths, heads, stripes and grids; fewer blocks for speed.
    spec = ARCHS[arch]
    depths = [1, 1, 2, 1]
    sd = official_state_dict(spec['dims'], depths, spec['heads'], spec['img'])
    settings = dict(FLattenCSWin._resolve_arch(arch), depths=depths)
    model = build_converted(settings, sd)
    x = torch.randn(1, 3, spec['img'], spec['img'])
    feats, _ = stage_tokens(model, x)
    with torch.no_grad():
        ref, _ = reference_forward(sd, x, depths, spec['heads'], spec['split'])
    for i, (ours, (theirs, _)) in enumerate(zip(feats, ref)):
        # Relative to the magnitude, which random weights inflate in deep
        # stages; real weights keep it small enough for 1e-4 absolute.
        scale = theirs.abs().max().clamp(min=1)
        assert (ours - theirs).abs().max() / scale < 1e-5, i


def test_logits_through_norm3_and_head():
    sd = official_state_dict(
        SMALL['dims'], SMALL['depths'], SMALL['heads'], num_classes=7)
    model = build_converted(SMALL_ARCH, sd, out_indices=(3, ))
    head = FLATTEN_CSWIN_CONVERTER.convert(sd, keep_head=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = F.linear(
            model(x)[0].mean((2, 3)), head['head.fc.weight'],
            head['head.fc.bias'])
        _, ref_logits = reference_forward(sd, x, SMALL['depths'],
                                          SMALL['heads'])
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_stripe_attention_sdpa_matches_explicit_softmax():
    attn = LePEAttention(64, 2, (None, 7)).eval()
    q, k, v = torch.randn(3, 2, 14 * 14, 64).unbind(0)
    with torch.no_grad():
        with_lepe = attn(q, k, v, (14, 14)).view(2, 14, 14, 64)
        attn.get_v.weight.zero_()
        attn.get_v.bias.zero_()
        ours = attn(q, k, v, (14, 14)).view(2, 14, 14, 64)
    assert not torch.allclose(with_lepe, ours)

    def stripe_heads(t, left):
        stripe = t.view(2, 14, 14, 64)[:, :, left:left + 7]
        return stripe.reshape(2, 98, 2, 32).transpose(1, 2)

    # The two vertical stripes of width 7, by hand.
    for left in (0, 7):
        qs, ks, vs = (stripe_heads(t, left) for t in (q, k, v))
        out = ((qs * 32**-0.5) @ ks.transpose(-2, -1)).softmax(-1) @ vs
        expected = out.transpose(1, 2).reshape(2, 14, 7, 64)
        assert (ours[:, :, left:left + 7] - expected).abs().max() < 1e-6


def test_linear_attention_adds_lepe_after_dwc():
    attn = LePEFocusedLinearAttention(32, 1, (8, 8), 'bilinear')
    q, k, v = torch.randn(3, 1, 64, 32).unbind(0)
    with torch.no_grad():
        v_map = v.transpose(1, 2).reshape(1, 32, 8, 8)
        lepe = attn.get_v(v_map).flatten(2).transpose(1, 2)
        expected = attn.attend(q, k, v, (8, 8)) + lepe
        assert torch.equal(attn(q, k, v, (8, 8)), expected)


def official_container(sd, ema_sd):
    return dict(
        model=sd,
        state_dict_ema=ema_sd,
        optimizer=dict(state={}, param_groups=[dict(lr=5e-4)]),
        lr_scheduler=dict(last_epoch=299),
        max_accuracy=83.13,
        max_accuracy_e=83.0,
        epoch=299,
        config=dict(MODEL=dict(TYPE='FLatten_CSWin_64_24181_tiny_224')))


def test_pretrained_init_loads_official_release_file(tmp_path):
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    ema = official_state_dict(
        SMALL['dims'], SMALL['depths'], SMALL['heads'], seed=1)
    path = str(tmp_path / 'flatten_cswin_t.pth')
    torch.save(official_container(sd, ema), path)
    model = FLattenCSWin(
        SMALL_ARCH, init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    expected = build_converted(SMALL_ARCH, sd).state_dict()
    for key, value in expected.items():
        if not key.startswith(('norm0', 'norm1', 'norm2')):
            assert torch.equal(model.state_dict()[key], value), key


def test_converter_round_trip_and_key_counts():
    spec = ARCHS['tiny']
    sd = official_state_dict(
        spec['dims'], spec['depths'], spec['heads'], num_classes=1000)
    assert len(sd) == 430
    converted = FLATTEN_CSWIN_CONVERTER.convert(sd)
    assert len(converted) == 428  # head dropped, norm -> norm3
    with_head = FLATTEN_CSWIN_CONVERTER.convert(sd, keep_head=True)
    assert with_head['head.fc.weight'] is sd['head.weight']
    model = FLattenCSWin('tiny', out_indices=(3, ))
    model.load_state_dict(converted)  # strict: the key sets are equal
    loaded = model.state_dict()
    renamed = dict(zip(sd, with_head))
    for key, value in sd.items():
        if not key.startswith('head.'):
            assert torch.equal(loaded[renamed[key]], value), key
    assert renamed['stage1_conv_embed.0.weight'] == 'stem.conv.weight'
    assert renamed['merge2.norm.bias'] == 'stages.2.downsample.norm.bias'
    assert renamed['stage3.5.attns.1.get_v.weight'] == \
        'stages.2.blocks.5.attns.1.get_v.weight'
    assert renamed['norm.weight'] == 'norm3.weight'


def test_foreign_checkpoints_refused():
    model = FLattenCSWin(SMALL_ARCH)
    # The original CSWin: same layout, but no positional encodings.
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    original_cswin = {
        k: v
        for k, v in sd.items() if 'positional_encoding' not in k
    }
    with pytest.raises(
            CheckpointFormatError,
            match='not an FLatten-CSwin one.*stage1_conv_embed'):
        model.load_state_dict(original_cswin, strict=False)
    flatten_swin = dict(
        model={
            'patch_embed.proj.weight': torch.zeros(96, 3, 4, 4),
            'layers.0.blocks.0.attn.positional_encoding': torch.zeros(1),
        })
    with pytest.raises(
            CheckpointFormatError,
            match='not an official FLatten-CSwin checkpoint'):
        model.load_state_dict(flatten_swin, strict=False)
    l2vit = {'stem.conv1.weight': torch.zeros(1)}
    with pytest.raises(CheckpointFormatError, match='not an FLatten-CSwin'):
        model.load_state_dict(l2vit, strict=False)


def test_converter_rejects_unknown_official_keys():
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    sd['stage5.0.qkv.weight'] = torch.zeros(1)
    with pytest.raises(
            CheckpointFormatError, match=r"\['stage5.0.qkv.weight'\]"):
        FLATTEN_CSWIN_CONVERTER.convert(sd)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown .*'window_size'"):
        FLattenCSWin(dict(SMALL_ARCH, window_size=7))
    with pytest.raises(ValueError, match='stage 3 .* got 3 heads'):
        FLattenCSWin(dict(SMALL_ARCH, num_heads=[1, 2, 3, 8]))
    with pytest.raises(ValueError, match="pos_resize_mode .*'nearest'"):
        FLattenCSWin(SMALL_ARCH, pos_resize_mode='nearest')


def test_deprecated_pretrain_size_key():
    arch = dict(
        embed_dims=SMALL['dims'],
        depths=[1, 1, 1, 1],
        num_heads=SMALL['heads'],
        pretrain_img_size=112)
    old = dict(arch)
    old['pretrain_size'] = old.pop('pretrain_img_size')
    with pytest.warns(FutureWarning, match='pretrain_size is deprecated'):
        settings = FLattenCSWin._resolve_arch(old)
    assert settings == FLattenCSWin._resolve_arch(arch)
    assert 'pretrain_size' not in settings
    with pytest.warns(FutureWarning):
        model = FLattenCSWin(old)
    assert model.stages[0].blocks[0].attns[0].pos_grid == (28, 28)
    with pytest.raises(ValueError, match='both pretrain_img_size'):
        FLattenCSWin._resolve_arch(dict(arch, pretrain_size=224))
