# Copyright (c) OpenMMLab. All rights reserved.
"""CSWin's locally-enhanced positional encoding (LePE) and the attentions of
FLatten-CSwin that add it."""
from typing import Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F

from .cpu_inference import to_nchw
from .depthwise_conv import DepthwiseConv2d
from .focused_linear_attention import FocusedLinearAttention
from .tokens import HW, map_to_tokens, merge_heads, split_heads
from .window_attention import merge_windows, partition_windows

# (height, width) of attention windows; None spans the whole map.
WindowShape = Tuple[Optional[int], Optional[int]]


def lepe(get_v: nn.Conv2d, v, window: HW):
    """The LePE of ``(num_windows, wh * ww, C)`` values: the depthwise
    convolution ``get_v`` of each window's value map on its own.

    The maps are contiguous NCHW, as in the official code, which keeps the
    LePE bit-exact.
    """
    return map_to_tokens(get_v(to_nchw(v, window)))


class LePEAttention(nn.Module):
    """CSWin's softmax attention with a locally-enhanced positional encoding
    (LePE), within windows of a token map of any size.

    Inside each window, ``softmax(q kᵀ / sqrt(d)) v + get_v(v)``, where
    ``get_v`` is a 3x3 depthwise conv applied to each window's ``v`` map
    separately. A window side of None spans the whole map: ``(None, s)``
    gives CSWin's vertical stripes of width ``s``, ``(s, None)`` its
    horizontal stripes and ``(None, None)`` global attention. A map that is
    not a multiple of a stripe width is zero-padded on the right or bottom
    (``q``, ``k`` and ``v`` alike, so padded keys take part with a zero
    logit and a zero value, unmasked), and the output is cropped back.

    Args:
        embed_dims (int): Channels of ``q``, ``k`` and ``v``.
        num_heads (int): Heads.
        window (tuple[int | None, int | None]): Window (height, width).
    """

    def __init__(self, embed_dims: int, num_heads: int, window: WindowShape):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.get_v = DepthwiseConv2d(embed_dims, 3)

    def window_on(self, hw: HW) -> HW:
        """The window on a map of ``hw`` (None sides span it)."""
        return tuple(side or size for side, size in zip(self.window, hw))

    def forward(self, q, k, v, hw: HW):
        """Attend with ``(B, H*W, C)`` queries, keys and values."""
        window = self.window_on(hw)
        q, k, v = (partition_windows(x, hw, window) for x in (q, k, v))
        out = F.scaled_dot_product_attention(*(split_heads(x, self.num_heads)
                                               for x in (q, k, v)))
        out = merge_heads(out) + lepe(self.get_v, v, window)
        return merge_windows(out, hw, window)


class LePEFocusedLinearAttention(FocusedLinearAttention):
    """FLatten-CSwin's linear attention: FLatten's focused linear attention
    (with its 5x5 head-shared DWC) over the whole map, plus CSWin's LePE, a
    3x3 depthwise conv ``get_v`` on ``v``, added last.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads.
        pos_grid (tuple[int, int]): Grid of the positional encoding (the
            stage's grid at the training resolution).
        pos_resize_mode (str): Interpolation of the positional encoding at
            other grids.
    """

    def __init__(self, embed_dims: int, num_heads: int, pos_grid: HW,
                 pos_resize_mode: str):
        super().__init__(
            embed_dims, num_heads, pos_grid, pos_resize_mode=pos_resize_mode)
        self.get_v = DepthwiseConv2d(embed_dims, 3)

    def forward(self, q, k, v, hw: HW):
        """Attend with ``(B, H*W, C)`` queries, keys and values."""
        return self.attend_frugally(q, k, v, hw) + lepe(self.get_v, v, hw)
