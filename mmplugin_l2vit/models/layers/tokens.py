# Copyright (c) OpenMMLab. All rights reserved.
"""Conversions between token sequences and feature maps.

Tokens are ``(B, N, C)`` with ``N = H * W`` in row-major order. The map view
of a contiguous token tensor is a channels-last ``(B, C, H, W)`` tensor that
shares its memory, so convolutions on it need no copy.
"""
from typing import Tuple

import torch

HW = Tuple[int, int]


def tokens_to_map(x: torch.Tensor, hw: HW) -> torch.Tensor:
    """``(B, H*W, C)`` tokens -> ``(B, C, H, W)`` map (a view)."""
    batch, _, channels = x.shape
    return x.transpose(1, 2).view(batch, channels, *hw)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` map -> ``(B, H*W, C)`` tokens."""
    return x.flatten(2).transpose(1, 2)


def tokens_to_nchw(x: torch.Tensor, hw: HW) -> torch.Tensor:
    """``(B, H*W, C)`` tokens -> a contiguous ``(B, C, H, W)`` output."""
    batch, _, channels = x.shape
    return x.view(batch, *hw, channels).permute(0, 3, 1, 2).contiguous()
