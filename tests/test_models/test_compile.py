# Copyright (c) OpenMMLab. All rights reserved.
"""``torch.compile`` captures every backbone as one graph (no graph break),
in inference and in training with gradient checkpointing, and the compiled
attention kernels match eager mode."""
import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from conftest import SMALL_ARCHS

import mmplugin_l2vit
from mmplugin_l2vit.models.layers import (FocusedLinearAttention,
                                          ReLULinearAttention)
from mmplugin_l2vit.models.layers.cpu_inference import inference_linear
from mmplugin_l2vit.models.layers.window_attention import \
    ShiftedWindowAttention

# Not a multiple of any window or patch size: the padding paths are traced.
IMAGE_HW = (100, 132)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_backbone_compiles_to_one_graph(type_name, with_cp):
    model = getattr(mmplugin_l2vit, type_name)(
        SMALL_ARCHS[type_name], with_cp=with_cp)
    model.init_weights()
    model.train(with_cp)
    x = torch.randn(1, 3, *IMAGE_HW)
    # fullgraph=True raises on any graph break instead of falling back.
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    with torch.set_grad_enabled(with_cp):
        expected = model(x)
        outs = compiled(x)
    assert len(outs) == len(expected) == 4
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if with_cp:
        sum(o.square().mean() for o in outs).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _attention_cases():
    hw = (13, 17)
    tokens = torch.randn(2, hw[0] * hw[1], 32)
    relu_attn = ReLULinearAttention(32, 2)
    window_attn = ShiftedWindowAttention(32, 2, window_size=7, shift_size=3)
    focused = FocusedLinearAttention(32, 2, pos_grid=hw)
    for param in focused.parameters():
        torch.nn.init.normal_(param, std=0.2)
    return {
        'relu_linear': (relu_attn, (tokens, )),
        'shifted_window': (window_attn, (tokens, hw)),
        'focused_linear':
        (lambda t, grid: focused.attend(t, t, t, grid), (tokens, hw)),
    }


@pytest.mark.parametrize('case',
                         ['relu_linear', 'shifted_window', 'focused_linear'])
def test_attention_kernels_compile_with_inductor(case):
    function, args = _attention_cases()[case]
    compiled = torch.compile(function, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(
            compiled(*args), function(*args), rtol=1e-5, atol=1e-5)


def test_in_place_linear_is_never_traced():
    # After a graph break dynamo compiles the rest of the frame; the
    # in-place paths' oneDNN linear must run eagerly there (inductor cannot
    # lower it with weights that are graph inputs).

    def project(x, weight, bias):
        torch._dynamo.graph_break()
        return inference_linear(x, weight, bias, gelu=True)

    x, weight, bias = torch.randn(64, 32), torch.randn(16, 32), torch.randn(16)
    with torch.no_grad():
        out = torch.compile(project)(x, weight, bias)
    torch.testing.assert_close(
        out, F.gelu(F.linear(x, weight, bias)), rtol=1e-5, atol=1e-5)
