# Copyright (c) OpenMMLab. All rights reserved.
"""Softmax attention inside non-overlapping local windows, optionally
shifted (Swin)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .tokens import HW, adds_in_place, inference_linear, is_exporting


def window_partition(x, window_size: int):
    """``(B, H, W, C)`` with H, W multiples of ``window_size`` ->
    ``(B * num_windows, window_size**2, C)``, windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window_size, window_size, width // window_size,
               window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size,
                                               channels)


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

    def _linear(self, tokens, layer: nn.Linear, in_place_inference: bool):
        if in_place_inference:
            return inference_linear(tokens, layer.weight, layer.bias)
        return layer(tokens)

    def attend(self, windows, attn_mask=None, in_place_inference=False):
        """Attend within ``(num_windows, window_tokens, C)`` windows.

        ``attn_mask``, if given, is added to the attention logits and must
        broadcast to ``(num_windows, num_heads, window_tokens,
        window_tokens)``. ``in_place_inference``: see
        :meth:`attend_in_windows`.
        """
        num_windows, num_tokens, channels = windows.shape
        qkv = self._linear(windows, self.qkv, in_place_inference).view(
            num_windows, num_tokens, 3, self.num_heads,
            self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(num_windows, num_tokens, channels)
        return self._linear(out, self.proj, in_place_inference)

    def attend_in_windows(self,
                          x,
                          hw: HW,
                          shift: int = 0,
                          attn_mask=None,
                          in_place_inference: bool = False):
        """Attend within the windows of a ``(B, H*W, C)`` token map.

        The map is zero-padded on the right and bottom to window multiples
        and, with ``shift``, rolled up and left before it is cut into
        windows, then rolled back and cropped. The projections are
        per-token, so ``qkv`` runs once on the whole padded map (a padded
        token's q, k, v are the biases, as if it were projected inside its
        window) and ``proj`` on the cropped map: one copy cuts the
        projected map into per-head windows and one puts the heads back,
        instead of a copy around every step. ``in_place_inference`` (set
        by :meth:`add_branch`) runs both with
        :func:`~.tokens.inference_linear`.
        """
        batch, num_tokens, channels = x.shape
        height, width = hw
        size, heads = self.window_size, self.num_heads
        x = x.view(batch, height, width, channels)
        pad_h, pad_w = -height % size, -width % size
        # Traced graphs pad and crop by what may be zero: one graph for
        # every size.
        padded = is_exporting() or pad_h or pad_w
        if padded:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        if shift:
            x = torch.roll(x, (-shift, -shift), dims=(1, 2))
        rows, cols = (height + pad_h) // size, (width + pad_w) // size
        qkv = self._linear(x, self.qkv,
                           in_place_inference).view(batch, rows, size, cols,
                                                    size, 3, heads,
                                                    self.head_dims)
        # -> (3, windows, heads, window tokens, head_dims), windows in the
        # order of window_partition.
        q, k, v = qkv.permute(5, 0, 1, 3, 6, 2, 4,
                              7).reshape(3, batch * rows * cols, heads,
                                         size * size, self.head_dims)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.view(batch, rows, cols, heads, size, size,
                       self.head_dims).permute(0, 1, 4, 2, 5, 3, 6).reshape(
                           batch, rows * size, cols * size, channels)
        if shift:
            out = torch.roll(out, (shift, shift), dims=(1, 2))
        if padded:
            out = out[:, :height, :width]
        return self._linear(out, self.proj, in_place_inference).reshape(
            batch, num_tokens, channels)

    def forward(self, x, hw: HW):
        return self.attend_in_windows(x, hw)

    def add_branch(self, x, hw: HW, norm: nn.Module, drop_path: nn.Module):
        """``x + drop_path(self(norm(x), hw))``.

        Windows do not interact, so in inference (see
        :func:`~.tokens.adds_in_place`) each band of one window row is
        normalised, attended and added into ``x`` in place: the padded,
        projected and per-head copies of the map are never whole.
        """
        if not adds_in_place(x, drop_path, norm, self):
            return x + drop_path(self(norm(x), hw))
        return self._add_by_bands(x, hw, norm)

    def _add_by_bands(self, x, hw: HW, norm: nn.Module, attn_mask=None):
        """The in-place inference of :meth:`add_branch`, unshifted windows
        with ``attn_mask`` for every window."""
        batch, _, channels = x.shape
        height, width = hw
        grid = x.view(batch, height, width, channels)
        for top in range(0, height, self.window_size):
            band = grid[:, top:top + self.window_size]
            rows = band.shape[1]
            normed = norm(band).view(batch, rows * width, channels)
            band += self.attend_in_windows(
                normed, (rows, width),
                attn_mask=attn_mask,
                in_place_inference=True).view(band.shape)
        return x


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
        in the order of :func:`window_partition`.
    """
    height, width = padded_hw

    def strips(length):
        # 0 before the last window, 1 for the far edge, 2 for the wrapped
        # near edge.
        index = torch.arange(length, device=device)
        return ((index >= length - window_size).long() +
                (index >= length - shift_size).long())

    labels = strips(height)[:, None] * 3 + strips(width)
    labels = window_partition(labels.view(1, height, width, 1),
                              window_size).squeeze(-1)
    apart = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(
        apart.shape, dtype=dtype, device=device).masked_fill(apart, -100.)


class ShiftedWindowAttention(UnmaskedWindowAttention):
    """Swin's window attention for maps of any size: the softmax attention
    of :class:`UnmaskedWindowAttention` plus a learned relative position
    bias and an optional cyclic shift of the windows.

    - A map that fits in one window (no side longer than ``window_size``)
      is attended as a single window of its own size, neither padded nor
      shifted, as the original Swin does when a stage is no larger than its
      window. Its bias is read from the table at that window's offsets.
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

    def add_branch(self, x, hw: HW, norm: nn.Module, drop_path: nn.Module):
        """``x + drop_path(self(norm(x), hw))``.

        In inference (see :func:`~.tokens.adds_in_place`) it is added into
        ``x`` in place, one band of a window row at a time, with the
        projections through :func:`~.tokens.inference_linear` (a map that
        fits in one window is one band).
        """
        if not adds_in_place(x, drop_path, norm, self):
            return x + drop_path(self(norm(x), hw))
        size = self.window_size
        if max(hw) <= size:
            x += self(norm(x), hw, in_place_inference=True)
            return x
        bias = self.relative_position_bias((size, size))
        if not self.shift_size:
            return self._add_by_bands(x, hw, norm, bias[None])
        return self._add_by_shifted_bands(x, hw, norm, bias)

    def _add_by_shifted_bands(self, x, hw: HW, norm: nn.Module, bias):
        """The in-place inference of :meth:`add_branch` with shifted
        windows. Window row ``r`` of the padded map rolled up and left by
        the shift holds rows ``r * window_size + shift + i`` (modulo the
        padded height) of the padded map: each such band is gathered,
        rolled left, attended with its windows' masks, rolled back and
        added to the rows it came from (padding rows are zeros, dropped)."""
        batch, _, channels = x.shape
        height, width = hw
        size, shift = self.window_size, self.shift_size
        padded_hw = (height + -height % size, width + -width % size)
        columns = padded_hw[1] // size
        shift_mask = shifted_window_mask(padded_hw, size, shift, bias.dtype,
                                         x.device)
        grid = x.view(batch, height, width, channels)
        band = x.new_empty(batch, size, padded_hw[1], channels)
        for top in range(0, padded_hw[0], size):
            rows = (torch.arange(top, top + size, device=x.device) +
                    shift) % padded_hw[0]
            in_map = (rows < height).nonzero().squeeze(1)
            rows = rows[in_map]
            band.zero_()
            band[:, in_map, :width] = norm(grid[:, rows])
            windows = slice(top // size * columns, (top // size + 1) * columns)
            attn_mask = (shift_mask[windows].unsqueeze(1) + bias).repeat(
                batch, 1, 1, 1)
            out = self.attend_in_windows(
                torch.roll(band, -shift, dims=2).view(batch, -1, channels),
                (size, padded_hw[1]),
                attn_mask=attn_mask,
                in_place_inference=True)
            out = torch.roll(
                out.view(band.shape), shift, dims=2)[:, in_map, :width]
            grid.index_add_(1, rows, out)
        return x

    def forward(self, x, hw: HW, in_place_inference: bool = False):
        if is_exporting():
            return self._forward_at_any_size(x, hw)
        batch = x.shape[0]
        height, width = hw
        size, shift = self.window_size, self.shift_size
        if height <= size and width <= size:
            return self.attend(x,
                               self.relative_position_bias(hw)[None],
                               in_place_inference)
        attn_mask = self.relative_position_bias((size, size))[None]
        if shift:
            padded_hw = (height + -height % size, width + -width % size)
            shift_mask = shifted_window_mask(padded_hw, size, shift,
                                             attn_mask.dtype, x.device)
            # One (heads, N, N) mask per window of every image.
            attn_mask = (shift_mask.unsqueeze(1) + attn_mask).repeat(
                batch, 1, 1, 1)
        return self.attend_in_windows(x, hw, shift, attn_mask,
                                      in_place_inference)

    def _forward_at_any_size(self, x, hw: HW):
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
        pad_h, pad_w = -height % size, -width % size
        padded_hw = (height + pad_h, width + pad_w)
        token = torch.arange(size * size, device=x.device)
        padding_key = ((token // size >= height) | (token % size >= width))
        attn_mask = self.relative_position_bias(
            (size, size)).masked_fill(padding_key & fits, float('-inf'))[None]
        x = F.pad(
            x.view(batch, height, width, channels), (0, 0, 0, pad_w, 0, pad_h))
        if shift:
            shift_mask = shifted_window_mask(padded_hw, size, shift,
                                             attn_mask.dtype, x.device)
            attn_mask = (torch.where(fits, 0., shift_mask).unsqueeze(1) +
                         attn_mask).repeat(batch, 1, 1, 1)
            x = torch.where(fits, x, torch.roll(x, (-shift, -shift), (1, 2)))
        out = self.attend_in_windows(
            x.view(batch, -1, channels), padded_hw,
            attn_mask=attn_mask).view(x.shape)
        if shift:
            out = torch.where(fits, out, torch.roll(out, (shift, shift),
                                                    (1, 2)))
        return out[:, :height, :width].reshape(batch, -1, channels)
