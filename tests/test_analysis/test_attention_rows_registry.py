# Copyright (c) OpenMMLab. All rights reserved.
"""A new block kind is drawn by registering its rows: nothing in the picture
code names it."""
import pytest
import torch
import torch.nn as nn

from mmplugin_l2vit.analysis import (AttentionRows, Rows, attention_maps,
                                     attention_rows_of, list_layers,
                                     register_attention_rows)


class ToyAttention(nn.Module):
    """Single-head global softmax attention over ``(B, N, C)`` tokens."""

    def __init__(self, channels):
        super().__init__()
        self.qkv = nn.Linear(channels, 3 * channels)

    def weights(self, x):
        q, k, _ = self.qkv(x).chunk(3, dim=-1)
        return (q @ k.transpose(-2, -1) * q.shape[-1]**-0.5).softmax(-1)

    def forward(self, x, hw):
        _, _, v = self.qkv(x).chunk(3, dim=-1)
        return self.weights(x) @ v


class ToyBlock(nn.Module):

    def __init__(self, channels):
        super().__init__()
        self.attn = ToyAttention(channels)

    def forward(self, x, hw):
        return x + self.attn(x, hw)


class ToySubBlock(ToyBlock):
    """Drawn as its registered base class."""


class UndrawnBlock(nn.Module):

    def forward(self, x, hw):
        return x


class ToyStage(nn.Module):

    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class ToyBackbone(nn.Module):
    """A 4x4 patch embedding, then one stage of blocks."""

    def __init__(self, channels=8):
        super().__init__()
        self.embed = nn.Conv2d(3, channels, 4, stride=4)
        self.stages = nn.ModuleList([
            ToyStage(
                [ToyBlock(channels),
                 UndrawnBlock(),
                 ToySubBlock(channels)])
        ])

    def forward(self, image):
        x = self.embed(image)
        hw = tuple(x.shape[-2:])
        x = x.flatten(2).transpose(1, 2)
        for block in self.stages[0].blocks:
            x = block(x, hw)
        return x


@register_attention_rows(ToyBlock)
class ToyRows(AttentionRows):
    kind = 'toy softmax'

    def modules(self):
        return [self.block.attn]

    def rows(self, calls, query_indices, compare):
        (x, _), _ = calls[self.block.attn]
        rows = self.block.attn.weights(x[0])[query_indices][:, None]
        return Rows(rows, 1 - rows.sum(-1))


def test_registered_block_is_drawn_and_others_are_skipped():
    model = ToyBackbone().eval()
    assert list_layers(model) == {'0.0': 'toy softmax', '0.2': 'toy softmax'}
    image = torch.randn(1, 3, 24, 32)
    maps = attention_maps(model, image, '0.2', [(0, 0), (31, 23)])
    assert maps.grid == (6, 8)
    assert maps.queries == [(0, 0), (5, 7)]
    # The rows of the N x N matrix at the block's input.
    with torch.no_grad():
        x = model.embed(image).flatten(2).transpose(1, 2)
        x = model.stages[0].blocks[0](x, (6, 8))
        matrix = model.stages[0].blocks[2].attn.weights(x[0])
    torch.testing.assert_close(maps.rows[:, 0].flatten(1), matrix[[0, 47]])
    assert maps.unattended.abs().max() < 1e-6
    with pytest.raises(ValueError, match=r"unknown layer '0\.1'.*0\.0 \(toy"):
        attention_maps(model, image, '0.1', [(0, 0)])
    with pytest.raises(ValueError, match='compare needs a linear-attention'):
        attention_maps(model, image, '0.0', [(0, 0)], compare=True)


def test_registration_is_checked():
    assert isinstance(attention_rows_of(ToySubBlock(4)), ToyRows)
    assert attention_rows_of(UndrawnBlock()) is None
    with pytest.raises(KeyError, match='ToyBlock are registered already'):
        register_attention_rows(ToyBlock)(ToyRows)

    def never_drawn(block):
        return None

    # A factory may decline a block; force replaces a registration.
    register_attention_rows(ToyBlock, force=True)(never_drawn)
    try:
        assert attention_rows_of(ToyBlock(4)) is None
    finally:
        register_attention_rows(ToyBlock, force=True)(ToyRows)
    with pytest.raises(ValueError, match='no blocks .* registered'):
        list_layers(nn.Module())
