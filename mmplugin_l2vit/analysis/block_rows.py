# Copyright (c) OpenMMLab. All rights reserved.
"""How the plugin's blocks draw their attention rows (see
:func:`~.attention_maps.register_attention_rows`).

- window softmax (L²ViT LWA, Swin, CSwin stripes and global stage): the
  softmax over the keys of the query's window, padding, cyclic shift,
  shift mask and relative position bias included;
- L²ViT's ReLU linear attention: ``(q_n . k_m) / max(q_n . sum(k), floor)``,
  whose row sums to less than one where the floor is active;
- FLatten's focused linear attention: ``(φ(q_n) . φ(k_m)) / (φ(q_n) .
  sum(φ(k)) + n eps)``, with φ the layer's focusing function.

Convolution branches that work beside an attention (L²ViT's LCM, FLatten's
DWC, CSwin's LePE) are reported separately as their normalised local
influence ``sum_c |d out_nc / d in_mc|`` and their share of the update
where they are added to the attention output.
"""
import inspect
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..models.backbones.flatten_cswin import (CSwinBlock, LePEAttention,
                                              LePEFocusedLinearAttention,
                                              _partition, _unpartition)
from ..models.backbones.flatten_pvt import FLattenPVTBlock, PVTFocusedAttention
from ..models.backbones.flatten_swin import FLattenSwinBlock
from ..models.backbones.l2vit import LinearGlobalBlock, LocalWindowBlock
from ..models.layers import (FocusedLinearAttention, focused_linear_attention,
                             focusing_function, map_to_tokens,
                             resize_pos_embed, tokens_to_nchw)
from ..models.layers.window_attention import (UnmaskedWindowAttention,
                                              shifted_window_mask)
from .attention_maps import AttentionRows, Rows, register_attention_rows
from .loading import HW
from .row_math import (attention_output, branch_share, head_scores,
                       local_influence, normalise, softmax_rows, split_heads)

# The eps that focused linear attention adds to ``q . mean(k)``.
FOCUSED_EPS = inspect.signature(focused_linear_attention).parameters[
    'eps'].default

def _window_of(index: int, hw: HW, window: HW, shift: int):
    """The keys of the window that holds token ``index``.

    The map is zero-padded on the right and bottom to multiples of
    ``window`` and rolled up and left by ``shift``, as the window
    attentions do.

    Returns:
        tuple: The keys' token indices on ``hw`` in the order the window
        attends them (-1 for padding), the window's index in
        :func:`window_partition` order and the query's position in it.
    """
    (height, width), (win_h, win_w) = hw, window
    padded_h = -(-height // win_h) * win_h
    padded_w = -(-width // win_w) * win_w
    row, col = divmod(index, width)
    # Rolled by -shift, position i of the padded map holds i + shift.
    rolled_row, rolled_col = (row - shift) % padded_h, (col - shift) % padded_w
    top = rolled_row - rolled_row % win_h
    left = rolled_col - rolled_col % win_w
    rows = (top + torch.arange(win_h) + shift) % padded_h
    cols = (left + torch.arange(win_w) + shift) % padded_w
    rows, cols = torch.meshgrid(rows, cols, indexing='ij')
    rows, cols = rows.flatten(), cols.flatten()
    keys = torch.where((rows < height) & (cols < width), rows * width + cols,
                       -1)
    window_index = top // win_h * (padded_w // win_w) + left // win_w
    position = (rolled_row - top) * win_w + rolled_col - left
    return keys, window_index, position


def window_softmax_rows(q: torch.Tensor,
                        k: torch.Tensor,
                        padding_key: torch.Tensor,
                        hw: HW,
                        query_indices: Sequence[int],
                        window: HW,
                        shift: int = 0,
                        bias: Optional[torch.Tensor] = None,
                        shift_mask: Optional[torch.Tensor] = None):
    """Softmax attention rows within windows, for some queries.

    Args:
        q (Tensor): ``(N, heads, d)`` queries of every token of ``hw``.
        k (Tensor): ``(N, heads, d)`` keys.
        padding_key (Tensor): ``(heads, d)`` key of a zero-padded token.
        hw (tuple[int, int]): The token grid.
        query_indices (Sequence[int]): Row-major indices of the queries.
        window (tuple[int, int]): Window height and width.
        shift (int): Cyclic shift of the windows. Default: 0.
        bias (Tensor, optional): ``(heads, K, K)`` additive bias of a window
            of K tokens (Swin's relative position bias).
        shift_mask (Tensor, optional): ``(num_windows, K, K)`` additive mask
            of the shifted windows.

    Returns:
        tuple[Tensor, Tensor]: ``(Q, heads, N)`` rows over the map's keys
        and ``(Q, heads)`` weight on padding keys.
    """
    num_tokens, num_heads, head_dims = q.shape
    keys = torch.cat([k, padding_key[None]])
    rows = q.new_zeros(len(query_indices), num_heads, num_tokens + 1)
    for row, index in zip(rows, query_indices):
        key_indices, window_index, position = _window_of(
            index, hw, window, shift)
        logits = torch.einsum('hd,khd->hk', q[index],
                              keys[key_indices]) * head_dims**-0.5
        if bias is not None:
            logits = logits + bias[:, position]
        if shift_mask is not None:
            logits = logits + shift_mask[window_index, position]
        # Padding keys (-1) accumulate in the extra last column.
        row.index_add_(1, key_indices % (num_tokens + 1), logits.softmax(-1))
    return rows[..., :num_tokens], rows[..., num_tokens]


def relu_linear_rows(q: torch.Tensor, k: torch.Tensor, num_heads: int,
                     denominator_floor: float = 0.) -> torch.Tensor:
    """Rows ``(ReLU(q_n) . ReLU(k_m)) / max(sum_m ReLU(q_n) . ReLU(k_m),
    floor)`` of ReLU linear attention for ``(Q, C)`` queries and ``(N, C)``
    keys: ``(Q, heads, N)``. A zero floor gives plain normalised ReLU
    attention (an all-zero query gives a zero row)."""
    scores = head_scores(q.relu(), k.relu(), num_heads)
    total = scores.sum(-1, keepdim=True)
    denominator = total.clamp(min=denominator_floor)
    return torch.where(denominator > 0, scores / denominator, 0.)


def focused_rows(attn: FocusedLinearAttention, q: torch.Tensor,
                 k: torch.Tensor, hw: HW) -> torch.Tensor:
    """Rows of FLatten's focused linear attention: ``(Q, heads, N)`` for
    ``(Q, C)`` projected queries and ``(N, C)`` projected keys (before the
    positional encoding, which this adds as :meth:`attend` does)."""
    def focus(x):
        return focusing_function(x[None], attn.scale,
                                 attn.focusing_factor)[0]

    k = _keys_with_position(attn, k, hw)
    scores = head_scores(focus(q), focus(k), attn.num_heads)
    return scores / (scores.sum(-1, keepdim=True) + k.shape[0] * FOCUSED_EPS)


def _keys_with_position(attn: FocusedLinearAttention, k: torch.Tensor,
                        hw: HW) -> torch.Tensor:
    pos = resize_pos_embed(attn.positional_encoding, attn.pos_grid, hw,
                           attn.pos_resize_mode)
    return k + pos[0]


def compare_rows(q: torch.Tensor, k: torch.Tensor,
                 num_heads: int) -> Dict[str, torch.Tensor]:
    """Global softmax and plain ReLU linear attention rows, ``(Q, heads,
    N)`` each, for ``(Q, C)`` queries and ``(N, C)`` keys."""
    return {
        'softmax': softmax_rows(q, k, num_heads),
        'ReLU linear': relu_linear_rows(q, k, num_heads),
    }


def dwc_branch(attn: FocusedLinearAttention, v: torch.Tensor,
               hw: HW) -> torch.Tensor:
    """FLatten's rank-restoring DWC of ``(B, N, C)`` values: the
    ``head_dims``-channel depthwise conv shared by all heads, as in
    :meth:`FocusedLinearAttention.attend`."""
    batch, _, channels = v.shape
    v_map = tokens_to_nchw(v, hw).reshape(batch * attn.num_heads,
                                          attn.head_dims, *hw)
    return map_to_tokens(attn.dwc(v_map).reshape(batch, channels, *hw))


def lepe_branch(attn: Union[LePEAttention, LePEFocusedLinearAttention],
                v: torch.Tensor, hw: HW) -> torch.Tensor:
    """CSWin's LePE ``get_v`` of ``(B, N, C)`` values, per window (the
    whole map for the linear attention)."""
    window = tuple(side or size for side, size in zip(
        getattr(attn, 'window', (None, None)), hw))
    windows = _partition(v, hw, window)
    lepe = map_to_tokens(attn.get_v(tokens_to_nchw(windows, window)))
    return _unpartition(lepe, hw, window)


@register_attention_rows(LocalWindowBlock)
class WindowRows(AttentionRows):
    """L²ViT's LWA and Swin's (shifted) window softmax, called as
    ``attn(x, hw)``, which project the zero-padded map with ``qkv``."""

    def __init__(self, block: nn.Module):
        super().__init__(block)
        attn = block.attn
        shift = getattr(attn, 'shift_size', 0)
        self.kind = ('shifted-window' if shift else 'window') + ' softmax'

    def modules(self):
        return [self.block.attn]

    def rows(self, calls, query_indices, compare):
        attn = self.block.attn
        (x, hw), _ = calls[attn]
        size, shift = attn.window_size, getattr(attn, 'shift_size', 0)
        window, bias, shift_mask = (size, size), None, None
        swin = hasattr(attn, 'relative_position_bias')
        if swin and max(hw) <= size:
            # A map that fits in a window is one unshifted window.
            window, shift = hw, 0
        if swin:
            bias = attn.relative_position_bias(window)
        if shift:
            padded_hw = tuple(-(-side // size) * size for side in hw)
            shift_mask = shifted_window_mask(padded_hw, size, shift)
        channels = x.shape[-1]
        q, k, _ = attn.qkv(x[0]).split(channels, dim=-1)
        padding_key = attn.qkv(x.new_zeros(channels))[channels:2 * channels]
        rows, padding = window_softmax_rows(
            split_heads(q, attn.num_heads), split_heads(k, attn.num_heads),
            split_heads(padding_key, attn.num_heads), hw, query_indices,
            window, shift, bias, shift_mask)
        return Rows(rows, padding)


@register_attention_rows(LinearGlobalBlock)
class L2ViTLinearRows(AttentionRows):
    """L²ViT's LGA: ReLU linear attention with a denominator floor, then
    the LCM on the normed sum."""
    kind = 'ReLU linear attention + LCM'
    local_name = 'LCM'
    has_variants = True

    def __init__(self, block: nn.Module):
        super().__init__(block)
        self.unattended_reason = (
            'lost to the denominator floor max(q.sum(k), '
            f'{block.attn.denominator_floor:g})')

    def modules(self):
        return [self.block, self.block.attn, self.block.lcm]

    def rows(self, calls, query_indices, compare):
        block = self.block
        attn, lcm = block.attn, block.lcm
        hw = self.grid(calls)
        (x, ), attn_out = calls[attn]
        (lcm_in, _), lcm_out = calls[lcm]
        channels = x.shape[-1]
        q, k, _ = attn.qkv(x[0]).split(channels, dim=-1)
        q = q[query_indices]
        rows = relu_linear_rows(q, k, attn.num_heads, attn.denominator_floor)
        local, _ = local_influence(lambda z: lcm(z, hw), lcm_in,
                                   query_indices)
        local = normalise(local)
        share = branch_share(lcm_out[0, query_indices],
                             attn_out[0, query_indices])
        result = Rows(rows, 1 - rows.sum(-1), local, share)
        if compare:
            weight = share[:, None, None]
            result.variants = compare_rows(q, k, attn.num_heads)
            result.variants['enhanced (+ LCM)'] = (
                (1 - weight) * rows + weight * local[:, None])
        return result


class FocusedRows(AttentionRows):
    """FLatten-PVT and FLatten-Swin linear blocks: ``attn(x, hw)`` with the
    host's projections, focused linear attention plus the DWC."""
    kind = 'focused linear attention + DWC'
    unattended_reason = 'lost to the normaliser eps'
    local_name = 'DWC'
    has_variants = True

    def modules(self):
        return [self.block.attn]

    def rows(self, calls, query_indices, compare):
        attn = self.block.attn
        (x, hw), _ = calls[attn]
        if isinstance(attn, PVTFocusedAttention):
            q = attn.q(x[0])
            k, v = attn.kv(x[0]).chunk(2, dim=-1)
        else:
            q, k, v = attn.qkv(x[0]).chunk(3, dim=-1)
        return _focused_result(attn, q, k, v, hw, query_indices, compare,
                               lambda values: dwc_branch(attn, values, hw))


def _focused_result(attn: FocusedLinearAttention, q, k, v, hw: HW,
                    query_indices, compare: bool, local_branch) -> Rows:
    """Rows, local branch and compare view of focused linear attention on
    ``(N, C)`` projections."""
    q = q[query_indices]
    rows = focused_rows(attn, q, k, hw)
    local, local_out = local_influence(local_branch, v[None], query_indices)
    share = branch_share(local_out, attention_output(rows, v))
    result = Rows(rows, 1 - rows.sum(-1), normalise(local), share)
    if compare:
        result.variants = dict(
            compare_rows(q, _keys_with_position(attn, k, hw), attn.num_heads),
            focused=rows)
    return result


@register_attention_rows(CSwinBlock)
class CSwinRows(AttentionRows):
    """FLatten-CSwin blocks: one or two branches ``attn(q, k, v, hw)``,
    each focused linear attention (DWC + LePE) or softmax within stripes
    or globally (LePE)."""

    def __init__(self, block: nn.Module):
        super().__init__(block)
        attn = block.attns[0]
        self.has_variants = isinstance(attn, LePEFocusedLinearAttention)
        if self.has_variants:
            self.kind = 'focused linear attention + DWC + LePE'
            self.unattended_reason = FocusedRows.unattended_reason
            self.local_name = 'DWC + LePE'
        else:
            self.kind = ('cross-shaped stripe softmax + LePE' if len(
                block.attns) > 1 else 'global softmax + LePE')
            self.local_name = 'LePE'

    def modules(self):
        return list(self.block.attns)

    def rows(self, calls, query_indices, compare):
        if self.has_variants:
            attn = self.block.attns[0]
            (q, k, v, hw), _ = calls[attn]
            return _focused_result(
                attn, q[0], k[0], v[0], hw, query_indices, compare,
                lambda values: dwc_branch(attn, values, hw) + lepe_branch(
                    attn, values, hw))
        rows, padding, local_out, attention_out = [], [], [], []
        local = 0
        for attn in self.block.attns:
            (q, k, v, hw), _ = calls[attn]
            window = tuple(side or size
                           for side, size in zip(attn.window, hw))
            # Stripes pad the projected q, k and v with zeros.
            branch_rows, branch_padding = window_softmax_rows(
                split_heads(q[0], attn.num_heads),
                split_heads(k[0], attn.num_heads),
                k.new_zeros(attn.num_heads, k.shape[-1] // attn.num_heads),
                hw, query_indices, window)
            branch_local, branch_local_out = local_influence(
                lambda values: lepe_branch(attn, values, hw), v,
                query_indices)
            rows.append(branch_rows)
            padding.append(branch_padding)
            local = local + branch_local
            local_out.append(branch_local_out)
            attention_out.append(attention_output(branch_rows, v[0]))
        share = branch_share(
            torch.cat(local_out, -1), torch.cat(attention_out, -1))
        return Rows(
            torch.cat(rows, 1), torch.cat(padding, 1), normalise(local),
            share)


@register_attention_rows(FLattenPVTBlock, FLattenSwinBlock)
def flatten_block_rows(block: nn.Module) -> AttentionRows:
    """FLatten-PVT and FLatten-Swin stages hold window softmax blocks or
    focused linear ones."""
    if isinstance(block.attn, UnmaskedWindowAttention):
        return WindowRows(block)
    return FocusedRows(block)
