# Copyright (c) OpenMMLab. All rights reserved.
"""Softmax attention inside non-overlapping local windows."""
import torch.nn as nn
import torch.nn.functional as F

from .tokens import HW


def window_partition(x, window_size: int):
    """``(B, H, W, C)`` with H, W multiples of ``window_size`` ->
    ``(B * num_windows, window_size**2, C)``, windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window_size, window_size,
               width // window_size, window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size,
                                               channels)


def window_reverse(windows, window_size: int, hw: HW):
    """Inverse of :func:`window_partition` for a padded size ``hw``."""
    height, width = hw
    channels = windows.shape[-1]
    x = windows.view(-1, height // window_size, width // window_size,
                     window_size, window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


class UnmaskedWindowAttention(nn.Module):
    """Multi-head softmax self-attention within non-overlapping windows of a
    token map of any size, with scale ``head_dims ** -0.5`` and no relative
    position bias.

    The map is zero-padded on the right and bottom to a multiple of the
    window size and the padded tokens take part as keys and values without a
    mask, as in the official L²ViT; the output is cropped back.

    Args:
        embed_dims (int): Channels of the tokens.
        num_heads (int): Number of heads.
        window_size (int): Side of the square windows.
    """

    def __init__(self, embed_dims: int, num_heads: int, window_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def attend(self, windows):
        """Attend within ``(num_windows, window_tokens, C)`` windows."""
        num_windows, num_tokens, channels = windows.shape
        qkv = self.qkv(windows).view(num_windows, num_tokens, 3,
                                     self.num_heads,
                                     self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(num_windows, num_tokens, channels)
        return self.proj(out)

    def forward(self, x, hw: HW):
        batch, _, channels = x.shape
        height, width = hw
        size = self.window_size
        x = x.view(batch, height, width, channels)
        pad_h, pad_w = -height % size, -width % size
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        padded_hw = (height + pad_h, width + pad_w)
        windows = self.attend(window_partition(x, size))
        x = window_reverse(windows, size, padded_hw)
        if pad_h or pad_w:
            x = x[:, :height, :width]
        return x.reshape(batch, height * width, channels)
