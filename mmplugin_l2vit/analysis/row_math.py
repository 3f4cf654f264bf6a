# Copyright (c) OpenMMLab. All rights reserved.
"""Helpers for attention rows that no block kind owns: heads, scores,
normalising, and the influence and share of a convolution branch."""
from typing import Callable, Sequence

import torch


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
