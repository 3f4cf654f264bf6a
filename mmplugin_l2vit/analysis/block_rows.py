# Copyright (c) OpenMMLab. All rights reserved.
"""How the plugin's blocks draw their attention rows (see
:func:`~.attention_maps.register_attention_rows`), from the steps their
layers compute with:

- window softmax (L²ViT's LWA, Swin's windows, CSwin's stripes and global
  stage): the softmax over the keys of the query's window, with the
  window layout of the layer's own partition (padding and cyclic shift)
  and the bias and shift mask it adds to the logits;
- L²ViT's ReLU linear attention and FLatten's focused linear attention:
  the layer's feature map, key-value summary, normaliser and attend steps
  (:func:`~.row_math.keys_first_rows`). Their rows sum to less than one by
  what the normaliser's floor (L²ViT) or ``EPS`` (FLatten) takes.

Convolution branches that work beside an attention (L²ViT's LCM, FLatten's
DWC, CSwin's LePE) are reported separately as their normalised local
influence ``sum_c |d out_nc / d in_mc|`` and their share of the update
where they are added to the attention output.
"""
from typing import Dict, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.backbones.flatten_cswin import CSwinBlock
from ..models.backbones.flatten_pvt import FLattenPVTBlock
from ..models.backbones.flatten_swin import FLattenSwinBlock
from ..models.backbones.l2vit import LinearGlobalBlock, LocalWindowBlock
from ..models.layers.focused_linear_attention import (
    FocusedLinearAttention, focused_attend, focused_key_value_summary,
    focused_normaliser, rank_restoration)
from ..models.layers.lepe import (LePEAttention, LePEFocusedLinearAttention,
                                  lepe)
from ..models.layers.relu_linear_attention import (relu_attend, relu_features,
                                                   relu_key_value_summary,
                                                   relu_normaliser)
from ..models.layers.tokens import HW, split_heads
from ..models.layers.window_attention import (ShiftedWindowAttention,
                                              UnmaskedWindowAttention,
                                              fits_one_window, merge_windows,
                                              padded_size, partition_windows,
                                              shifted_window_mask)
from .attention_maps import AttentionRows, Rows, register_attention_rows
from .row_math import (attention_output, branch_share, keys_first_rows,
                       local_influence, normalise, softmax_rows,
                       window_softmax_rows)


def relu_linear_rows(q: torch.Tensor, k: torch.Tensor, num_heads: int,
                     denominator_floor: float) -> torch.Tensor:
    """``(Q, heads, N)`` rows of L²ViT's ReLU linear attention for ``(Q,
    C)`` projected queries and ``(N, C)`` keys. They leave out the learned
    per-head scale of ``kᵀv``, which scales the output as the projection
    after it does: the rows are the weights the values are summed with."""
    rows = keys_first_rows(
        relu_features(split_heads(q, num_heads)),
        relu_features(split_heads(k, num_heads)),
        lambda keys, values: relu_key_value_summary(keys, values, 1.),
        lambda queries, key_sum: relu_normaliser(
            queries, key_sum, denominator_floor), relu_attend)
    # Without a floor an all-zero query has no weights at all (0 / 0).
    return rows.nan_to_num(0.)


def focused_rows(attn: FocusedLinearAttention, q: torch.Tensor,
                 k: torch.Tensor) -> torch.Tensor:
    """``(Q, heads, N)`` rows of FLatten's focused linear attention for
    ``(Q, C)`` projected queries and ``(N, C)`` keys with their positional
    encoding."""
    num_keys = k.shape[0]
    return keys_first_rows(
        split_heads(attn.focus(q[None])[0], attn.num_heads),
        split_heads(attn.focus(k[None])[0], attn.num_heads),
        lambda keys, values: focused_key_value_summary(keys, values, num_keys),
        focused_normaliser, focused_attend)


def compare_rows(q: torch.Tensor, k: torch.Tensor,
                 num_heads: int) -> Dict[str, torch.Tensor]:
    """Global softmax and plain ReLU linear attention (no floor) rows,
    ``(Q, heads, N)`` each, for ``(Q, C)`` queries and ``(N, C)`` keys."""
    return {
        'softmax': softmax_rows(q, k, num_heads),
        'ReLU linear': relu_linear_rows(q, k, num_heads, 0.),
    }


def dwc_branch(attn: FocusedLinearAttention, v: torch.Tensor,
               hw: HW) -> torch.Tensor:
    """FLatten's rank-restoring DWC of ``(B, N, C)`` values."""
    return rank_restoration(attn.dwc, v, hw, attn.num_heads)


def lepe_branch(attn: Union[LePEAttention, LePEFocusedLinearAttention],
                v: torch.Tensor, hw: HW) -> torch.Tensor:
    """CSWin's LePE of ``(B, N, C)`` values, per window (the whole map for
    the linear attention)."""
    window = attn.window_on(hw) if isinstance(attn, LePEAttention) else hw
    windows = partition_windows(v, hw, window)
    return merge_windows(lepe(attn.get_v, windows, window), hw, window)


def _qkv(x: torch.Tensor, projection: nn.Linear):
    """``(N, C)`` tokens -> their ``(N, C)`` queries, keys and values."""
    return projection(x).chunk(3, dim=-1)


@register_attention_rows(LocalWindowBlock)
class WindowRows(AttentionRows):
    """L²ViT's LWA and Swin's (shifted) window softmax, called as
    ``attn(x, hw)``, which project the zero-padded map with ``qkv``."""

    def __init__(self, block: nn.Module):
        super().__init__(block)
        shift = getattr(block.attn, 'shift_size', 0)
        self.kind = ('shifted-window' if shift else 'window') + ' softmax'

    def modules(self):
        return [self.block.attn]

    def rows(self, calls, query_indices, compare):
        attn = self.block.attn
        (x, hw, *_), _ = calls[attn]
        size = attn.window_size
        window, shift, attn_mask = (size, size), 0, None
        if isinstance(attn, ShiftedWindowAttention):
            if fits_one_window(hw, size):
                window = tuple(hw)
            else:
                shift = attn.shift_size
            attn_mask = attn.relative_position_bias(window)[None]
            if shift:
                attn_mask = attn_mask + shifted_window_mask(
                    padded_size(hw, window), size, shift).unsqueeze(1)
        q, k, _ = _qkv(x[0], attn.qkv)
        # Padded tokens are projected: their key is the projection's bias.
        _, padding_key, _ = _qkv(x.new_zeros(1, x.shape[-1]), attn.qkv)
        rows, padding = window_softmax_rows(
            *(split_heads(t, attn.num_heads) for t in (q, k, padding_key)), hw,
            query_indices, window, shift, attn_mask)
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
        attn, lcm = self.block.attn, self.block.lcm
        hw = self.grid(calls)
        (x, *_), attn_out = calls[attn]
        (lcm_in, _), lcm_out = calls[lcm]
        q, k, _ = _qkv(x[0], attn.qkv)
        q = q[query_indices]
        rows = relu_linear_rows(q, k, attn.num_heads, attn.denominator_floor)
        local, _ = local_influence(lambda z: lcm(z, hw), lcm_in, query_indices)
        local = normalise(local)
        share = branch_share(lcm_out[0, query_indices],
                             attn_out[0, query_indices])
        result = Rows(rows, 1 - rows.sum(-1), local, share)
        if compare:
            weight = share[:, None, None]
            result.variants = compare_rows(q, k, attn.num_heads)
            result.variants['enhanced (+ LCM)'] = ((1 - weight) * rows +
                                                   weight * local[:, None])
        return result


def _focused_result(attn: FocusedLinearAttention, q, k, v, hw: HW,
                    query_indices, compare: bool, local_branch) -> Rows:
    """Rows, local branch and compare view of focused linear attention on
    ``(N, C)`` projections (keys before their positional encoding)."""
    q = q[query_indices]
    k = k + attn.key_position(hw)[0]
    rows = focused_rows(attn, q, k)
    local, local_out = local_influence(local_branch, v[None], query_indices)
    share = branch_share(local_out, attention_output(rows, v))
    result = Rows(rows, 1 - rows.sum(-1), normalise(local), share)
    if compare:
        result.variants = dict(
            compare_rows(q, k, attn.num_heads), focused=rows)
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
        (x, hw, *_), _ = calls[attn]
        q, k, v = F.linear(x[0], *attn.qkv_projection()).chunk(3, dim=-1)
        return _focused_result(attn, q, k, v, hw, query_indices, compare,
                               lambda values: dwc_branch(attn, values, hw))


@register_attention_rows(FLattenPVTBlock, FLattenSwinBlock)
def flatten_block_rows(block: nn.Module) -> AttentionRows:
    """FLatten-PVT's and FLatten-Swin's stages hold window softmax blocks or
    focused linear ones."""
    if isinstance(block.attn, UnmaskedWindowAttention):
        return WindowRows(block)
    return FocusedRows(block)


@register_attention_rows(CSwinBlock)
class CSwinRows(AttentionRows):
    """FLatten-CSwin blocks: one or two branches ``attn(q, k, v, hw)``,
    each focused linear attention (DWC + LePE) or softmax within stripes
    or globally (LePE)."""

    def __init__(self, block: nn.Module):
        super().__init__(block)
        self.has_variants = isinstance(block.attns[0],
                                       LePEFocusedLinearAttention)
        if self.has_variants:
            self.kind = 'focused linear attention + DWC + LePE'
            self.unattended_reason = FocusedRows.unattended_reason
            self.local_name = 'DWC + LePE'
        else:
            self.kind = ('cross-shaped stripe softmax + LePE'
                         if len(block.attns) > 1 else 'global softmax + LePE')
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
            # Stripes pad the projected q, k and v with zeros.
            branch_rows, branch_padding = window_softmax_rows(
                split_heads(q[0], attn.num_heads),
                split_heads(k[0], attn.num_heads),
                k.new_zeros(attn.num_heads, 1, k.shape[-1] // attn.num_heads),
                hw, query_indices, attn.window_on(hw))
            branch_local, branch_local_out = local_influence(
                lambda values: lepe_branch(attn, values, hw), v, query_indices)
            rows.append(branch_rows)
            padding.append(branch_padding)
            local = local + branch_local
            local_out.append(branch_local_out)
            attention_out.append(attention_output(branch_rows, v[0]))
        share = branch_share(
            torch.cat(local_out, -1), torch.cat(attention_out, -1))
        return Rows(
            torch.cat(rows, 1), torch.cat(padding, 1), normalise(local), share)
