# Copyright (c) OpenMMLab. All rights reserved.
"""Stems, downsampling layers, position encodings (convolutional, and the
resizing of learned position tables) and the MLP."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .depthwise_conv import DepthwiseConv2d
from .frugal_autograd import (channelwise_mlp, normed_linear,
                              recompute_then_linear)
from .tokens import HW, is_exporting, map_to_tokens, tokens_to_map

# How learned position tables are resized to other grids: bilinear as in
# the official PVT run-time code, or bicubic as in the official load-time
# code; both with align_corners=False.
POS_RESIZE_MODES = ('bilinear', 'bicubic')


def check_pos_resize_mode(mode: str) -> None:
    if mode not in POS_RESIZE_MODES:
        raise ValueError(f'pos_resize_mode must be one of {POS_RESIZE_MODES}'
                         f', got {mode!r}')


def resize_pos_embed(pos_embed, src_hw: HW, dst_hw: HW, mode: str):
    """Resize a row-major ``(1, H*W, C)`` position table to another grid.

    Returns the table itself at its native grid, so outputs there are
    bit-exact. ``mode`` is one of :data:`POS_RESIZE_MODES`.
    """
    if not is_exporting() and tuple(src_hw) == tuple(dst_hw):
        return pos_embed
    channels = pos_embed.shape[-1]
    grid = pos_embed.reshape(1, *src_hw, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=dst_hw, mode=mode, align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def pad_to_multiple(x, multiple: int):
    """Zero-pad a ``(B, C, H, W)`` map on the right and bottom so that H and
    W become multiples of ``multiple``."""
    pad_h = -x.shape[-2] % multiple
    pad_w = -x.shape[-1] % multiple
    if is_exporting() or pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def image_to_channels_last(x, multiple: int = 1):
    """A ``(B, C, H, W)`` image zero-padded as by :func:`pad_to_multiple`,
    in channels-last memory.

    oneDNN runs the few-input-channel first convolution of a backbone
    several times faster on a channels-last input (4x4 stride-4 patches at
    1024x1024: ~10x), and its output is then channels-last as well, so the
    tokens are a view of it. Outputs differ from the NCHW path by float
    rounding only.
    """
    return pad_to_multiple(
        x.contiguous(memory_format=torch.channels_last), multiple)


class ConvStem(nn.Module):
    """Two stride-2 3x3 convolutions with BatchNorm, then a LayerNorm on the
    tokens (stride 4 in all).

    The input is zero-padded on the right and bottom to a multiple of 4.
    The second BatchNorm is followed directly by the LayerNorm, as in the
    official L²ViT stem.

    Args:
        in_channels (int): Channels of the input image.
        embed_dims (int): Channels of the output tokens.
    """

    def __init__(self, in_channels: int, embed_dims: int):
        super().__init__()
        hidden = embed_dims // 2
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(hidden, embed_dims, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(embed_dims)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(image_to_channels_last(x, 4))))
        x = self.bn2(self.conv2(x))
        hw = x.shape[-2:]
        return self.norm(map_to_tokens(x)), (hw[0], hw[1])


class ConvDownsample(nn.Module):
    """LayerNorm on the input tokens, then a 2x2 stride-2 convolution.

    An odd height or width is zero-padded by one row or column at the bottom
    or right, after the norm.

    Args:
        in_channels (int): Channels of the input tokens.
        out_channels (int): Channels of the output tokens.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 2, stride=2)

    def forward(self, x, hw: HW):
        x = pad_to_multiple(tokens_to_map(self.norm(x), hw), 2)
        x = self.conv(x)
        hw = x.shape[-2:]
        return map_to_tokens(x), (hw[0], hw[1])


class ConvPosEnc(nn.Module):
    """Conditional position encoding: ``x + DWConv3x3(x)`` on the token map.

    Args:
        channels (int): Channels of the tokens.
        kernel_size (int): Kernel of the depthwise convolution. Default: 3.
    """

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = DepthwiseConv2d(channels, kernel_size)

    def forward(self, x, hw: HW):
        # Added into the conv's output: one map allocated, not two.
        out = map_to_tokens(self.conv(tokens_to_map(x, hw)))
        return out.add_(x)


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``.

    Args:
        channels (int): Input and output channels.
        hidden_channels (int): Channels of the hidden layer.
        backward_chunks (int): With more than 1, training takes the
            backward pass this many groups of hidden channels at a time
            (:func:`.frugal_autograd.channelwise_mlp`): a smaller peak for
            wide hidden layers, with smaller products. Default: 1.
    """

    def __init__(self,
                 channels: int,
                 hidden_channels: int,
                 backward_chunks: int = 1):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden_channels)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_channels, channels)
        self.backward_chunks = backward_chunks

    def forward(self, x, hw=None, norm: Optional[nn.Module] = None):
        """``(B, N, C)`` tokens -> ``(B, N, C)``; each token on its own, so
        the grid ``hw`` is not needed (accepted for a uniform call). With
        ``norm``, the MLP of ``norm(x)``.

        In training only ``x`` and the hidden layer before the GELU are
        kept: the norm and the GELU are recomputed for the gradients of
        ``fc1`` and ``fc2`` (see :mod:`.frugal_autograd`).
        """
        if self.backward_chunks > 1:
            return channelwise_mlp(
                x,
                self.fc1,
                lambda hidden, channels: self.act(hidden),
                self.fc2,
                norm,
                chunks=self.backward_chunks)
        return recompute_then_linear(
            self.act, normed_linear(x, self.fc1, norm), linear=self.fc2)
