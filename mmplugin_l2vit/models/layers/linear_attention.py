# Copyright (c) OpenMMLab. All rights reserved.
"""Linear attention, computed keys-first in O(N d²).

Both papers' attentions are kernelised: with non-negative features q, k,

    out_n = sum_m (q_n . k_m) v_m / normaliser(q_n, k)

and both are evaluated keys-first (``q @ (kᵀ v)``), never forming the N x N
matrix. The kernels below share that core and its precision policy: the
sums over all tokens run in at least float32, also under autocast, since at
detection sizes they overflow half precision. They differ only where the
official models differ, and keep each model's order of operations for the
closest fp32 agreement:

- :func:`relu_linear_attention` (L²ViT): ReLU features, a per-head scale of
  ``kᵀv`` and the normaliser ``max(q . sum(k), floor)``;
- :func:`focused_linear_attention` (FLatten): features from
  :func:`focusing_function`, ``kᵀv`` and the normaliser taken as means over
  the keys, plus ``1e-6``.

This module also holds L²ViT's LGA attention and Local Concentration Module
and FLatten's attention core (:class:`FocusedLinearAttention`).
"""
import functools
import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tokens import (FOCUSED_ATTENTION_CHUNK_ELEMENTS, HW,
                     LINEAR_ATTENTION_CHUNK_ELEMENTS, adds_in_place,
                     even_chunk_size, inference_linear, is_exporting,
                     map_to_tokens, tokens_to_map)


def _sums_in_float32(kernel=None, *, keep_float32: bool = False):
    """Run ``kernel(x, ...)`` with its tensor arguments in at least float32
    and autocast off. The result comes back in the dtype of the values
    (``kernel(q, k, v, ...)``), or in the float32 it was computed in with
    ``keep_float32`` (for features that feed another such kernel)."""
    if kernel is None:
        return functools.partial(_sums_in_float32, keep_float32=keep_float32)

    @functools.wraps(kernel)
    def wrapper(*args, **kwargs):
        dtype = torch.promote_types(args[0].dtype, torch.float32)
        with torch.autocast(device_type=args[0].device.type, enabled=False):
            out = kernel(
                *[
                    a.to(torch.promote_types(a.dtype, dtype)) if isinstance(
                        a, torch.Tensor) else a for a in args
                ], **kwargs)
        return out if keep_float32 else out.to(args[2].dtype)

    return wrapper


@_sums_in_float32
def relu_linear_attention(q, k, v, kv_scale, denominator_floor: float):
    """L²ViT's linear attention.

    ``out_n = kv_scale * sum_m (q_n . k_m) v_m / max(q_n . sum_m k_m, floor)``

    Args:
        q (Tensor): Non-negative query features, ``(B, heads, N, d)``.
        k (Tensor): Non-negative key features, ``(B, heads, N, d)``.
        kv_scale (Tensor): Per-head scale of ``kᵀv``, ``(heads, 1, 1)``.
        v (Tensor): Values, ``(B, heads, N, d)``.
        denominator_floor (float): Lower bound of the normaliser (an
            absolute floor, not an epsilon).
    """
    key_sum = k.sum(dim=-2, keepdim=True).transpose(-2, -1)
    denominator = torch.clamp(q @ key_sum, min=denominator_floor)
    kv = (k.transpose(-2, -1) @ v) * kv_scale
    return (q @ kv) / denominator


@_sums_in_float32
def focused_linear_attention(q, k, v, eps: float = 1e-6):
    """FLatten's linear attention with mean-normalised key statistics.

    ``out_n = (q_n @ mean_m k_mᵀ v_m) / (q_n . mean_m k_m + eps)``

    Args:
        q (Tensor): Focused query features, ``(B, heads, N, d)``.
        k (Tensor): Focused key features, ``(B, heads, n, d)``.
        v (Tensor): Values, ``(B, heads, n, d)``.
        eps (float): Added to the normaliser. Default: 1e-6.
    """
    n = k.shape[-2]
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + eps)
    kv = (k.transpose(-2, -1) * n**-0.5) @ (v * n**-0.5)
    return q @ kv * z


@_sums_in_float32(keep_float32=True)
def focusing_function(x, temperature, focusing_factor: float):
    """FLatten's φ_p on ``(B, N, C)`` features, norms over all C channels.

    ``x' = (ReLU(x) + 1e-6) / softplus(temperature)``;
    ``φ_p(x) = |x'| * x'^p / |x'^p|``.
    """
    x = (F.relu(x) + 1e-6) / F.softplus(temperature)
    norm = x.norm(dim=-1, keepdim=True)
    x = x**focusing_factor
    return (x / x.norm(dim=-1, keepdim=True)) * norm


def focus_in_place(x, softplus_temperature, focusing_factor: float):
    """:func:`focusing_function` computed in ``x``'s own memory, for the
    in-place inference paths (no autograd; the same operations in the same
    order, so bit-identical); ``softplus_temperature`` is
    ``softplus(temperature)`` with the shape of ``x``'s last dimension."""
    x.clamp_(min=0).add_(1e-6).div_(softplus_temperature)
    norm = x.norm(dim=-1, keepdim=True)
    x.pow_(focusing_factor)
    return x.div_(x.norm(dim=-1, keepdim=True)).mul_(norm)


def split_qkv_projection(weight, bias):
    """``((q_weight, q_bias), (kv_weight, kv_bias))``: views of a fused
    ``C -> 3C`` projection, for passes that need the queries apart from the
    keys and values."""
    channels = weight.shape[1]
    q_weight, kv_weight = weight.split([channels, 2 * channels])
    q_bias, kv_bias = bias.split([channels, 2 * channels])
    return (q_weight, q_bias), (kv_weight, kv_bias)


class ReLULinearAttention(nn.Module):
    """Multi-head linear attention with a ReLU feature map (L²ViT's LGA).

    The normaliser ``q . sum(k)`` is clamped from below at
    ``denominator_floor`` (100 in the official model), which is an absolute
    floor rather than an epsilon: rows whose normaliser is smaller sum to
    less than one. A learnable per-head temperature scales ``kᵀv``.

    Args:
        embed_dims (int): Channels of the tokens.
        num_heads (int): Number of heads.
        denominator_floor (float): Lower bound of the normaliser.
            Default: 100.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 denominator_floor: float = 100.):
        super().__init__()
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.denominator_floor = denominator_floor
        self.temperature = nn.Parameter(
            torch.full((num_heads, 1, 1), self.head_dims**-0.5))
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x):
        batch, num_tokens, channels = x.shape
        qkv = self.qkv(x).view(batch, num_tokens, 3, self.num_heads,
                               self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = relu_linear_attention(q.relu(), k.relu(), v, self.temperature,
                                    self.denominator_floor)
        out = out.transpose(1, 2).reshape(batch, num_tokens, channels)
        return self.proj(out)

    def add_branch(self, x, norm: nn.Module, drop_path: nn.Module):
        """``x + drop_path(self(norm(x)))``.

        In inference (see :func:`~.tokens.adds_in_place`) it runs in two
        passes over chunks of tokens, added into ``x`` in place: the first
        sums ``kᵀv`` and ``k`` from the key and value projections, the
        second projects the queries and attends. No whole-map ``qkv`` or
        per-head copy exists; the sums differ from one product over all
        tokens by float rounding only.
        """
        if not adds_in_place(x, drop_path, norm, self):
            return x + drop_path(self(norm(x)))
        channels = x.shape[-1]
        heads, head_dims = self.num_heads, self.head_dims
        (q_weight, q_bias), (kv_weight, kv_bias) = split_qkv_projection(
            self.qkv.weight, self.qkv.bias)
        chunk = even_chunk_size(
            x.shape[1], LINEAR_ATTENTION_CHUNK_ELEMENTS // (2 * channels))
        for tokens in x:  # one image at a time
            parts = tokens.split(chunk)
            kv = x.new_zeros(heads, head_dims, head_dims)
            key_sum = x.new_zeros(heads, head_dims, 1)
            for part in parts:
                k, v = inference_linear(norm(part), kv_weight, kv_bias).view(
                    -1, 2, heads, head_dims).permute(1, 2, 0, 3)
                k = k.relu()
                kv += k.transpose(-2, -1) @ v
                key_sum += k.sum(dim=-2).unsqueeze(-1)
            kv *= self.temperature
            for part in parts:
                q = inference_linear(norm(part), q_weight, q_bias).view(
                    -1, heads, head_dims).transpose(0, 1).relu()
                out = (q @ kv) / torch.clamp(
                    q @ key_sum, min=self.denominator_floor)
                part += inference_linear(
                    out.transpose(0, 1).reshape(-1, channels),
                    self.proj.weight, self.proj.bias)
        return x


class LocalConcentrationModule(nn.Module):
    """L²ViT's LCM: depthwise 7x7 conv -> GELU -> BatchNorm -> depthwise 7x7
    conv, applied to the token map.

    Args:
        channels (int): Channels of the tokens.
        kernel_size (int): Kernel of both depthwise convolutions. Default: 7.
    """

    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(
            channels, channels, kernel_size, padding=padding, groups=channels)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(
            channels, channels, kernel_size, padding=padding, groups=channels)

    def forward(self, x, hw: HW):
        x = self.bn(self.act(self.conv1(tokens_to_map(x, hw))))
        return map_to_tokens(self.conv2(x))


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


def square_grid(num_tokens: int) -> Tuple[int, int]:
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f'{num_tokens} tokens do not form a square grid')
    return side, side


class FocusedLinearAttention(nn.Module):
    """FLatten's focused linear attention, without the host's projections.

    Given projected ``q`` (``(B, N, C)``) and ``k``, ``v`` (``(B, n, C)``)
    on an ``H x W`` grid, it adds the learned positional encoding to ``k``
    only, applies the focusing function, runs
    :func:`focused_linear_attention` per head and adds the rank-restoring
    depthwise convolution of ``v``, whose ``head_dims``-channel kernels are
    shared by all heads (as in the official code). Hosts (PVT, Swin, CSwin)
    subclass it and add their projections, so the official parameter names
    ``scale``, ``positional_encoding`` and ``dwc`` are kept.

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
        self.dwc = nn.Conv2d(
            self.head_dims,
            self.head_dims,
            kernel_size,
            padding=kernel_size // 2,
            groups=self.head_dims)

    def _split_heads(self, x):
        batch, num_tokens, _ = x.shape
        return x.reshape(batch, num_tokens, self.num_heads,
                         self.head_dims).permute(0, 2, 1, 3)

    def attend(self, q, k, v, hw: HW):
        """Return ``(B, N, C)``: the attention plus the DWC of ``v``.

        ``k`` and ``v`` must be on the ``hw`` grid (no spatial reduction).
        """
        batch, num_tokens, channels = q.shape
        k = k + resize_pos_embed(self.positional_encoding, self.pos_grid, hw,
                                 self.pos_resize_mode)
        q = focusing_function(q, self.scale, self.focusing_factor)
        k = focusing_function(k, self.scale, self.focusing_factor)
        v = self._split_heads(v)
        out = focused_linear_attention(
            self._split_heads(q), self._split_heads(k), v)
        out = out.transpose(1, 2).reshape(batch, num_tokens, channels)
        v_map = v.reshape(batch * self.num_heads, *hw,
                          self.head_dims).permute(0, 3, 1, 2)
        dwc = self.dwc(v_map).reshape(batch, channels, num_tokens)
        return out + dwc.transpose(1, 2)

    def qkv_projection(self):
        """``(weight, bias)`` of the host's query, key and value projections
        as one ``C -> 3C`` layer (``[q, k, v]`` along the outputs; set by
        the host)."""
        raise NotImplementedError

    def add_branch(self, x, hw: HW, norm: nn.Module, drop_path: nn.Module):
        """``x + drop_path(self(norm(x), hw))`` for a host attending over
        the whole ``hw`` map with :meth:`qkv_projection` and ``proj``.

        In inference (see :func:`~.tokens.adds_in_place`) it is added into
        ``x`` in place, in two passes over chunks of tokens: the first sums
        the focused keys and ``kᵀv`` and keeps the values for the depthwise
        convolution, the second focuses the queries and attends (a map of
        one chunk projects its queries in the first pass too, in one
        product with the keys and values). Only the values and their
        convolution exist for the whole map; the focusing function works
        in the projections' outputs, and the per-head products read and
        write token-major memory through strided views (no head split or
        merge copies). The sums differ from one product over all tokens by
        float rounding.
        """
        if not adds_in_place(x, drop_path, norm, self):
            return x + drop_path(self(norm(x), hw))
        num_tokens, channels = x.shape[1:]
        heads, head_dims = self.num_heads, self.head_dims

        def by_heads(tokens):  # (n, C) -> a (heads, n, d) view
            return tokens.view(-1, heads, head_dims).transpose(0, 1)

        def focus(features):
            return focus_in_place(features, temperature, self.focusing_factor)

        pos = resize_pos_embed(self.positional_encoding, self.pos_grid, hw,
                               self.pos_resize_mode)[0]
        temperature = F.softplus(self.scale).reshape(-1)
        qkv_weight, qkv_bias = self.qkv_projection()
        chunk_elements = FOCUSED_ATTENTION_CHUNK_ELEMENTS
        one_chunk = num_tokens * 3 * channels <= chunk_elements
        if one_chunk:
            chunk, kv_weight, kv_bias = num_tokens, qkv_weight, qkv_bias
        else:
            chunk = even_chunk_size(num_tokens,
                                    chunk_elements // (2 * channels))
            (q_weight,
             q_bias), (kv_weight,
                       kv_bias) = split_qkv_projection(qkv_weight, qkv_bias)
        attended = x.new_empty(chunk, channels)
        for tokens in x:  # one image at a time
            kv = x.new_zeros(heads, head_dims, head_dims)
            key_sum = x.new_zeros(channels)
            # Head-major, so that each head's value map is channels-last
            # for the shared depthwise conv.
            values = x.new_empty(heads, num_tokens, head_dims)
            for start in range(0, num_tokens, chunk):
                projected = inference_linear(
                    norm(tokens[start:start + chunk]), kv_weight, kv_bias)
                if one_chunk:
                    q, k, v = projected.chunk(3, dim=-1)
                    q = by_heads(focus(q))
                else:
                    k, v = projected.chunk(2, dim=-1)
                k = focus(k.add_(pos[start:start + chunk]))
                values[:, start:start + chunk] = by_heads(v)
                kv.baddbmm_(by_heads(k).transpose(1, 2), by_heads(v))
                key_sum += k.sum(dim=0)
            kv /= num_tokens
            key_mean = by_heads(key_sum[None]).transpose(1, 2) / num_tokens
            local = map_to_tokens(self.dwc(tokens_to_map(values,
                                                         hw)))  # (heads, N, d)
            for start in range(0, num_tokens, chunk):
                part = tokens[start:start + chunk]
                if not one_chunk:
                    q = by_heads(
                        focus(inference_linear(norm(part), q_weight, q_bias)))
                out = attended[:len(part)]
                torch.bmm(q, kv, out=by_heads(out))
                by_heads(out).mul_(
                    torch.bmm(q, key_mean).add_(1e-6).reciprocal_()).add_(
                        local[:, start:start + chunk])
                part += inference_linear(out, self.proj.weight, self.proj.bias)
        return x
