# Copyright (c) OpenMMLab. All rights reserved.
"""FLatten's focused linear attention, computed keys-first in O(N d²).

Per head, with the focused features φ_p(q), φ_p(k + positional encoding):

    out_n = (q_n @ mean_m k_mᵀ v_m) / (q_n . mean_m k_m + EPS) + DWC(v)_n

never forming the N x N matrix; the depthwise convolution of the values
restores the rank the low-rank ``kᵀv`` loses. :class:`FocusedLinearAttention`
composes the steps below in this order; the CPU's in-place inference
(:mod:`.cpu_inference`) calls the same steps on chunks of tokens.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .depthwise_conv import DepthwiseConv2d
from .embeddings import check_pos_resize_mode, resize_pos_embed
from .float32_sums import sums_in_float32
from .frugal_autograd import recompute, recompute_then_linear
from .tokens import (HW, map_to_tokens, merge_heads, split_heads,
                     token_product, tokens_to_map)

# Keeps the features positive before the power of the focusing function and
# the normaliser away from zero, as in the official code.
EPS = 1e-6


@sums_in_float32(keep_float32=True)
def focusing_function(x: torch.Tensor,
                      scale: torch.Tensor,
                      focusing_factor: float,
                      inplace: bool = False) -> torch.Tensor:
    """FLatten's φ_p on ``(..., C)`` features, norms over all C channels.

    ``x' = (ReLU(x) + EPS) / softplus(scale)``;
    ``φ_p(x) = |x'| * x'^p / |x'^p|``.

    Args:
        x (Tensor): Projected queries or keys.
        scale (Tensor): The learned temperature before its softplus,
            broadcasting to ``x``.
        focusing_factor (float): The power p.
        inplace (bool): Compute in ``x``'s own memory (inference only:
            autograd needs the intermediate values); same operations in
            the same order, so bit-identical.
    """
    out = x if inplace else None
    x = F.relu(x, inplace=inplace)
    x = torch.div(torch.add(x, EPS, out=out), F.softplus(scale), out=out)
    norm = x.norm(dim=-1, keepdim=True)
    x = torch.pow(x, focusing_factor, out=out)
    x = torch.div(x, x.norm(dim=-1, keepdim=True), out=out)
    return torch.mul(x, norm, out=out)


def focused_key_value_summary(k: torch.Tensor, v: torch.Tensor,
                              num_tokens: int):
    """``(mean_m k_mᵀ v_m, mean_m k_m)`` over the ``num_tokens`` keys,
    ``(..., d, d)`` and ``(..., d, 1)``. Given a chunk of the keys and
    values, it returns the chunk's share: the summaries of the chunks add
    up to the whole's.

    Args:
        k (Tensor): Focused keys, ``(..., n, d)``.
        v (Tensor): Values, ``(..., n, d)``.
        num_tokens (int): Keys in all (``n`` unless ``k`` is a chunk).
    """
    # Both scaled by 1/sqrt(n) before the product, as in the official code
    # (bit-identical there).
    scale = num_tokens**-0.5
    kv = token_product(k * scale, v * scale)
    # A CPU mean is this sum divided by n: the same bits.
    return kv, k.sum(dim=-2, keepdim=True).transpose(-2, -1) / num_tokens


def focused_normaliser(q: torch.Tensor,
                       key_mean: torch.Tensor) -> torch.Tensor:
    """``1 / (q_n . mean_m k_m + EPS)`` per query, ``(..., N, 1)``."""
    return 1 / (q @ key_mean + EPS)


def focused_attend(q: torch.Tensor,
                   kv: torch.Tensor,
                   normaliser: torch.Tensor,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(q @ kv) * normaliser``, ``(..., N, d)``, into ``out`` if given
    (inference only)."""
    return torch.mul(torch.matmul(q, kv, out=out), normaliser, out=out)


@sums_in_float32
def focused_linear_attention(q, k, v):
    """FLatten's linear attention on ``(B, heads, N, d)`` focused ``q``,
    ``k`` and values ``v``: the summary, normaliser and attend steps,
    summed in float32."""
    kv, key_mean = focused_key_value_summary(k, v, k.shape[-2])
    return focused_attend(q, kv, focused_normaliser(q, key_mean))


def rank_restoration(dwc: DepthwiseConv2d, v: torch.Tensor, hw: HW,
                     num_heads: int) -> torch.Tensor:
    """FLatten's depthwise convolution of the ``(B, N, C)`` values -> the
    same shape: one ``C // num_heads``-channel kernel per channel of a
    head, shared by all heads (as in the official code).

    Run as one convolution over all ``C`` channels of the token map, the
    kernel repeated per head: the same per-channel arithmetic as a
    convolution of each head's map, with no per-head copy of the values.
    """
    return map_to_tokens(dwc(tokens_to_map(v, hw), shared_by=num_heads))


class FocusedLinearAttention(nn.Module):
    """FLatten's focused linear attention, without the host's projections.

    Given projected ``q`` (``(B, N, C)``) and ``k``, ``v`` (``(B, N, C)``)
    on an ``H x W`` grid, :meth:`attend` adds the learned positional
    encoding to ``k`` only, applies the focusing function, runs
    :func:`focused_linear_attention` per head and adds the rank-restoring
    depthwise convolution of ``v``. Hosts (PVT, Swin, CSwin) subclass it
    and add their projections.

    Parameter names are those of the official checkpoints, which the
    converters and released weights rely on: ``scale`` is the focusing
    temperature before its softplus (the ``scale`` of
    :func:`focusing_function`), ``positional_encoding`` the keys' learned
    position table and ``dwc`` the rank-restoring convolution.

    The positional encoding is stored at the grid it was trained on and
    resized to the live grid at run time with ``pos_resize_mode``; at the
    native grid it is used as is.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads; ``head_dims = C // num_heads``.
        pos_grid (tuple[int, int]): Grid of the positional encoding.
        focusing_factor (float): The power p. Default: 3.
        kernel_size (int): Kernel of the depthwise conv. Default: 5.
        pos_resize_mode (str): Interpolation mode for the positional
            encoding at other grids. Default: ``'bilinear'``.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 pos_grid: HW,
                 focusing_factor: float = 3,
                 kernel_size: int = 5,
                 pos_resize_mode: str = 'bilinear'):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                             f'num_heads {num_heads}')
        check_pos_resize_mode(pos_resize_mode)
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.pos_grid = tuple(pos_grid)
        self.focusing_factor = focusing_factor
        self.pos_resize_mode = pos_resize_mode
        self.scale = nn.Parameter(torch.zeros(1, 1, embed_dims))
        self.positional_encoding = nn.Parameter(
            torch.zeros(1, pos_grid[0] * pos_grid[1], embed_dims))
        self.dwc = DepthwiseConv2d(self.head_dims, kernel_size)

    def key_position(self, hw: HW) -> torch.Tensor:
        """The keys' positional encoding on the grid ``hw``,
        ``(1, H*W, C)``."""
        return resize_pos_embed(self.positional_encoding, self.pos_grid, hw,
                                self.pos_resize_mode)

    def focus(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """:func:`focusing_function` with this layer's temperature and
        power."""
        return focusing_function(x, self.scale, self.focusing_factor, inplace)

    def attend(self, q, k, v, hw: HW):
        """Return ``(B, N, C)``: the attention plus the DWC of ``v``.

        ``k`` and ``v`` must be on the ``hw`` grid (no spatial reduction).
        """
        k = k + self.key_position(hw)
        q, k = (split_heads(self.focus(t), self.num_heads) for t in (q, k))
        restored = rank_restoration(self.dwc, v, hw, self.num_heads)
        out = focused_linear_attention(q, k, split_heads(v, self.num_heads))
        # The sum is laid out as its first operand, the token-major DWC
        # output, so merging its heads is a view, not a copy.
        return merge_heads(split_heads(restored, self.num_heads) + out)

    def attention_parameters(self):
        """What :meth:`attend` reads besides its inputs."""
        return self.scale, self.positional_encoding, self.dwc

    def attend_frugally(self, q, k, v, hw: HW):
        """:meth:`attend`, keeping only ``q``, ``k`` and ``v`` in training:
        the focusing function, the sums and products and the DWC are
        recomputed for the gradients (see :mod:`.frugal_autograd`)."""
        return recompute(
            lambda *qkv: self.attend(*qkv, hw),
            q,
            k,
            v,
            owners=self.attention_parameters())

    def attend_and_project(self, q, k, v, hw: HW):
        """``proj(attend(q, k, v, hw))`` for a host with a ``proj`` layer:
        as :meth:`attend_frugally`, and ``proj``'s input is not kept
        either."""
        return recompute_then_linear(
            lambda *qkv: self.attend(*qkv, hw),
            q,
            k,
            v,
            linear=self.proj,
            owners=self.attention_parameters())

    def qkv_projection(self):
        """``(weight, bias)`` of the host's query, key and value projections
        as one ``C -> 3C`` layer (``[q, k, v]`` along the outputs; set by
        the host)."""
        raise NotImplementedError
