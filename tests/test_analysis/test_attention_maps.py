# Copyright (c) OpenMMLab. All rights reserved.
"""The numbers behind the attention pictures: every drawn row is the row of
the N x N attention matrix that the block's own module applies to its
values, and sums to one up to padding, L²ViT's floor or FLatten's eps."""
import importlib.util
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import SMALL_ARCH

from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.analysis import attention_maps, effective_keys, list_layers
from mmplugin_l2vit.analysis.block_rows import (dwc_branch, focused_rows,
                                                lepe_branch)
from mmplugin_l2vit.analysis.row_math import attention_output, keys_first_rows
from mmplugin_l2vit.models.backbones.flatten_cswin import FLattenCSWin
from mmplugin_l2vit.models.backbones.flatten_pvt import (FLattenPVT,
                                                         PVTFocusedAttention)
from mmplugin_l2vit.models.backbones.flatten_swin import FLattenSwin
from mmplugin_l2vit.models.layers import (FocusedLinearAttention,
                                          focused_attend,
                                          focused_key_value_summary,
                                          focused_normaliser, split_heads)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMALL_WIDTHS = dict(embed_dims=[32, 64, 128, 256], num_heads=[2, 2, 4, 8])


def build(backbone_type, **kwargs):
    model = backbone_type(**kwargs)
    model.eval()
    # Non-zero positional encodings and temperatures, unlike at init.
    for module in model.modules():
        if isinstance(module, FocusedLinearAttention):
            nn.init.normal_(module.positional_encoding, std=.5)
            nn.init.normal_(module.scale, std=.5)
    return model


def attention_inputs(model, image, block):
    """``[(attn, args)]``: the attention modules of ``block`` (two for
    CSwin's cross-shaped stripes) and the arguments they are called with."""
    attns = list(block.attns) if hasattr(block, 'attns') else [block.attn]
    calls = {}
    handles = [
        attn.register_forward_pre_hook(
            lambda module, args: calls.setdefault(module, args))
        for attn in attns
    ]
    with torch.no_grad():
        model(image)
    for handle in handles:
        handle.remove()
    return [(attn, calls[attn]) for attn in attns]


def module_attention_matrix(attn, args, num_heads):
    """The ``(heads, N, N)`` matrix that ``attn`` applies to its values,
    read off the module's own forward pass.

    Queries and keys are frozen, the values are the module's input (or its
    ``v`` argument), the output projection and the convolution branches are
    switched off; the output is then linear in the values with the
    attention weights as coefficients, so the gradient of query ``n``'s
    output summed over a head's channels, with respect to the values, is
    that head's row ``n`` on that head's channels.
    """

    def freeze_qk_pass_v(module, inputs, output):
        channels = inputs[0].shape[-1]
        if module is getattr(attn, 'q', None):
            return output.detach()
        keys = output[..., :output.shape[-1] - channels]
        return torch.cat([keys.detach(), inputs[0]], dim=-1)

    hooks = [(name, freeze_qk_pass_v) for name in ('q', 'kv', 'qkv')]
    hooks += [('proj', lambda module, inputs, output: inputs[0])]
    hooks += [(name, lambda module, inputs, output: torch.zeros_like(output))
              for name in ('dwc', 'get_v')]
    handles = [
        getattr(attn, name).register_forward_hook(hook)
        for name, hook in hooks if hasattr(attn, name)
    ]
    if len(args) == 4:
        q, k, values, hw = args
        q, k = q.detach(), k.detach()
    else:
        values, *rest = args
    values = values.detach().requires_grad_()
    with torch.enable_grad():
        out = attn(q, k, values, hw) if len(args) == 4 else attn(
            values, *rest)
        # Output token n's channels, one n per batched backward pass.
        num_tokens = out.shape[1]
        one_hot = torch.eye(num_tokens)[:, None, :, None].expand(
            -1, *out.shape)
        grad, = torch.autograd.grad(
            out, values, one_hot, is_grads_batched=True)
    for handle in handles:
        handle.remove()
    heads = grad[:, 0].unflatten(-1, (num_heads, -1))
    # Each head's channels all carry the same coefficient.
    assert torch.allclose(heads, heads[..., :1], atol=1e-6)
    return heads[..., 0].permute(2, 0, 1)


def check_layer(model, image, layer, points, atol=1e-5):
    maps = attention_maps(model, image, layer, points)
    stage, index = (int(i) for i in layer.split('.'))
    matrices = []
    for attn, args in attention_inputs(model, image,
                                       model.stages[stage].blocks[index]):
        matrix = module_attention_matrix(attn, args, attn.num_heads)
        if hasattr(attn, 'temperature'):
            # L²ViT scales each head's kᵀv by its temperature.
            matrix = matrix / attn.temperature.view(-1, 1, 1)
        matrices.append(matrix)
    matrix = torch.cat(matrices)
    width = maps.grid[1]
    for i, (row, col) in enumerate(maps.queries):
        expected = matrix[:, row * width + col]
        torch.testing.assert_close(
            maps.rows[i].flatten(1), expected, atol=atol, rtol=1e-4)
    sums = maps.rows.flatten(2).sum(-1)
    torch.testing.assert_close(sums + maps.unattended,
                               torch.ones_like(sums))
    return maps


def assert_rows_rebuild_output(maps, heads, v, local, expected):
    """The rows of ``heads`` over the ``(1, N, C)`` values ``v`` plus the
    convolution branch's ``local`` output give the attention's
    ``expected`` output at every query."""
    for i, (row, col) in enumerate(maps.queries):
        index = row * maps.grid[1] + col
        rows = maps.rows[i, heads].flatten(1)[None]
        torch.testing.assert_close(
            attention_output(rows, v[0])[0] + local[0, index],
            expected[0, index],
            atol=1e-5,
            rtol=1e-4)


def test_l2vit_window_rows_match_module_and_report_padding():
    model = build(L2ViT, arch=SMALL_ARCH)
    image = torch.randn(1, 3, 72, 60)
    # Stage 1 is 18 x 15 tokens: windows of 7 pad it to 21 x 21, so the
    # query at the bottom right has zero-padded keys, the one at the top
    # left has none.
    maps = check_layer(model, image, '0.0', [(0, 0), (59, 71)])
    assert maps.grid == (18, 15)
    assert maps.kind == 'window softmax'
    assert maps.unattended[0].abs().max() < 1e-6
    assert (maps.unattended[1] > 1e-3).all()
    # Keys outside the query's 7 x 7 window get nothing.
    assert maps.rows[0, :, 7:].abs().max() == 0
    assert maps.rows[0, :, :, 7:].abs().max() == 0
    check_layer(model, image, '1.0', [(30, 40)])


def test_l2vit_linear_rows_match_module_and_report_the_floor():
    image = torch.randn(1, 3, 72, 60)
    model = build(L2ViT, arch=SMALL_ARCH)
    maps = check_layer(model, image, '1.1', [(5, 5), (40, 30)])
    assert maps.kind == 'ReLU linear attention + LCM'
    assert 'floor' in maps.unattended_reason
    # With random weights q . sum(k) often stays below the floor of 100.
    assert (maps.unattended > 0.01).any()
    assert (maps.unattended > -1e-6).all()
    # Without the floor, rows are normalised.
    model = build(L2ViT, arch=SMALL_ARCH, denominator_floor=0.)
    maps = check_layer(model, image, '1.1', [(5, 5), (40, 30)])
    assert maps.unattended.abs().max() < 1e-5
    assert maps.local_name == 'LCM'
    # The LCM's two 7x7 depthwise convs reach 6 tokens on every side.
    row, col = maps.queries[0]
    assert maps.local[0].sum() == pytest.approx(1.)
    local = maps.local[0].clone()
    local[max(row - 6, 0):row + 7, max(col - 6, 0):col + 7] = 0
    assert local.abs().max() == 0
    assert ((maps.local_share > 0) & (maps.local_share < 1)).all()


@pytest.mark.parametrize('backbone_type', [FLattenPVT, FLattenSwin])
def test_focused_rows_match_module(backbone_type):
    model = build(
        backbone_type,
        arch=dict(SMALL_WIDTHS, depths=[1, 1, 1, 1]))
    image = torch.randn(1, 3, 64, 48)
    maps = check_layer(model, image, '1.0', [(0, 0), (30, 40)])
    assert maps.kind == 'focused linear attention + DWC'
    # Only the normaliser's N * 1e-6 is missing.
    assert maps.unattended.abs().max() < 1e-4
    # The DWC's kernels, shared by all heads, summed over channels.
    attn = model.stages[1].blocks[0].attn
    row, col = maps.queries[1]
    kernel = attn.dwc.weight.abs().sum((0, 1))
    expected = torch.zeros(maps.grid)
    expected[row - 2:row + 3, col - 2:col + 3] = kernel / kernel.sum()
    torch.testing.assert_close(maps.local[1], expected)
    # The rows and the DWC make up what the attention computes.
    (_, (x, hw)), = attention_inputs(model, image, model.stages[1].blocks[0])
    if backbone_type is FLattenPVT:
        assert isinstance(attn, PVTFocusedAttention)
        q = attn.q(x)
        k, v = attn.kv(x).chunk(2, dim=-1)
    else:
        q, k, v = attn.qkv(x).chunk(3, dim=-1)
    with torch.no_grad():
        assert_rows_rebuild_output(maps, slice(None), v,
                                   dwc_branch(attn, v, hw),
                                   attn.attend(q, k, v, hw))


def test_swin_shifted_window_rows_match_module():
    model = build(
        FLattenSwin,
        arch=dict(SMALL_WIDTHS, depths=[1, 1, 2, 1], window_size=4))
    image = torch.randn(1, 3, 160, 144)
    layers = list_layers(model)
    assert layers['2.1'] == 'shifted-window softmax'
    # Stage 3 is 10 x 9 tokens: padded to 12 x 12 and shifted by 2, with
    # queries in a wrapped-around corner window and in the middle.
    maps = check_layer(model, image, '2.1', [(143, 159), (0, 0), (70, 80)])
    assert (maps.unattended[0] > 1e-3).all()
    # Stage 4 is 4 x 4 tokens at 120 x 112: one window of its own size.
    check_layer(model, torch.randn(1, 3, 120, 112), '3.0', [(100, 100)])


def test_cswin_rows_match_module():
    model = build(
        FLattenCSWin,
        arch=dict(SMALL_WIDTHS, depths=[1, 1, 1, 1], split_size=5))
    image = torch.randn(1, 3, 128, 96)
    layers = list_layers(model)
    assert layers['0.0'] == 'focused linear attention + DWC + LePE'
    assert layers['2.0'] == 'cross-shaped stripe softmax + LePE'
    assert layers['3.0'] == 'global softmax + LePE'
    for layer, points in (('1.0', [(10, 90)]), ('2.0', [(95, 127), (0, 0)]),
                          ('3.0', [(50, 50)])):
        maps = check_layer(model, image, layer, points)
        assert maps.local[0].sum() == pytest.approx(1.)
        block = model.stages[int(layer[0])].blocks[0]
        first_head = 0
        # Each branch's rows and convolutions make up its output.
        for attn, (q, k, v, hw) in attention_inputs(model, image, block):
            heads = slice(first_head, first_head + attn.num_heads)
            first_head += attn.num_heads
            with torch.no_grad():
                local = lepe_branch(attn, v, hw)
                if isinstance(attn, FocusedLinearAttention):
                    local = local + dwc_branch(attn, v, hw)
                assert_rows_rebuild_output(maps, heads, v, local,
                                           attn(q, k, v, hw))
        if layer == '2.0':
            # Stage 3 is 8 x 6 tokens: stripes of 5 are padded, and the
            # bottom right query's stripes both hold padding.
            assert maps.rows.shape[1] == 4
            assert (maps.unattended[0] > 1e-3).all()
            assert maps.unattended[1].abs().max() < 1e-6


def test_compare_variants_sum_to_one():
    model = build(FLattenSwin, arch=dict(SMALL_WIDTHS, depths=[1, 1, 1, 1]))
    maps = attention_maps(
        model, torch.randn(1, 3, 64, 64), '0.0', [(32, 32)], compare=True)
    assert list(maps.variants) == ['softmax', 'ReLU linear', 'focused']
    for rows in maps.variants.values():
        torch.testing.assert_close(
            rows.flatten(2).sum(-1), torch.ones(1, 2), atol=1e-4, rtol=0)
    torch.testing.assert_close(maps.variants['focused'], maps.rows)


def test_effective_keys():
    # A uniform row spreads over all 256 keys, a one-hot one over one.
    rows = torch.zeros(2, 256)
    rows[0] = 1
    rows[1, 3] = 1
    torch.testing.assert_close(effective_keys(rows), torch.tensor([256., 1.]))


def test_l2vit_enhanced_variant_mixes_attention_and_lcm():
    model = build(L2ViT, arch=SMALL_ARCH)
    maps = attention_maps(
        model, torch.randn(1, 3, 64, 64), '0.1', [(10, 50)], compare=True)
    share = maps.local_share[0]
    torch.testing.assert_close(
        maps.variants['enhanced (+ LCM)'][0],
        (1 - share) * maps.rows[0] + share * maps.local[0])


def test_bad_layer_and_query_list_the_valid_ones():
    model = build(L2ViT, arch=SMALL_ARCH)
    image = torch.randn(1, 3, 64, 48)
    with pytest.raises(ValueError, match=r'0\.0 \(window softmax\), 0\.1'):
        attention_maps(model, image, '4.0', [(0, 0)])
    with pytest.raises(ValueError, match=r'X in \[0, 47\] and Y in \[0, 63'):
        attention_maps(model, image, '0.0', [(48, 10)])
    with pytest.raises(ValueError, match='Linear layers of L2ViT: 0.1, 1.1'):
        attention_maps(model, image, '0.0', [(0, 0)], compare=True)


def load_tool(name):
    path = osp.join(REPO, 'tools', 'analysis_tools', name + '.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_draws_and_refuses_bad_arguments(tmp_path, capsys):
    tool = load_tool('visualize_attention')
    image = tmp_path / 'scene.bmp'
    cv2.imwrite(str(image), np.full((40, 56, 3), 128, np.uint8))
    out = tmp_path / 'attention.png'
    tool.main([
        'FLattenPVTv2:b0', '--img',
        str(image), '--layer', '1.1', '--query', '20,30', '--query', '0,0',
        '--shape', '64', '--compare', '--out',
        str(out)
    ])
    assert cv2.imread(str(out)) is not None
    printed = capsys.readouterr().out
    assert 'random weights' in printed
    assert 'row sums' in printed
    with pytest.raises(SystemExit):
        tool.main(['L2ViT', '--img', str(image), '--layer', '9.9',
                   '--query', '1,1', '--out', str(out)])
    assert 'valid layers (STAGE.BLOCK) are: 0.0' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(['L2ViT', '--img', str(image), '--layer', '0.0',
                   '--query', '56,0', '--out', str(out)])
    assert 'X in [0, 55]' in capsys.readouterr().err


def test_linear_rows_do_not_depend_on_the_key_chunk():
    attn = build(FLattenPVT, arch=dict(SMALL_WIDTHS, depths=[1, 1, 1, 1])
                 ).stages[0].blocks[0].attn
    q, k = torch.randn(3, 32), torch.randn(50, 32)
    # Keys summarised 7 at a time (8 chunks, the last short) or all at once.
    for chunk in (7, 50):
        rows = keys_first_rows(
            split_heads(attn.focus(q[None])[0], 2),
            split_heads(attn.focus(k[None])[0], 2),
            lambda keys, values: focused_key_value_summary(keys, values, 50),
            focused_normaliser, focused_attend, chunk)
        torch.testing.assert_close(rows, focused_rows(attn, q, k))
