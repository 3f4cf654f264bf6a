# Copyright (c) OpenMMLab. All rights reserved.
"""Equivalence with the official L²ViT and loading of official weights.

Official-format state dicts are generated here from the official key table
(``l2vit_reference.official_state_dict``) and run through an independent
functional model that reads the official keys directly.
"""
import argparse
import logging

import pytest
import torch
import torch.nn.functional as F
from l2vit_reference import ARCHS, official_state_dict, reference_forward
from mmengine.logging import MMLogger
from mmengine.runner import load_checkpoint

from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.models.converters import (L2VIT_CONVERTER,
                                              CheckpointFormatError,
                                              unwrap_checkpoint)
from mmplugin_l2vit.runtime import load_checkpoint_file

SMALL = dict(dims=[32, 64, 128, 256], depths=[2, 2, 4, 2], heads=[1, 2, 4, 8],
             window=7)


def small_arch(window=7):
    return dict(
        embed_dims=SMALL['dims'],
        depths=SMALL['depths'],
        num_heads=SMALL['heads'],
        window_size=window)


def stage_tokens(model, x):
    """The stage outputs before the per-output norms."""
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
    model = L2ViT(arch, out_indices=out_indices, **kwargs)
    missing, unexpected = model.load_state_dict(
        L2VIT_CONVERTER.convert(sd), strict=False)
    assert unexpected == []
    assert sorted(missing) == sorted(
        f'norm{i}.{p}' for i in out_indices if i != 3
        for p in ('weight', 'bias'))
    return model.eval()


def to64(sd):
    return {k: v.double() if v.is_floating_point() else v
            for k, v in sd.items()}


@pytest.mark.parametrize('size', [(224, 224), (225, 301), (97, 131)])
def test_matches_reference_float64(size):
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    model = build_converted(small_arch(), sd).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    feats, _ = stage_tokens(model, x)
    with torch.no_grad():
        ref, _ = reference_forward(to64(sd), x, SMALL['depths'],
                                   SMALL['heads'], SMALL['window'])
    for i, (ours, (theirs, hw)) in enumerate(zip(feats, ref)):
        assert ours.shape == theirs.shape
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10,
                                   msg=f'stage {i}')


@pytest.mark.parametrize('arch', ['tiny', 'small', 'base'])
def test_matches_reference_float32_real_archs(arch):
    a = ARCHS[arch]
    sd = official_state_dict(a['dims'], a['depths'], a['heads'])
    model = build_converted(arch, sd)
    x = torch.randn(1, 3, 224, 224)
    feats, _ = stage_tokens(model, x)
    with torch.no_grad():
        ref, _ = reference_forward(sd, x, a['depths'], a['heads'],
                                   a['window'])
    for ours, (theirs, _) in zip(feats, ref):
        # Relative to the magnitude, which random weights inflate in deep
        # stages; real weights keep it small enough for 1e-4 absolute.
        scale = theirs.abs().max().clamp(min=1)
        assert (ours - theirs).abs().max() / scale < 1e-5


def test_logits_through_norm3_and_head():
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'],
                             num_classes=7)
    model = build_converted(small_arch(), sd, out_indices=(3, ))
    converted = L2VIT_CONVERTER.convert(sd, keep_head=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feat = model(x)[0]
        logits = F.linear(feat.mean((2, 3)), converted['head.fc.weight'],
                          converted['head.fc.bias'])
        _, ref_logits = reference_forward(sd, x, SMALL['depths'],
                                          SMALL['heads'], SMALL['window'])
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)


def test_quirks_are_reproduced():
    """Each quirk changes the output; the default keeps all of them."""
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    x = torch.randn(1, 3, 100, 130)  # needs window and stem padding
    default, _ = stage_tokens(build_converted(small_arch(), sd), x)
    floor_one, _ = stage_tokens(
        build_converted(small_arch(), sd, denominator_floor=1.), x)
    assert not torch.allclose(default[3], floor_one[3])
    # The floor is active: Q.sum(K) < 100 for some rows at this size.
    with torch.no_grad():
        ref, _ = reference_forward(sd, x, SMALL['depths'], SMALL['heads'], 7)
    torch.testing.assert_close(default[3], ref[3][0], rtol=1e-4, atol=1e-4)


def official_container(sd, ema_sd):
    return dict(
        model=sd,
        model_ema=ema_sd,
        optimizer=dict(state={}, param_groups=[dict(lr=1e-3)]),
        epoch='best-ema',
        scaler=dict(scale=1.),
        args=argparse.Namespace(model='L2ViT_Tiny', drop_path=0.1))


def test_pretrained_init_loads_official_release_file(tmp_path):
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    ema = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'],
                              seed=1)
    path = str(tmp_path / 'L2ViT-checkpoint-best-ema.pth')
    torch.save(official_container(sd, ema), path)
    # weights_only loading stays on; the plugin allow-lists Namespace for
    # checkpoint loads (not for every torch.load).
    assert load_checkpoint_file(path)['args'].model == 'L2ViT_Tiny'
    model = L2ViT(small_arch(),
                  init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    expected = build_converted(small_arch(), sd).state_dict()
    for key, value in expected.items():
        if not key.startswith(('norm0', 'norm1', 'norm2')):
            assert torch.equal(model.state_dict()[key], value), key


def test_unwrap_prefers_model_and_ema_on_request():
    sd = {'a': torch.zeros(1)}
    ema = {'module.a': torch.ones(1)}
    container = dict(model=sd, model_ema=ema, epoch=3)
    assert torch.equal(unwrap_checkpoint(container)['a'], torch.zeros(1))
    assert torch.equal(
        unwrap_checkpoint(container, use_ema=True)['a'], torch.ones(1))
    with pytest.raises(CheckpointFormatError, match='has none of'):
        unwrap_checkpoint(dict(model=sd), use_ema=True)
    assert list(unwrap_checkpoint({'state_dict': sd})) == ['a']


def test_whole_model_checkpoint_with_prefix(tmp_path):
    source = L2ViT(small_arch())
    source.init_weights()
    whole = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    whole['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)
    path = str(tmp_path / 'detector.pth')
    torch.save(dict(state_dict=whole, meta=dict(epoch=1)), path)
    model = L2ViT(
        small_arch(),
        init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    # Without the prefix, the error says how to load it.
    with pytest.raises(CheckpointFormatError, match="prefix='backbone.'"):
        L2ViT(small_arch()).load_state_dict(whole)


def test_foreign_checkpoint_refused():
    swin_like = {
        'patch_embed.projection.weight': torch.zeros(96, 3, 4, 4),
        'stages.0.blocks.0.attn.w_msa.qkv.weight': torch.zeros(288, 96),
    }
    with pytest.raises(CheckpointFormatError,
                       match='not an L2ViT one.*patch_embed'):
        L2ViT(small_arch()).load_state_dict(swin_like, strict=False)
    convnext_release = dict(model={'downsample_layers.0.0.weight': 0})
    with pytest.raises(CheckpointFormatError,
                       match='not in the official L2ViT key map'):
        L2ViT(small_arch()).load_state_dict(convnext_release, strict=False)


def test_missing_and_unexpected_keys_reported_by_name(tmp_path, capsys):
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    converted = L2VIT_CONVERTER.convert(sd)
    del converted['stages.1.blocks.1.lcm.bn.running_var']
    converted['stages.1.blocks.1.extra'] = torch.zeros(1)
    path = str(tmp_path / 'converted.pth')
    torch.save(converted, path)
    model = L2ViT(small_arch())
    logger = MMLogger.get_instance('test_l2vit_keys', log_level='WARNING')
    with _capture(logger) as records:
        load_checkpoint(model, path, logger=logger)
    text = '\n'.join(records)
    assert 'stages.1.blocks.1.lcm.bn.running_var' in text
    assert 'stages.1.blocks.1.extra' in text
    assert 'norm0.weight' in text
    with pytest.raises(RuntimeError, match='lcm.bn.running_var'):
        model.load_state_dict(converted)


class _capture:

    def __init__(self, logger):
        self.logger = logger
        self.records = []

    def __enter__(self):
        records = self.records

        class Handler(logging.Handler):

            def emit(self, record):
                records.append(record.getMessage())

        self.handler = Handler()
        self.logger.addHandler(self.handler)
        return records

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)


def test_converter_rejects_unknown_official_keys():
    sd = official_state_dict(SMALL['dims'], SMALL['depths'], SMALL['heads'])
    sd['stages.0.1.layer_scale'] = torch.zeros(1)
    with pytest.raises(CheckpointFormatError,
                       match=r"\['stages.0.1.layer_scale'\]"):
        L2VIT_CONVERTER.convert(sd)


def test_tiny_key_count_matches_spec():
    a = ARCHS['tiny']
    sd = official_state_dict(a['dims'], a['depths'], a['heads'])
    assert len(sd) == 284
    converted = L2VIT_CONVERTER.convert(sd)
    assert len(converted) == 282  # head dropped, norm -> norm3
    assert len(L2VIT_CONVERTER.convert(sd, keep_head=True)) == 284
    model_keys = set(L2ViT('tiny', out_indices=(3, )).state_dict())
    assert set(converted) == model_keys
