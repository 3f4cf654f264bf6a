# Copyright (c) OpenMMLab. All rights reserved.
"""In CPU inference the residual branches are added into the tokens in
place, a chunk (or a band of windows) at a time: the same result as the
whole-map computation of training, and the caller's input untouched; in
every other context the plain forward runs."""
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import SMALL_ARCHS as ARCHS

import mmplugin_l2vit
from mmplugin_l2vit.models.backbones import base
from mmplugin_l2vit.models.layers import (Mlp, ShiftedWindowAttention,
                                          cpu_inference, focusing_function)
from mmplugin_l2vit.models.layers.cpu_inference import (inference_linear,
                                                        is_cpu_inference,
                                                        runs_in_place)


def randomised(type_name):
    model = getattr(mmplugin_l2vit, type_name)(ARCHS[type_name]).double()
    for param in model.parameters():
        nn.init.normal_(param, std=0.1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize('chunk_elements', [3000, 1 << 20])
@pytest.mark.parametrize('type_name', sorted(ARCHS))
def test_in_place_inference_matches_whole_map(type_name, chunk_elements,
                                              monkeypatch):
    # Small chunks: several per map, of unequal sizes where they do not
    # divide it; large ones: every map in one chunk.
    for name in ('MLP_CHUNK_ELEMENTS', 'LINEAR_ATTENTION_CHUNK_ELEMENTS',
                 'FOCUSED_ATTENTION_CHUNK_ELEMENTS'):
        monkeypatch.setattr(cpu_inference, name, chunk_elements)
    monkeypatch.setattr(cpu_inference, 'MLP_MIN_CHUNK_TOKENS', 1)
    calls = spy_in_place(monkeypatch)
    model = randomised(type_name)
    # Padding everywhere, two images (the sums are per image).
    x = torch.randn(2, 3, 69, 83, dtype=torch.float64)
    before = x.clone()
    with torch.enable_grad():  # autograd on: the whole-map path
        expected = model(x)
    with torch.no_grad():
        outs = model(x)
    assert torch.equal(x, before)
    assert calls == [sum(len(stage.blocks) for stage in model.stages)]
    for out, ref in zip(outs, expected):
        assert not ref.requires_grad or out.data_ptr() != ref.data_ptr()
        torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-12)


def spy_in_place(monkeypatch):
    """Count the blocks that Stage runs in place (a one-item list)."""
    calls = [0]

    def counted(block, x, hw):
        calls[0] += 1
        return cpu_inference.forward_in_place(block, x, hw)

    monkeypatch.setattr(base, 'forward_in_place', counted)
    return calls


def test_in_place_only_in_eager_cpu_inference():
    block = randomised('FLattenPVT').stages[0].blocks[0]
    x = torch.randn(1, 10, 32, dtype=torch.float64)
    with torch.no_grad():
        assert is_cpu_inference(x)
        assert runs_in_place(block, x)
        assert not runs_in_place(block, x.transpose(1, 2))
        assert not runs_in_place(block.attn, x)  # not a block
        assert not runs_in_place(block.train(), x)
        block.eval()
        # Measured on the CPU only: other devices run the plain path.
        assert not is_cpu_inference(x.to('meta'))
        assert not runs_in_place(block, x.to('meta'))
    assert not is_cpu_inference(x)  # autograd on
    assert not runs_in_place(block, x)


@pytest.mark.parametrize('context', [
    'torch.onnx.is_in_onnx_export', 'torch.jit.is_scripting',
    'torch.jit.is_tracing', 'torch.compiler.is_compiling'
])
def test_no_in_place_while_exporting_scripting_tracing_compiling(
        context, monkeypatch):
    model = randomised('L2ViT')
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    calls = spy_in_place(monkeypatch)
    with torch.no_grad():
        model(x)
        assert calls == [8]  # so the spy sees the in-place path
        module, name = context.rsplit('.', 1)
        monkeypatch.setattr(
            importlib.import_module(module), name, lambda: True)
        assert not is_cpu_inference(x)
        model(x)
    assert calls == [8]


def test_traced_backbone_runs_the_plain_path(monkeypatch):
    model = randomised('FLattenSwin')
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    calls = spy_in_place(monkeypatch)
    with torch.no_grad():
        expected = model(x)
        assert calls == [6]
        traced = torch.jit.trace(model, x, check_trace=False)
        assert calls == [6]
        outs = traced(x)
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_forward_hooks_see_the_whole_map_calls():
    model = randomised('L2ViT')
    calls = []
    attn = model.stages[0].blocks[1].attn
    attn.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    assert calls == [torch.Size([1, 256, 32])]


@pytest.mark.parametrize('gelu', [False, True])
def test_inference_linear_matches_linear(gelu):
    weight, bias = torch.randn(3 * 40, 24), torch.randn(3 * 40)
    # A non-contiguous 4-D input and a row slice of a fused weight, as in
    # the window and LGA attentions.
    x = torch.randn(2, 9, 14, 24)[:, :7, 1:12]
    q_weight = weight.split([40, 80])[1]
    q_bias = bias.split([40, 80])[1]
    expected = F.linear(x, q_weight, q_bias)
    expected = F.gelu(expected) if gelu else expected
    out = inference_linear(x, q_weight, q_bias, gelu=gelu)
    assert out.shape == (2, 7, 11, 80)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # float64 has no oneDNN kernel: the aten ops, exactly.
    x, q_weight, q_bias = x.double(), q_weight.double(), q_bias.double()
    expected = F.linear(x, q_weight, q_bias)
    expected = F.gelu(expected) if gelu else expected
    assert torch.equal(inference_linear(x, q_weight, q_bias, gelu), expected)


def test_onednn_linear_is_used_where_available():
    assert cpu_inference.ONEDNN_LINEAR == \
        torch.backends.mkldnn.is_available()


@pytest.mark.parametrize('type_name', sorted(ARCHS))
def test_onednn_inference_matches_aten_in_float32(type_name, monkeypatch):
    model = randomised(type_name).float()
    x = torch.randn(1, 3, 69, 83)
    with torch.no_grad():
        fused = model(x)
        monkeypatch.setattr(cpu_inference, 'ONEDNN_LINEAR', False)
        plain = model(x)
    for out, ref in zip(fused, plain):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_mlp_branch_in_place_under_bf16_autocast():
    torch.manual_seed(0)
    norm, mlp = nn.LayerNorm(32), Mlp(32, 128)
    x = torch.randn(2, 50, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        expected = x + mlp(norm(x))  # autograd on
        with torch.no_grad():
            tokens = x.clone()
            cpu_inference.add_branch_in_place(tokens, None, norm, mlp)
            out = tokens
    assert out.dtype == torch.float32
    # Both products in bfloat16: equal up to its rounding.
    torch.testing.assert_close(out, expected.detach(), rtol=2e-2, atol=2e-2)
    assert not torch.equal(out, x + mlp(norm(x)).detach())


@pytest.mark.parametrize('shift_size', [0, 3])
@pytest.mark.parametrize('hw', [(17, 23), (5, 12), (6, 4)])
def test_shifted_window_branch_in_place(shift_size, hw):
    # Maps larger than a window (bands or the whole shifted map, padded)
    # and one that fits a single window.
    torch.manual_seed(0)
    attn = ShiftedWindowAttention(16, 2, 7, shift_size).double().eval()
    nn.init.normal_(attn.relative_position_bias_table)
    norm = nn.LayerNorm(16).double()
    x = torch.randn(2, hw[0] * hw[1], 16, dtype=torch.float64)
    expected = x + attn(norm(x), hw)  # autograd on
    with torch.no_grad():
        tokens = x.clone()
        cpu_inference.add_branch_in_place(tokens, hw, norm, attn)
    torch.testing.assert_close(
        tokens, expected.detach(), rtol=1e-12, atol=1e-12)


def test_focusing_function_in_place_is_bit_identical():
    x = torch.randn(5, 40, 32) * 3
    scale = torch.randn(1, 1, 32)
    expected = focusing_function(x, scale, 3)
    # In a strided view, as in the attention's key-value projections.
    buffer = torch.cat([x, torch.randn_like(x)], dim=-1)
    out = focusing_function(buffer[..., :32], scale, 3, inplace=True)
    assert out.data_ptr() == buffer.data_ptr()
    assert torch.equal(out, expected)
    assert torch.equal(buffer[..., :32], expected)


@pytest.mark.parametrize('hw', [(1, 3), (1000, 5)])
def test_tokens_to_nchw_in_bands(hw, monkeypatch):
    # 4 tokens a band: one partial band, and many with a partial last one.
    monkeypatch.setattr(cpu_inference, 'TRANSPOSE_CHUNK_ELEMENTS', 96)
    x = torch.randn(2, hw[0] * hw[1], 24)
    expected = x.reshape(2, *hw, 24).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        out = cpu_inference.to_nchw(x, hw)
    assert out.is_contiguous()
    assert torch.equal(out, expected)


def test_even_chunk_size():
    assert cpu_inference.even_chunk_size(3136,
                                         1024) == 784  # 4 chunks, not 3 + 64
    assert cpu_inference.even_chunk_size(1000, 1024) == 1000
    assert cpu_inference.even_chunk_size(1025, 1024) == 513
    assert cpu_inference.even_chunk_size(7, 3) == 3  # 3 + 3 + 1: fewest chunks
    assert cpu_inference.even_chunk_size(5, 0) == 1
    assert cpu_inference.even_chunk_size(0,
                                         4) == 1  # a step for an empty input
