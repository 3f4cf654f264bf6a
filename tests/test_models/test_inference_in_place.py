# Copyright (c) OpenMMLab. All rights reserved.
"""In inference the residual branches are added into the tokens in place,
a chunk (or a band of windows) at a time: the same result as the
whole-map computation of training, and the caller's input untouched."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import SMALL_ARCHS as ARCHS

import mmplugin_l2vit
from mmplugin_l2vit.models.layers import embeddings, linear_attention, tokens
from mmplugin_l2vit.models.layers.embeddings import Mlp, add_mlp_branch
from mmplugin_l2vit.models.layers.tokens import adds_in_place, inference_linear
from mmplugin_l2vit.models.layers.window_attention import \
    ShiftedWindowAttention


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
    monkeypatch.setattr(embeddings, 'MLP_CHUNK_ELEMENTS', chunk_elements)
    monkeypatch.setattr(embeddings, 'MLP_MIN_CHUNK_TOKENS', 1)
    for name in ('LINEAR_ATTENTION_CHUNK_ELEMENTS',
                 'FOCUSED_ATTENTION_CHUNK_ELEMENTS'):
        monkeypatch.setattr(linear_attention, name, chunk_elements)
    model = randomised(type_name)
    # Padding everywhere, two images (the sums are per image).
    x = torch.randn(2, 3, 69, 83, dtype=torch.float64)
    before = x.clone()
    with torch.enable_grad():  # autograd on: the whole-map path
        expected = model(x)
    with torch.no_grad():
        outs = model(x)
    assert torch.equal(x, before)
    for out, ref in zip(outs, expected):
        assert not ref.requires_grad or out.data_ptr() != ref.data_ptr()
        torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-12)


def test_in_place_only_in_eager_inference():
    x = torch.randn(1, 10, 8)
    drop_path = nn.Identity().eval()
    with torch.no_grad():
        assert adds_in_place(x, drop_path)
        assert not adds_in_place(x.transpose(1, 2), drop_path)
        assert not adds_in_place(x, nn.Identity().train())
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not adds_in_place(x, drop_path)
    assert not adds_in_place(x, drop_path)  # autograd on


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
    assert tokens.ONEDNN_LINEAR == torch.backends.mkldnn.is_available()


@pytest.mark.parametrize('type_name', sorted(ARCHS))
def test_onednn_inference_matches_aten_in_float32(type_name, monkeypatch):
    model = randomised(type_name).float()
    x = torch.randn(1, 3, 69, 83)
    with torch.no_grad():
        fused = model(x)
        monkeypatch.setattr(tokens, 'ONEDNN_LINEAR', False)
        plain = model(x)
    for out, ref in zip(fused, plain):
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_mlp_branch_in_place_under_bf16_autocast():
    torch.manual_seed(0)
    norm, mlp = nn.LayerNorm(32), Mlp(32, 128)
    drop_path = nn.Identity().eval()
    x = torch.randn(2, 50, 32)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        expected = add_mlp_branch(x, norm, mlp, drop_path)  # autograd on
        with torch.no_grad():
            assert adds_in_place(x, drop_path, norm, mlp, under_autocast=True)
            assert not adds_in_place(x, drop_path, norm, mlp)
            tokens = x.clone()
            out = add_mlp_branch(tokens, norm, mlp, drop_path)
    assert expected.data_ptr() != x.data_ptr()
    assert out.data_ptr() == tokens.data_ptr()  # added in place
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
    norm, drop_path = nn.LayerNorm(16).double(), nn.Identity().eval()
    x = torch.randn(2, hw[0] * hw[1], 16, dtype=torch.float64)
    expected = attn.add_branch(x, hw, norm, drop_path)  # autograd on
    with torch.no_grad():
        tokens = x.clone()
        out = attn.add_branch(tokens, hw, norm, drop_path)
    assert out.data_ptr() == tokens.data_ptr()
    torch.testing.assert_close(out, expected.detach(), rtol=1e-12, atol=1e-12)


def test_focus_in_place_is_the_focusing_function():
    x = torch.randn(5, 40, 32) * 3
    temperature = torch.randn(1, 1, 32)
    expected = linear_attention.focusing_function(x, temperature, 3)
    # In a strided view, as in the attention's key-value projections.
    buffer = torch.cat([x, torch.randn_like(x)], dim=-1)
    out = linear_attention.focus_in_place(buffer[..., :32],
                                          F.softplus(temperature)[0, 0], 3)
    assert out.data_ptr() == buffer.data_ptr()
    assert torch.equal(out, expected)
    assert torch.equal(buffer[..., :32], expected)


@pytest.mark.parametrize('hw', [(1, 3), (1000, 5)])
def test_tokens_to_nchw_in_bands(hw, monkeypatch):
    # 4 tokens a band: one partial band, and many with a partial last one.
    monkeypatch.setattr(tokens, 'TRANSPOSE_CHUNK_ELEMENTS', 96)
    x = torch.randn(2, hw[0] * hw[1], 24)
    expected = x.reshape(2, *hw, 24).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        out = tokens.tokens_to_nchw(x, hw)
    assert out.is_contiguous()
    assert torch.equal(out, expected)


def test_even_chunk_size():
    assert tokens.even_chunk_size(3136, 1024) == 784  # 4 chunks, not 3 + 64
    assert tokens.even_chunk_size(1000, 1024) == 1000
    assert tokens.even_chunk_size(1025, 1024) == 513
    assert tokens.even_chunk_size(7, 3) == 3  # 3 + 3 + 1: fewest chunks
    assert tokens.even_chunk_size(5, 0) == 1
    assert tokens.even_chunk_size(0, 4) == 1  # a step for an empty input
