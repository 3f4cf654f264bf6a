# Copyright (c) OpenMMLab. All rights reserved.
"""Helpers for attention rows that no block kind owns: heads, scores,
normalising, rows of any keys-first linear attention from its steps, rows
of window softmax on the window attentions' own layout, and the influence
and share of a convolution branch."""
from typing import Callable, Optional, Sequence

import torch

from ..models.layers.tokens import HW
from ..models.layers.window_attention import (merge_windows, padded_size,
                                              partition_windows)


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


def softmax_rows(q: torch.Tensor, k: torch.Tensor,
                 num_heads: int) -> torch.Tensor:
    """Global softmax rows (scale ``d ** -0.5``), ``(Q, heads, N)``, for
    ``(Q, C)`` queries and ``(N, C)`` keys: what the block's queries and
    keys would give under softmax attention."""
    head_dims = q.shape[-1] // num_heads
    return (head_scores(q, k, num_heads) * head_dims**-0.5).softmax(-1)


def attention_output(rows: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(Q, C)``: the attention of ``(Q, heads, N)`` rows over ``(N, C)``
    values, heads merged."""
    values = split_heads(v, rows.shape[1])
    return torch.einsum('qhn,nhd->qhd', rows, values).flatten(1)


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


def keys_first_rows(q: torch.Tensor,
                    k: torch.Tensor,
                    summary: Callable,
                    normaliser: Callable,
                    attend: Callable,
                    chunk: int = 256) -> torch.Tensor:
    """Rows of a keys-first linear attention, from its own steps.

    The attention computes ``attend(q, kv, normaliser(q, key_stat))`` with
    ``(kv, key_stat) = summary(k, v)``, linear in the values: the summary
    of key ``m`` with the one-hot value ``e_m`` is key ``m``'s column of
    the N x N matrix. The keys are summarised a chunk at a time with
    one-hot values, their key statistics summed, so memory stays linear in
    N.

    Args:
        q (Tensor): ``(heads, Q, d)`` query features.
        k (Tensor): ``(heads, N, d)`` key features.
        summary (Callable): ``(keys, values) -> (kv, key_stat)`` for a
            chunk of keys (its share of the whole's summary).
        normaliser (Callable): ``(q, key_stat) -> normaliser``.
        attend (Callable): ``(q, kv, normaliser) -> out``.
        chunk (int): Keys summarised at a time. Default: 256.

    Returns:
        Tensor: ``(Q, heads, N)`` rows.
    """
    heads, num_keys, _ = k.shape
    columns, key_stat = [], 0
    for start in range(0, num_keys, chunk):
        keys = k[:, start:start + chunk]
        one_hot = torch.eye(
            keys.shape[1], dtype=k.dtype,
            device=k.device).expand(heads, -1, -1)
        kv, chunk_stat = summary(keys, one_hot)
        columns.append(kv)
        key_stat = key_stat + chunk_stat
    rows = attend(q, torch.cat(columns, -1), normaliser(q, key_stat))
    return rows.transpose(0, 1)


def window_layout(hw: HW, window: HW, shift: int = 0) -> torch.Tensor:
    """The token of each window slot, ``(num_windows, wh * ww)`` row-major
    indices into ``hw`` (-1 for padding), cut by the window attentions' own
    :func:`partition_windows` from the zero-padded map rolled up and left by
    ``shift``."""
    index = torch.arange(1, hw[0] * hw[1] + 1).view(1, -1, 1)
    padded_hw = padded_size(hw, window)
    if shift:
        padded = merge_windows(
            partition_windows(index, hw, window), padded_hw, window)
        index = torch.roll(
            padded.view(1, *padded_hw), (-shift, -shift),
            dims=(1, 2)).view(1, -1, 1)
        hw = padded_hw
    return partition_windows(index, hw, window)[..., 0] - 1


def window_softmax_rows(q: torch.Tensor,
                        k: torch.Tensor,
                        padding_key: torch.Tensor,
                        hw: HW,
                        query_indices: Sequence[int],
                        window: HW,
                        shift: int = 0,
                        attn_mask: Optional[torch.Tensor] = None):
    """Softmax attention rows within windows, for some queries.

    Args:
        q (Tensor): ``(heads, N, d)`` queries of every token of ``hw``.
        k (Tensor): ``(heads, N, d)`` keys.
        padding_key (Tensor): ``(heads, 1, d)`` key of a padded token.
        hw (tuple[int, int]): The token grid.
        query_indices (Sequence[int]): Row-major indices of the queries.
        window (tuple[int, int]): Window height and width.
        shift (int): Cyclic shift of the windows. Default: 0.
        attn_mask (Tensor, optional): What the attention adds to the logits,
            ``(num_windows or 1, heads, K, K)`` for windows of K tokens
            (Swin's relative position bias and shift mask).

    Returns:
        tuple[Tensor, Tensor]: ``(Q, heads, N)`` rows over the map's keys
        and ``(Q, heads)`` weight on padding keys.
    """
    num_heads, num_tokens, head_dims = q.shape
    layout = window_layout(hw, window, shift)
    # Padding keys (-1) go to an extra last column.
    layout = layout % (num_tokens + 1)
    keys = torch.cat([k, padding_key], dim=1)
    rows = q.new_zeros(len(query_indices), num_heads, num_tokens + 1)
    for row, index in zip(rows, query_indices):
        window_index, position = (layout == index).nonzero()[0].tolist()
        key_indices = layout[window_index]
        logits = torch.einsum('hd,hkd->hk', q[:, index],
                              keys[:, key_indices]) * head_dims**-0.5
        if attn_mask is not None:
            logits = logits + attn_mask[window_index % len(attn_mask), :,
                                        position]
        row.index_add_(1, key_indices, logits.softmax(-1))
    return rows[..., :num_tokens], rows[..., num_tokens]
