# Copyright (c) OpenMMLab. All rights reserved.
"""Linear attention: the K-first kernel and L²ViT's enhanced global
attention with its Local Concentration Module (LCM)."""
import torch
import torch.nn as nn

from .tokens import HW, map_to_tokens, tokens_to_map


def kfirst_linear_attention(q, k, v, kv_scale, denominator_floor: float):
    """Kernelised attention computed keys-first, in O(N d²).

    ``out_n = kv_scale * sum_m (q_n . k_m) v_m / max(q_n . sum_m k_m, floor)``

    The sums over all N tokens run in at least float32, also under
    autocast, since at detection sizes they overflow half precision.

    Args:
        q (Tensor): Non-negative query features, ``(B, heads, N, d)``.
        k (Tensor): Non-negative key features, ``(B, heads, N, d)``.
        v (Tensor): Values, ``(B, heads, N, d)``.
        kv_scale (Tensor): Per-head scale of ``kᵀv``, ``(heads, 1, 1)``.
        denominator_floor (float): Lower bound of the normaliser.

    Returns:
        Tensor: ``(B, heads, N, d)`` in the dtype of ``v``.
    """
    out_dtype = v.dtype
    dtype = torch.promote_types(v.dtype, torch.float32)
    with torch.autocast(device_type=q.device.type, enabled=False):
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        key_sum = k.sum(dim=-2, keepdim=True).transpose(-2, -1)
        denominator = torch.clamp(q @ key_sum, min=denominator_floor)
        kv = (k.transpose(-2, -1) @ v) * kv_scale.to(dtype)
        out = (q @ kv) / denominator
    return out.to(out_dtype)


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
        out = kfirst_linear_attention(q.relu(), k.relu(), v, self.temperature,
                                      self.denominator_floor)
        out = out.transpose(1, 2).reshape(batch, num_tokens, channels)
        return self.proj(out)


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
