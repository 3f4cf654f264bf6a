# Copyright (c) OpenMMLab. All rights reserved.
"""L²ViT's linear global attention (LGA), computed keys-first in O(N d²).

With ReLU features q, k of the projected queries and keys, per head:

    out_n = s * sum_m (q_n . k_m) v_m / max(q_n . sum_m k_m, floor)

evaluated as ``q @ (s kᵀv) / max(q @ sum(k), floor)``, never forming the
N x N matrix; ``s`` is a learned per-head scale and ``floor`` the
:data:`DENOMINATOR_FLOOR`. :class:`ReLULinearAttention` composes the steps
below in this order; the CPU's in-place inference
(:mod:`.cpu_inference`) calls the same steps on chunks of tokens.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .float32_sums import sums_in_float32
from .frugal_autograd import normed_linear, recompute_then_linear
from .tokens import merge_heads, split_heads, token_product

# Lower bound of the normaliser in the official model: an absolute floor,
# not an epsilon, so rows whose normaliser is smaller sum to less than one.
DENOMINATOR_FLOOR = 100.


def relu_features(x: torch.Tensor) -> torch.Tensor:
    """The feature map φ(x) = ReLU(x) of queries and keys."""
    return F.relu(x)


def relu_key_value_summary(k: torch.Tensor, v: torch.Tensor,
                           kv_scale: torch.Tensor):
    """``(kv_scale * kᵀv, sum_m k_m)``: all the attention needs of the keys
    and values, ``(..., d, d)`` and ``(..., d, 1)``. Both are sums over the
    tokens, so the summaries of chunks of tokens add up to the whole's.

    Args:
        k (Tensor): Key features, ``(..., N, d)``.
        v (Tensor): Values, ``(..., N, d)``.
        kv_scale (Tensor): Per-head scale of ``kᵀv``, ``(heads, 1, 1)``.
    """
    kv = token_product(k, v) * kv_scale
    return kv, k.sum(dim=-2, keepdim=True).transpose(-2, -1)


def relu_normaliser(q: torch.Tensor, key_sum: torch.Tensor,
                    floor: float) -> torch.Tensor:
    """``max(q_n . sum_m k_m, floor)`` per query, ``(..., N, 1)``."""
    return torch.clamp(q @ key_sum, min=floor)


def relu_attend(q: torch.Tensor, kv: torch.Tensor,
                normaliser: torch.Tensor) -> torch.Tensor:
    """``(q @ kv) / normaliser``, ``(..., N, d)``."""
    return (q @ kv) / normaliser


@sums_in_float32
def relu_linear_attention(q,
                          k,
                          v,
                          kv_scale,
                          denominator_floor: float = DENOMINATOR_FLOOR):
    """L²ViT's linear attention on ``(B, heads, N, d)`` features ``q``,
    ``k`` and values ``v``, per-head ``kv_scale`` ``(heads, 1, 1)``: the
    summary, normaliser and attend steps, summed in float32."""
    kv, key_sum = relu_key_value_summary(k, v, kv_scale)
    return relu_attend(q, kv, relu_normaliser(q, key_sum, denominator_floor))


class ReLULinearAttention(nn.Module):
    """Multi-head linear attention with a ReLU feature map (L²ViT's LGA).

    Parameter names are those of the official checkpoints, which the
    converters and released weights rely on: ``temperature`` is the
    per-head scale of ``kᵀv`` (the ``kv_scale`` of the steps, initialised
    to ``head_dims ** -0.5``), not a softmax temperature.

    Args:
        embed_dims (int): Channels of the tokens.
        num_heads (int): Number of heads.
        denominator_floor (float): Lower bound of the normaliser.
            Default: :data:`DENOMINATOR_FLOOR`.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 denominator_floor: float = DENOMINATOR_FLOOR):
        super().__init__()
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.denominator_floor = denominator_floor
        self.temperature = nn.Parameter(
            torch.full((num_heads, 1, 1), self.head_dims**-0.5))
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x, hw=None, norm: Optional[nn.Module] = None):
        """``(B, N, C)`` tokens -> ``(B, N, C)``; the grid ``hw`` is not
        needed (global attention) and accepted for a uniform call. With
        ``norm``, the attention of ``norm(x)``.

        In training only ``x`` and the projections ``qkv`` are kept: the
        norm and :meth:`attend` are recomputed for the gradients (see
        :mod:`.frugal_autograd`).
        """
        return recompute_then_linear(
            self.attend,
            normed_linear(x, self.qkv, norm),
            linear=self.proj,
            owners=(self.temperature, ))

    def attend(self, qkv):
        """The ``(B, N, C)`` attention, before ``proj``, of the ``(B, N,
        3C)`` projected queries, keys and values."""
        q, k, v = (
            split_heads(t, self.num_heads) for t in qkv.chunk(3, dim=-1))
        out = relu_linear_attention(
            relu_features(q), relu_features(k), v, self.temperature,
            self.denominator_floor)
        return merge_heads(out)
