# Copyright (c) OpenMMLab. All rights reserved.
"""The OpenMMLab backbone contract, checked on every backbone type: output
indices and norms, any input size, freezing, ``norm_eval``, gradient
checkpointing, drop-path rates, initialisation and clear errors.

What only one family does (arch presets, parameter counts, equivalence
with the official models, checkpoint conversion) is tested in its own
file."""
from typing import Callable, NamedTuple, Tuple

import pytest
import torch
import torch.nn as nn
import torch.utils.checkpoint
from conftest import (SMALL_ARCHS, ceil_quarter, overlapping_quarter,
                      randomise_zero_init, stage_sizes)
from torch.nn.modules.batchnorm import _BatchNorm

import mmplugin_l2vit


class Family(NamedTuple):
    """What the contract expects of one backbone type.

    Args:
        presets (str): The arch names an unknown arch's error lists.
        arch_keys (tuple[str]): The keys an arch dict must have.
        stem (Callable): The first stage's map side from the input's.
        main_path_norms (bool): The norms ``norm{i}`` sit in the main path,
            so they exist whatever ``out_indices`` is and belong to their
            stage for freezing (PVTv2).
        batch_norms (int): BatchNorm layers of the small arch.
        zero_init (tuple[str]): Parameters initialised to zero.
    """
    presets: str
    arch_keys: Tuple[str, ...] = ('embed_dims', 'depths', 'num_heads')
    stem: Callable[[int], int] = ceil_quarter
    main_path_norms: bool = False
    batch_norms: int = 0
    zero_init: Tuple[str, ...] = ('scale', 'positional_encoding')


FAMILIES = {
    # The BatchNorms: two in the stem, one in the LCM of each stage's
    # global block.
    'L2ViT':
    Family(
        "'base', 'base-384', 'small', 'tiny'",
        arch_keys=('embed_dims', 'depths', 'num_heads', 'window_size'),
        batch_norms=6,
        zero_init=()),
    'FLattenPVT':
    Family("'large', 'medium', 'small', 'tiny'"),
    'FLattenPVTv2':
    Family("'b0', 'b1', 'b2', 'b3', 'b4'", main_path_norms=True),
    'FLattenSwin':
    Family("'base', 'base-384', 'small', 'tiny'"),
    'FLattenCSWin':
    Family("'base', 'base-384', 'small', 'tiny'", stem=overlapping_quarter),
}
assert sorted(FAMILIES) == sorted(SMALL_ARCHS)


@pytest.fixture(params=sorted(FAMILIES))
def type_name(request):
    return request.param


@pytest.fixture
def family(type_name):
    return FAMILIES[type_name]


@pytest.fixture
def build(type_name):
    """Build the small arch of the type, or ``arch`` changed by
    ``arch_changes``, with the given backbone arguments."""
    cls = getattr(mmplugin_l2vit, type_name)

    def build_backbone(arch_changes=None, arch=None, **kwargs):
        arch = dict(SMALL_ARCHS[type_name]) if arch is None else arch
        if arch_changes is not None:
            arch.update(arch_changes)
        return cls(arch, **kwargs)

    return build_backbone


def test_stage_sizes_as_the_specs_give_them():
    assert stage_sizes(225, 301) == [(57, 76), (29, 38), (15, 19), (8, 10)]
    assert stage_sizes(800, 1333)[0] == (200, 334)
    assert stage_sizes(800, 1333)[3] == (25, 42)
    assert stage_sizes(224, 224, overlapping_quarter) == [(56, 56), (28, 28),
                                                          (14, 14), (7, 7)]
    assert stage_sizes(800, 1333, overlapping_quarter) == [(200, 333),
                                                           (100, 167),
                                                           (50, 84), (25, 42)]


@pytest.mark.parametrize('out_indices', [(0, ), (1, ), (2, ), (3, ), (1, 2, 3),
                                         (0, 1, 2, 3), (-1, )])
def test_out_indices(build, family, type_name, out_indices):
    model = build(out_indices=out_indices).eval()
    expected = sorted(i % 4 for i in out_indices)
    norms = range(4) if family.main_path_norms else expected
    assert [n for n, _ in model.named_children()
            if n.startswith('norm')] == [f'norm{i}' for i in norms]
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 96))
    sizes = stage_sizes(64, 96, family.stem)
    dims = SMALL_ARCHS[type_name]['embed_dims']
    assert [tuple(o.shape) for o in outs] == [(2, dims[i], *sizes[i])
                                              for i in expected]


@pytest.mark.parametrize('size', [(32, 32), (33, 97), (97, 131), (225, 301),
                                  (511, 511)])
def test_any_input_size(build, family, size):
    model = build().eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape[-2:])
            for o in outs] == stage_sizes(*size, family.stem)
    assert all(torch.isfinite(o).all() for o in outs)


def requires_grad(module):
    return {p.requires_grad for p in module.parameters()}


def assert_frozen(model, frozen_stages, family):
    """The stem and the first ``frozen_stages`` stages, with the norms of
    their outputs, are frozen and in eval mode; the rest trains."""
    stem_frozen = frozen_stages >= 0
    assert requires_grad(model.stem) == {not stem_frozen}
    assert all(m.training is not stem_frozen for m in model.stem.modules())
    for i, stage in enumerate(model.stages):
        frozen = i < frozen_stages
        assert requires_grad(stage) == {not frozen}, i
        assert all(m.training is not frozen for m in stage.modules()), i
        norm = getattr(model, f'norm{i}', None)
        if family.main_path_norms or i in model.out_indices:
            assert requires_grad(norm) == {not frozen}, i
            assert norm.training is not frozen, i
        else:
            assert norm is None, i


@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 3)])
@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 4])
def test_frozen_stages(build, family, frozen_stages, out_indices):
    model = build(out_indices=out_indices, frozen_stages=frozen_stages)
    assert model.train() is model
    assert_frozen(model, frozen_stages, family)
    # Frozen stages stay frozen through eval()/train() round trips.
    model.eval().train()
    assert_frozen(model, frozen_stages, family)


def test_frozen_stages_stop_gradients(build):
    model = build(frozen_stages=1).train()
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    for name, param in model.named_parameters():
        if name.startswith(('stem.', 'stages.0.', 'norm0.')):
            assert param.grad is None, name
        else:
            assert param.grad is not None, name


def test_norm_eval(build, family):
    model = build(norm_eval=True)
    assert model.train() is model
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(bns) == family.batch_norms
    # BatchNorms alone stay in eval mode; LayerNorms train as usual.
    for module in model.modules():
        assert module.training is not isinstance(module, _BatchNorm), module
    model = build(norm_eval=False).train()
    assert all(m.training for m in model.modules())
    assert not any(m.training for m in model.eval().modules())


def test_with_cp_same_gradients(build, monkeypatch):
    plain = build()
    plain.init_weights()
    randomise_zero_init(plain)
    checkpointed = build(with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed_blocks = []
    checkpoint = torch.utils.checkpoint.checkpoint

    def count_checkpoint(function, *args, **kwargs):
        checkpointed_blocks.append(function)
        return checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, 'checkpoint', count_checkpoint)
    x = torch.randn(2, 3, 70, 90)
    grads = []
    for model in (plain, checkpointed):
        model.train()
        outs = model(x)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum()
            for o in outs).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert checkpointed_blocks == [
        block for stage in checkpointed.stages for block in stage.blocks
    ]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(
            grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6, msg=name)


def test_drop_path_rates(build):
    model = build(dict(depths=[2, 2, 6, 2]), drop_path_rate=0.3)
    rates = [
        getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages
        for b in s.blocks
    ]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 12).tolist())
    x = torch.ones(2, 3, 64, 64)
    model.train()
    assert not torch.equal(model(x)[3], model(x)[3])
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[3], model(x)[3])


def test_init_weights_keeps_loaded_weights(build, tmp_path):
    source = build()
    source.init_weights()
    # A state dict of the backbone loads as it is (strictly).
    loaded = build()
    loaded.load_state_dict(source.state_dict())
    path = str(tmp_path / 'backbone.pth')
    torch.save(source.state_dict(), path)
    model = build(init_cfg=dict(type='Pretrained', checkpoint=path))
    model.init_weights()
    states = [loaded.state_dict(), model.state_dict()]
    model.init_weights()  # a second call must not re-initialise anything
    states.append(model.state_dict())
    for state in states:
        for key, value in source.state_dict().items():
            assert torch.equal(state[key], value), key


def test_default_init(build, family):
    """Truncated-normal (std 0.02) linear layers with zero biases, unit
    norms, and the zero-initialised parameters of the official models."""
    model = build()
    model.init_weights()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) > 10
    for linear in linears:
        assert 0.015 < linear.weight.std() < 0.025
        assert linear.weight.abs().max() <= 2
        assert linear.bias is None or not linear.bias.any()
    norms = [
        m for m in model.modules() if isinstance(m, (nn.LayerNorm, _BatchNorm))
    ]
    assert len(norms) > 4
    for norm in norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert not norm.bias.any()
    zero_init = [(name, param) for name, param in model.named_parameters()
                 if name.rsplit('.', 1)[-1] in family.zero_init]
    assert {n.rsplit('.', 1)[-1]
            for n, _ in zero_init} == set(family.zero_init)
    assert not any(param.any() for _, param in zero_init)


def test_bad_arch(build, family, type_name):
    with pytest.raises(
            ValueError,
            match=f"unknown {type_name} arch 'huge'.*{family.presets}"):
        build(arch='huge')
    for key in family.arch_keys:
        arch = dict(SMALL_ARCHS[type_name])
        del arch[key]
        with pytest.raises(ValueError, match=f'missing .*{key}'):
            build(arch=arch)
    # A misspelt key, and a setting of the official FLatten configs.
    for key in ('dims', 'attn_type'):
        with pytest.raises(ValueError, match=f"unknown .*'{key}'"):
            build({key: [1, 2, 3, 4]})
    with pytest.raises(ValueError, match='one value per stage'):
        build(dict(depths=[2, 2, 2]))
    with pytest.raises(TypeError, match='str or a dict'):
        build(arch=3)


@pytest.mark.parametrize('out_indices', [(4, ), (0, 5), (-5, ), (), (1, -3)])
def test_bad_out_indices(build, out_indices):
    with pytest.raises(ValueError, match='out_indices'):
        build(out_indices=out_indices)


@pytest.mark.parametrize('frozen_stages', [5, -2])
def test_bad_frozen_stages(build, frozen_stages):
    with pytest.raises(ValueError, match=r'frozen_stages .*\[-1, 4\]'):
        build(frozen_stages=frozen_stages)


def test_bad_inputs(build, family):
    model = build().eval()
    with pytest.raises(
            ValueError,
            match=r'in_channels=3 \(expected\) but '
            r'the input has 1 channels \(got\)'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='at least 32x32, got 31x64'):
        model(torch.randn(1, 3, 31, 64))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        model(torch.randn(3, 64, 64))
    four_channel = build(in_channels=4).eval()
    with torch.no_grad():
        outs = four_channel(torch.randn(1, 4, 32, 33))
    assert [tuple(o.shape[-2:])
            for o in outs] == stage_sizes(32, 33, family.stem)
