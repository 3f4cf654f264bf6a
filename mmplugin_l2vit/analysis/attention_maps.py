# Copyright (c) OpenMMLab. All rights reserved.
"""The attention weights of chosen query tokens over all keys, for every
block kind of the plugin's backbones.

One forward pass runs the image up to the chosen block, forward hooks keep
the inputs of its attention, and the rows are recomputed from them for the
chosen queries only, so memory stays linear in the number of tokens:

- window softmax (L²ViT LWA, Swin, CSwin stripes and global stage): the
  softmax over the keys of the query's window, padding, cyclic shift,
  shift mask and relative position bias included;
- L²ViT's ReLU linear attention: ``(q_n . k_m) / max(q_n . sum(k), floor)``,
  whose row sums to less than one where the floor is active;
- FLatten's focused linear attention: ``(φ(q_n) . φ(k_m)) / (φ(q_n) .
  sum(φ(k)) + n eps)``, with φ the layer's :func:`focusing_function`.

Convolution branches that work beside an attention (L²ViT's LCM, FLatten's
DWC, CSwin's LePE) are reported separately as their normalised local
influence ``sum_c |d out_nc / d in_mc|`` and their share of the update
where they are added to the attention output.
"""
import logging
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from ..models.backbones.flatten_cswin import CSwinBlock
from ..models.backbones.flatten_pvt import FLattenPVTBlock, PVTFocusedAttention
from ..models.backbones.flatten_swin import FLattenSwinBlock
from ..models.backbones.l2vit import LinearGlobalBlock, LocalWindowBlock
from ..models.layers import (EPS, FocusedLinearAttention, LePEAttention,
                             LePEFocusedLinearAttention,
                             UnmaskedWindowAttention, focusing_function,
                             map_to_tokens, merge_windows, partition_windows,
                             resize_pos_embed, shifted_window_mask,
                             tokens_to_nchw)
from ..models.layers.tokens import HW
from ..registry import MODELS

# ImageNet statistics on 0-255 RGB, used when a config names none.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class AttentionMaps:
    """Attention rows of some query tokens in one block.

    Attributes:
        layer (str): ``'STAGE.BLOCK'``, both 0-based.
        kind (str): What the block computes.
        grid (tuple[int, int]): The block's token grid ``(H, W)``.
        queries (list[tuple[int, int]]): ``(row, col)`` of each query on the
            grid.
        rows (Tensor): ``(Q, heads, H, W)`` weights of each query over the
            keys of the map.
        unattended (Tensor): ``(Q, heads)``: one minus the row's sum, the
            weight on zero-padded keys outside the map or the share lost to
            a normaliser's floor or eps; see ``unattended_reason``.
        unattended_reason (str): Where ``unattended`` goes.
        local (Tensor, optional): ``(Q, H, W)`` normalised influence of the
            convolution branch beside the attention (LCM, DWC, LePE).
        local_name (str, optional): Name of that branch.
        local_share (Tensor, optional): ``(Q,)`` the branch's share
            ``|local| / (|local| + |attention|)`` of the two outputs at the
            query, where they are added.
        variants (dict[str, Tensor]): With ``compare=True`` on a linear
            block: ``(Q, heads, H, W)`` rows of softmax and plain ReLU
            linear attention with the block's own queries and keys, and of
            the block's own (enhanced or focused) attention.
    """
    layer: str
    kind: str
    grid: HW
    queries: List[Tuple[int, int]]
    rows: torch.Tensor
    unattended: torch.Tensor
    unattended_reason: str
    local: Optional[torch.Tensor] = None
    local_name: Optional[str] = None
    local_share: Optional[torch.Tensor] = None
    variants: Dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class _Rows:
    """What a probe computes, on flattened ``(…, N)`` key axes."""
    rows: torch.Tensor
    unattended: torch.Tensor
    local: Optional[torch.Tensor] = None
    local_share: Optional[torch.Tensor] = None
    variants: Dict[str, torch.Tensor] = field(default_factory=dict)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(…, C)`` -> ``(…, heads, C // heads)``, heads owning consecutive
    channels as in every attention of the plugin."""
    return x.unflatten(-1, (num_heads, x.shape[-1] // num_heads))


def head_scores(queries: torch.Tensor, keys: torch.Tensor,
                num_heads: int) -> torch.Tensor:
    """Per-head dot products of ``(Q, C)`` queries with ``(N, C)`` keys:
    ``(Q, heads, N)``."""
    return torch.einsum('qhd,nhd->qhn', split_heads(queries, num_heads),
                        split_heads(keys, num_heads))


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Scale ``(…, N)`` maps to sum to one over their last axis."""
    return maps / maps.sum(-1, keepdim=True)


def effective_keys(rows: torch.Tensor) -> torch.Tensor:
    """The perplexity ``exp(entropy)`` of each row over its last axis, after
    normalising it to sum to one: how many keys the row spreads over."""
    probs = normalise(rows)
    entropy = -torch.special.xlogy(probs, probs).sum(-1)
    return entropy.exp()


def _window_of(index: int, hw: HW, window: HW, shift: int):
    """The keys of the window that holds token ``index``.

    The map is zero-padded on the right and bottom to multiples of
    ``window`` and rolled up and left by ``shift``, as the window
    attentions do.

    Returns:
        tuple: The keys' token indices on ``hw`` in the order the window
        attends them (-1 for padding), the window's index in
        :func:`partition_windows` order and the query's position in it.
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
    return scores / (scores.sum(-1, keepdim=True) + k.shape[0] * EPS)


def _keys_with_position(attn: FocusedLinearAttention, k: torch.Tensor,
                        hw: HW) -> torch.Tensor:
    pos = resize_pos_embed(attn.positional_encoding, attn.pos_grid, hw,
                           attn.pos_resize_mode)
    return k + pos[0]


def compare_rows(q: torch.Tensor, k: torch.Tensor,
                 num_heads: int) -> Dict[str, torch.Tensor]:
    """Global softmax (scale ``d ** -0.5``) and plain ReLU linear attention
    rows, ``(Q, heads, N)`` each, for ``(Q, C)`` queries and ``(N, C)``
    keys."""
    head_dims = q.shape[-1] // num_heads
    logits = head_scores(q, k, num_heads) * head_dims**-0.5
    return {
        'softmax': logits.softmax(-1),
        'ReLU linear': relu_linear_rows(q, k, num_heads),
    }


def local_influence(branch: Callable[[torch.Tensor], torch.Tensor],
                    inputs: torch.Tensor, query_indices: Sequence[int]):
    """How strongly each token feeds a channel-separable branch's output.

    For a depthwise branch (LCM, DWC, LePE: convolutions, BatchNorm and
    element-wise activations) ``d out_nc / d in_mc'`` is zero unless
    ``c == c'``, so one backward pass from ``sum_c out_nc`` gives every
    channel's own derivative.

    Args:
        branch (Callable): ``(1, N, C)`` tokens -> ``(1, N, C')`` tokens.
        inputs (Tensor): ``(1, N, C)`` tokens the branch runs on.
        query_indices (Sequence[int]): Output tokens to explain.

    Returns:
        tuple[Tensor, Tensor]: ``(Q, N)`` unnormalised influence
        ``sum_c |d out_nc / d in_mc|`` and the ``(Q, C')`` outputs at the
        queries.
    """
    with torch.enable_grad():
        inputs = inputs.detach().requires_grad_()
        outputs = branch(inputs)[0]
        maps = []
        for i, index in enumerate(query_indices):
            grad, = torch.autograd.grad(
                outputs[index].sum(),
                inputs,
                retain_graph=i + 1 < len(query_indices))
            maps.append(grad[0].abs().sum(-1))
    return torch.stack(maps), outputs[list(query_indices)].detach()


def branch_share(local_out: torch.Tensor,
                 attention_out: torch.Tensor) -> torch.Tensor:
    """``|local| / (|local| + |attention|)`` per query of two ``(Q, C)``
    outputs that are added together."""
    local_norm = local_out.norm(dim=-1)
    return local_norm / (local_norm + attention_out.norm(dim=-1))


def attention_output(rows: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(Q, C)``: the attention of ``(Q, heads, N)`` rows over ``(N, C)``
    values, heads merged."""
    values = split_heads(v, rows.shape[1])
    return torch.einsum('qhn,nhd->qhd', rows, values).flatten(1)


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
    windows = partition_windows(v, hw, window)
    lepe = map_to_tokens(attn.get_v(tokens_to_nchw(windows, window)))
    return merge_windows(lepe, hw, window)


class _Probe:
    """What to capture from one block and how to turn it into rows.

    Subclasses set ``kind``, ``unattended_reason`` and, where the block has
    one, ``local_name``; ``linear`` marks blocks with a compare view.
    """
    kind = ''
    unattended_reason = 'weight on zero-padded keys outside the map'
    local_name: Optional[str] = None
    linear = False

    def __init__(self, block: nn.Module):
        self.block = block

    def modules(self) -> List[nn.Module]:
        """Modules whose inputs and output :meth:`rows` reads."""
        raise NotImplementedError

    def rows(self, calls: Dict[nn.Module, tuple], query_indices: List[int],
             compare: bool) -> _Rows:
        """Rows from ``calls[module] = (args, output)`` of a forward."""
        raise NotImplementedError

    @staticmethod
    def grid(calls, module) -> HW:
        return tuple(calls[module][0][-1])


class _WindowProbe(_Probe):
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
        return _Rows(rows, padding)


class _L2ViTLinearProbe(_Probe):
    """L²ViT's LGA: ReLU linear attention with a denominator floor, then
    the LCM on the normed sum."""
    kind = 'ReLU linear attention + LCM'
    local_name = 'LCM'
    linear = True

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
        hw = self.grid(calls, block)
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
        result = _Rows(rows, 1 - rows.sum(-1), local, share)
        if compare:
            weight = share[:, None, None]
            result.variants = compare_rows(q, k, attn.num_heads)
            result.variants['enhanced (+ LCM)'] = (
                (1 - weight) * rows + weight * local[:, None])
        return result


class _FocusedProbe(_Probe):
    """FLatten-PVT and FLatten-Swin linear blocks: ``attn(x, hw)`` with the
    host's projections, focused linear attention plus the DWC."""
    kind = 'focused linear attention + DWC'
    unattended_reason = 'lost to the normaliser eps'
    local_name = 'DWC'
    linear = True

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
                    query_indices, compare: bool, local_branch) -> _Rows:
    """Rows, local branch and compare view of focused linear attention on
    ``(N, C)`` projections."""
    q = q[query_indices]
    rows = focused_rows(attn, q, k, hw)
    local, local_out = local_influence(local_branch, v[None], query_indices)
    share = branch_share(local_out, attention_output(rows, v))
    result = _Rows(rows, 1 - rows.sum(-1), normalise(local), share)
    if compare:
        result.variants = dict(
            compare_rows(q, _keys_with_position(attn, k, hw), attn.num_heads),
            focused=rows)
    return result


class _CSwinProbe(_Probe):
    """FLatten-CSwin blocks: one or two branches ``attn(q, k, v, hw)``,
    each focused linear attention (DWC + LePE) or softmax within stripes
    or globally (LePE)."""

    def __init__(self, block: nn.Module):
        super().__init__(block)
        attn = block.attns[0]
        self.linear = isinstance(attn, LePEFocusedLinearAttention)
        if self.linear:
            self.kind = 'focused linear attention + DWC + LePE'
            self.unattended_reason = _FocusedProbe.unattended_reason
            self.local_name = 'DWC + LePE'
        else:
            self.kind = ('cross-shaped stripe softmax + LePE' if len(
                block.attns) > 1 else 'global softmax + LePE')
            self.local_name = 'LePE'

    def modules(self):
        return list(self.block.attns)

    def rows(self, calls, query_indices, compare):
        if self.linear:
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
        return _Rows(
            torch.cat(rows, 1), torch.cat(padding, 1), normalise(local),
            share)


def _probe_for(block: nn.Module) -> Optional[_Probe]:
    if isinstance(block, LocalWindowBlock):
        return _WindowProbe(block)
    if isinstance(block, LinearGlobalBlock):
        return _L2ViTLinearProbe(block)
    if isinstance(block, (FLattenPVTBlock, FLattenSwinBlock)):
        if isinstance(block.attn, UnmaskedWindowAttention):
            return _WindowProbe(block)
        return _FocusedProbe(block)
    if isinstance(block, CSwinBlock):
        return _CSwinProbe(block)
    return None


def list_layers(backbone: nn.Module) -> Dict[str, str]:
    """``{'STAGE.BLOCK': kind}`` for every block of one of the plugin's
    backbones (0-based indices, ``backbone.stages[STAGE].blocks[BLOCK]``).
    """
    layers = {}
    for i, stage in enumerate(getattr(backbone, 'stages', [])):
        for j, block in enumerate(getattr(stage, 'blocks', [])):
            probe = _probe_for(block)
            if probe is not None:
                layers[f'{i}.{j}'] = probe.kind
    if not layers:
        raise ValueError(f'{type(backbone).__name__} is not one of the '
                         'plugin backbones (L2ViT, FLattenPVT, FLattenPVTv2, '
                         'FLattenSwin, FLattenCSWin)')
    return layers


def _layer_probe(backbone: nn.Module, layer: str) -> _Probe:
    layers = list_layers(backbone)
    if layer not in layers:
        valid = ', '.join(f'{name} ({kind})' for name, kind in layers.items())
        raise ValueError(f'unknown layer {layer!r} of '
                         f'{type(backbone).__name__}; valid layers '
                         f'(STAGE.BLOCK) are: {valid}')
    stage, block = (int(i) for i in layer.split('.'))
    return _probe_for(backbone.stages[stage].blocks[block])


def check_points(points: Sequence[Tuple[int, int]], image_hw: HW) -> None:
    """Raise a ValueError for an ``(x, y)`` point outside an image of
    ``image_hw``, naming the valid ranges."""
    height, width = image_hw
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(
                f'query ({x}, {y}) is outside the {width}x{height} image; '
                f'valid queries are X in [0, {width - 1}] and Y in '
                f'[0, {height - 1}]')


class _StopForward(Exception):
    """Raised after the probed block: the rest of the network is not
    needed."""


def _capture(backbone: nn.Module, image: torch.Tensor, probe: _Probe):
    """Run ``backbone(image)`` up to the probed block and return
    ``{module: (args, output)}`` of the probe's modules."""
    calls = {}

    def save(module, args, output):
        calls.setdefault(module, (args, output))

    def stop(module, args, output):
        raise _StopForward

    handles = [m.register_forward_hook(save) for m in probe.modules()]
    # Registered last, so the block's own ``save`` runs before it.
    handles.append(probe.block.register_forward_hook(stop))
    try:
        with torch.no_grad():
            backbone(image)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return calls


@torch.no_grad()
def attention_maps(backbone: nn.Module,
                   image: torch.Tensor,
                   layer: str,
                   points: Sequence[Tuple[int, int]],
                   compare: bool = False) -> AttentionMaps:
    """The attention rows of the tokens under some image points.

    Args:
        backbone (nn.Module): One of the plugin's backbones, in eval mode.
        image (Tensor): ``(1, 3, H, W)`` normalised image.
        layer (str): ``'STAGE.BLOCK'``, see :func:`list_layers`.
        points (Sequence[tuple[int, int]]): ``(x, y)`` pixels of ``image``;
            each selects the token whose cell holds it.
        compare (bool): Also compute softmax and plain ReLU linear attention
            rows with the block's queries and keys (linear blocks only).

    Returns:
        AttentionMaps: The rows and what goes with them.
    """
    probe = _layer_probe(backbone, layer)
    if compare and not probe.linear:
        linear = [n for n, kind in list_layers(backbone).items() if 'linear'
                  in kind]
        raise ValueError(f'compare needs a linear-attention layer; {layer} '
                         f'is {probe.kind}. Linear layers of '
                         f'{type(backbone).__name__}: {", ".join(linear)}')
    image_hw = tuple(image.shape[-2:])
    if not points:
        raise ValueError('attention_maps needs at least one query point')
    check_points(points, image_hw)
    calls = _capture(backbone, image, probe)
    hw = probe.grid(calls, probe.modules()[0])
    queries = [(y * hw[0] // image_hw[0], x * hw[1] // image_hw[1])
               for x, y in points]
    result = probe.rows(calls, [r * hw[1] + c for r, c in queries], compare)

    def as_maps(rows):
        return rows.reshape(*rows.shape[:-1], *hw)

    return AttentionMaps(
        layer=layer,
        kind=probe.kind,
        grid=hw,
        queries=queries,
        rows=as_maps(result.rows),
        unattended=result.unattended,
        unattended_reason=probe.unattended_reason,
        local=None if result.local is None else as_maps(result.local),
        local_name=probe.local_name,
        local_share=result.local_share,
        variants={
            name: as_maps(rows)
            for name, rows in result.variants.items()
        })


def build_backbone(spec: str,
                   checkpoint: Optional[str] = None,
                   all_outputs: bool = False):
    """Build a backbone from a config file or a registered type.

    Args:
        spec (str): A config file (its ``model.backbone`` is built; its
            ``init_cfg`` is dropped, so nothing is downloaded) or a
            registered type, optionally with an arch: ``'L2ViT'``,
            ``'FLattenSwin:small'``, ``'mmdet.SwinTransformer'``.
        checkpoint (str, optional): Backbone or full-model checkpoint (keys
            with a ``backbone.`` prefix are taken); without one the weights
            are the backbone's random initialisation.
        all_outputs (bool): Return the outputs of all four stages.

    Returns:
        tuple[nn.Module, dict]: The backbone in eval mode and the image
        normalisation ``dict(mean=..., std=..., to_rgb=...)``.
    """
    normalisation = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, to_rgb=True)
    if spec.endswith('.py') and not osp.isfile(spec):
        raise FileNotFoundError(f'config file {spec!r} does not exist')
    if osp.isfile(spec):
        cfg = Config.fromfile(spec)
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        backbone_cfg = cfg.model.backbone
        backbone_cfg.pop('init_cfg', None)
        preprocessor = cfg.model.get('data_preprocessor') or cfg.get(
            'data_preprocessor') or {}
        for key in ('mean', 'std'):
            normalisation[key] = preprocessor.get(key, normalisation[key])
        normalisation['to_rgb'] = preprocessor.get(
            'bgr_to_rgb', preprocessor.get('to_rgb', True))
    else:
        backbone_type, _, arch = spec.partition(':')
        backbone_cfg = dict(type=backbone_type)
        if arch:
            backbone_cfg['arch'] = arch
    if all_outputs:
        backbone_cfg['out_indices'] = (0, 1, 2, 3)
    backbone = MODELS.build(backbone_cfg)
    if checkpoint is None:
        # init_weights logs every parameter's initialiser at INFO level.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            backbone.init_weights()
        finally:
            logger.setLevel(level)
    else:
        load_checkpoint(
            backbone,
            checkpoint,
            map_location='cpu',
            revise_keys=[(r'^module\.', ''), (r'^backbone\.', '')])
    # Some backbones' ``train`` does not return the module.
    backbone.eval()
    return backbone, normalisation


def read_image(path: str) -> np.ndarray:
    """Read any image OpenCV reads as an ``(H, W, 3)`` uint8 BGR array."""
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) \
        if osp.isfile(path) else None
    if image is None:
        raise ValueError(f'cannot read {path!r} as an image (OpenCV reads '
                         'PNG, JPEG, BMP, TIFF, WebP and more)')
    return image


def image_to_tensor(image: np.ndarray,
                    size: Optional[HW] = None,
                    mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD,
                    to_rgb: bool = True) -> torch.Tensor:
    """A BGR uint8 image -> ``(1, 3, H, W)`` normalised float tensor,
    resized to ``size = (H, W)`` if given."""
    if size is not None:
        image = cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR)
    if to_rgb:
        image = image[..., ::-1]
    x = torch.from_numpy(image.astype(np.float32))
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(2, 0, 1)[None].contiguous()
