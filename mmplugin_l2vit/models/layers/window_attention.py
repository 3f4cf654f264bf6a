# Copyright (c) OpenMMLab. All rights reserved.
"""Softmax attention inside non-overlapping local windows: unshifted with
unmasked padding (L²ViT), or Swin's shifted windows with a relative position
bias and a shift mask.

Steps: pad the map to window multiples (and roll it for a shift), project,
cut the projections into per-head windows, attend, put the windows back
(roll back, crop), project out. The CPU's in-place inference
(:mod:`.cpu_inference`) runs the same steps band by band.
"""
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .frugal_autograd import recompute_then_linear
from .tokens import HW, is_exporting

# ``linear(x, layer)``: how the attention applies its projections (the
# module call by default; the CPU's in-place inference passes its own).
Linear = Callable[[torch.Tensor, nn.Linear], torch.Tensor]


def fits_one_window(hw: HW, window_size: int) -> bool:
    """Whether a map of ``hw`` fits in one window: then (Swin's rule) it is
    attended as a single window of its own size, neither padded nor
    shifted."""
    return max(hw) <= window_size


def padded_size(hw: HW, window: HW) -> HW:
    """``hw`` rounded up to multiples of ``window``."""
    # Non-negative operands only: an exported graph's integer division
    # truncates.
    return tuple(
        (size + side - 1) // side * side for size, side in zip(hw, window))


def partition_windows(x, hw: HW, window: HW):
    """``(B, H*W, C)`` tokens -> ``(B * num_windows, wh * ww, C)`` windows,
    in row-major order, after zero-padding the map on the right and bottom
    to multiples of ``window = (wh, ww)``."""
    batch, _, channels = x.shape
    (height, width), (win_h, win_w) = hw, window
    x = x.reshape(batch, height, width, channels)
    padded_h, padded_w = padded_size(hw, window)
    # Traced graphs pad by what may be zero: one graph for every size.
    if is_exporting() or (padded_h, padded_w) != (height, width):
        x = F.pad(x, (0, 0, 0, padded_w - width, 0, padded_h - height))
    x = x.view(batch, padded_h // win_h, win_h, padded_w // win_w, win_w,
               channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, win_h * win_w, channels)


def merge_windows(windows, hw: HW, window: HW):
    """Inverse of :func:`partition_windows`, cropping the padding off."""
    (height, width), (win_h, win_w) = hw, window
    padded_h, padded_w = padded_size(hw, window)
    rows, cols = padded_h // win_h, padded_w // win_w
    channels = windows.shape[-1]
    x = windows.view(-1, rows, cols, win_h, win_w, channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, padded_h, padded_w, channels)
    return x[:, :height, :width].reshape(-1, height * width, channels)


def relative_position_index(window_size: int):
    """Swin's ``(window_size**2, window_size**2)`` index into a relative
    position bias table of ``(2 * window_size - 1)**2`` rows: query ``i``
    and key ``j`` offset by ``(dy, dx) = pos_i - pos_j`` read row
    ``(dy + window_size - 1) * (2 * window_size - 1) + dx + window_size - 1``.
    """
    coords = torch.arange(window_size)
    rows = coords.repeat_interleave(window_size)
    cols = coords.repeat(window_size)
    offset_y = rows[:, None] - rows[None, :] + window_size - 1
    offset_x = cols[:, None] - cols[None, :] + window_size - 1
    return offset_y * (2 * window_size - 1) + offset_x


def shifted_window_mask(padded_hw: HW,
                        window_size: int,
                        shift_size: int,
                        dtype=torch.float32,
                        device=None):
    """The additive attention mask of Swin's shifted windows.

    After a map of size ``padded_hw`` (multiples of ``window_size``) is
    rolled up and left by ``shift_size``, the last window along each axis
    holds two strips that were not neighbours: the map's far edge and the
    wrapped-around near edge. Tokens of different strips must not attend to
    each other, so the mask is -100 between them and 0 elsewhere (-100, not
    -inf, as in Swin: no row is ever fully masked).

    Returns:
        Tensor: ``(num_windows, window_size**2, window_size**2)``, windows
        in the order of :func:`partition_windows`.
    """
    height, width = padded_hw

    def strips(length):
        # 0 before the last window, 1 for the far edge, 2 for the wrapped
        # near edge.
        index = torch.arange(length, device=device)
        return ((index >= length - window_size).long() +
                (index >= length - shift_size).long())

    labels = strips(height)[:, None] * 3 + strips(width)
    labels = partition_windows(
        labels.view(1, -1, 1), padded_hw,
        (window_size, window_size)).squeeze(-1)
    apart = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(
        apart.shape, dtype=dtype, device=device).masked_fill(apart, -100.)


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

    def attend_in_windows(self,
                          x,
                          hw: HW,
                          window: HW,
                          shift: int = 0,
                          attn_mask=None,
                          linear: Optional[Linear] = None,
                          norm: Optional[nn.Module] = None):
        """Attend within the ``window = (wh, ww)`` windows of a ``(B, H*W,
        C)`` token map (of ``norm(x)`` with ``norm``).

        The map is zero-padded on the right and bottom to window multiples
        and, with ``shift``, rolled up and left before it is cut into
        windows, then rolled back and cropped. The projections are
        per-token, so ``qkv`` runs once on the whole padded map (a padded
        token's q, k, v are the biases, as if it were projected inside its
        window) and ``proj`` on the cropped map: one copy cuts the
        projected map into per-head windows and one puts the heads back.

        In training only ``x``, the projections and the mask are kept: the
        norm, the padding and :meth:`attend_projected` are recomputed for
        the gradients (see :mod:`.frugal_autograd`).

        Args:
            attn_mask (Tensor, optional): Added to the attention logits;
                broadcasts to ``(num_windows, num_heads, wh * ww, wh *
                ww)``, windows in the order of :func:`partition_windows`.
            linear (callable, optional): ``linear(x, layer)`` applies the
                projections; default: the layers themselves.
            norm (nn.Module, optional): Applied to ``x`` first.
        """
        batch, num_tokens, channels = x.shape

        def padded_map(tokens):
            if norm is not None:
                tokens = norm(tokens)
            return self.padded_map(tokens, hw, window, shift)

        def attended(qkv, mask):
            return self.attend_projected(qkv, mask, hw, window, shift)

        if linear is None:
            qkv = recompute_then_linear(
                padded_map,
                x,
                linear=self.qkv,
                owners=() if norm is None else (norm, ))
            out = recompute_then_linear(
                attended, qkv, attn_mask, linear=self.proj)
        else:
            out = linear(
                attended(linear(padded_map(x), self.qkv), attn_mask),
                self.proj)
        return out.reshape(batch, num_tokens, channels)

    @staticmethod
    def padded_map(x, hw: HW, window: HW, shift: int = 0):
        """``(B, H*W, C)`` tokens -> the ``(B, H', W', C)`` map zero-padded
        to window multiples and, with ``shift``, rolled up and left."""
        batch, _, channels = x.shape
        height, width = hw
        padded_h, padded_w = padded_size(hw, window)
        x = x.view(batch, height, width, channels)
        # Traced graphs pad and crop by what may be zero: one graph for
        # every size.
        if is_exporting() or (padded_h, padded_w) != tuple(hw):
            x = F.pad(x, (0, 0, 0, padded_w - width, 0, padded_h - height))
        if shift:
            x = torch.roll(x, (-shift, -shift), dims=(1, 2))
        return x

    def attend_projected(self, qkv, attn_mask, hw: HW, window: HW, shift: int):
        """The windowed attention of the projections ``qkv`` of the map of
        :meth:`padded_map`, ``(B, H', W', 3C)`` -> the rolled-back and
        cropped ``(B, H, W, C)`` map before ``proj``."""
        batch, padded_h, padded_w = qkv.shape[:3]
        (height, width), (win_h, win_w) = hw, window
        heads, head_dims = self.num_heads, self.head_dims
        rows, cols = padded_h // win_h, padded_w // win_w
        qkv = qkv.view(batch, rows, win_h, cols, win_w, 3, heads, head_dims)
        # -> (3, windows, heads, window tokens, head_dims), windows in the
        # order of partition_windows.
        q, k, v = qkv.permute(5, 0, 1, 3, 6, 2, 4,
                              7).reshape(3, batch * rows * cols, heads,
                                         win_h * win_w, head_dims)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.view(batch, rows, cols, heads, win_h, win_w,
                       head_dims).permute(0, 1, 4, 2, 5, 3,
                                          6).reshape(batch, padded_h, padded_w,
                                                     heads * head_dims)
        if shift:
            out = torch.roll(out, (shift, shift), dims=(1, 2))
        if is_exporting() or (padded_h, padded_w) != (height, width):
            out = out[:, :height, :width]
        return out

    def forward(self,
                x,
                hw: HW,
                linear: Optional[Linear] = None,
                norm: Optional[nn.Module] = None):
        size = self.window_size
        return self.attend_in_windows(
            x, hw, (size, size), linear=linear, norm=norm)


class ShiftedWindowAttention(UnmaskedWindowAttention):
    """Swin's window attention for maps of any size: the softmax attention
    of :class:`UnmaskedWindowAttention` plus a learned relative position
    bias and an optional cyclic shift of the windows.

    - A map that :func:`fits_one_window` is attended as a single window of
      its own size, neither padded nor shifted, as the original Swin does
      when a stage is no larger than its window. Its bias is read from the
      table at that window's offsets.
    - A larger map follows mmdet's Swin: it is zero-padded on the right and
      bottom to multiples of the window (padded tokens are attended to
      without a mask), rolled up and left by ``shift_size`` if that is not
      0, with the mask of :func:`shifted_window_mask` built for the padded
      size at run time, then rolled back and cropped.

    The bias (plus the mask) is the additive ``attn_mask`` of
    ``F.scaled_dot_product_attention``; under autocast its fused kernels
    take the softmax in fp32, and the finite mask never empties a row.

    Args:
        embed_dims (int): Channels of the tokens.
        num_heads (int): Number of heads.
        window_size (int): Side of the square windows.
        shift_size (int): Shift of the windows on maps larger than one
            window; 0 for none. Default: 0.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: int,
                 shift_size: int = 0):
        super().__init__(embed_dims, num_heads, window_size)
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size must be in [0, window_size = '
                             f'{window_size}), got {shift_size}')
        self.shift_size = shift_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1)**2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)
        # A function of the window size alone: rebuilt, never loaded.
        self.register_buffer(
            'relative_position_index',
            relative_position_index(window_size),
            persistent=False)

    def relative_position_bias(self, window_hw: HW):
        """The ``(num_heads, N, N)`` bias of a window of ``window_hw``
        (at most ``window_size`` on each side) with N tokens.

        The attention passes it on as ``(1, num_heads, N, N)``: with a 4-D
        mask ``F.scaled_dot_product_attention`` runs its fused CPU kernel
        (a 3-D one sends it to the ~2x slower unfused path).
        """
        index = self.relative_position_index
        size = self.window_size
        if tuple(window_hw) != (size, size):
            # A smaller window's tokens are the top-left ones of a full one.
            rows = torch.arange(window_hw[0], device=index.device)
            cols = torch.arange(window_hw[1], device=index.device)
            tokens = (rows[:, None] * size + cols).flatten()
            index = index[tokens][:, tokens]
        return self.relative_position_bias_table.t()[:, index]

    def forward(self,
                x,
                hw: HW,
                linear: Optional[Linear] = None,
                norm: Optional[nn.Module] = None):
        if is_exporting():
            return self._forward_at_any_size(
                x if norm is None else norm(x), hw, linear)
        size, shift = self.window_size, self.shift_size
        if fits_one_window(hw, size):
            return self.attend_in_windows(
                x,
                hw,
                hw,
                attn_mask=self.relative_position_bias(hw)[None],
                linear=linear,
                norm=norm)
        attn_mask = self.relative_position_bias((size, size))[None]
        if shift:
            shift_mask = shifted_window_mask(
                padded_size(hw, (size, size)), size, shift, attn_mask.dtype,
                x.device)
            # One (heads, N, N) mask per window of every image.
            attn_mask = (shift_mask.unsqueeze(1) + attn_mask).repeat(
                x.shape[0], 1, 1, 1)
        return self.attend_in_windows(x, hw, (size, size), shift, attn_mask,
                                      linear, norm)

    def _forward_at_any_size(self, x, hw: HW, linear: Optional[Linear]):
        """:meth:`forward` as one graph for every map size, for tracing and
        export (``hw`` holds traced sizes): its two cases are chosen by
        ``torch.where`` on the sizes instead of a Python branch. A map that
        fits in one window is padded to a whole window and attended
        unshifted, with the padding masked out of the keys (as if it were
        absent, as in :meth:`forward`); a larger one is padded, shifted
        and masked as in :meth:`forward`."""
        batch, _, channels = x.shape
        height, width = hw
        size, shift = self.window_size, self.shift_size
        fits = (height <= size) & (width <= size)
        padded_hw = padded_size(hw, (size, size))
        token = torch.arange(size * size, device=x.device)
        padding_key = ((token // size >= height) | (token % size >= width))
        attn_mask = self.relative_position_bias(
            (size, size)).masked_fill(padding_key & fits, float('-inf'))[None]
        x = F.pad(
            x.view(batch, height, width, channels),
            (0, 0, 0, padded_hw[1] - width, 0, padded_hw[0] - height))
        if shift:
            shift_mask = shifted_window_mask(padded_hw, size, shift,
                                             attn_mask.dtype, x.device)
            attn_mask = (torch.where(fits, 0., shift_mask).unsqueeze(1) +
                         attn_mask).repeat(batch, 1, 1, 1)
            x = torch.where(fits, x, torch.roll(x, (-shift, -shift), (1, 2)))
        out = self.attend_in_windows(
            x.view(batch, -1, channels),
            padded_hw, (size, size),
            attn_mask=attn_mask,
            linear=linear).view(x.shape)
        if shift:
            out = torch.where(fits, out, torch.roll(out, (shift, shift),
                                                    (1, 2)))
        return out[:, :height, :width].reshape(batch, -1, channels)
