# Copyright (c) OpenMMLab. All rights reserved.
"""Views between token sequences, feature maps and attention heads.

Tokens are ``(B, N, C)`` with ``N = H * W`` in row-major order. The map view
of a contiguous token tensor is a channels-last ``(B, C, H, W)`` tensor that
shares its memory, so convolutions on it need no copy. Heads own
consecutive channels: head ``h`` holds channels ``h * d`` to ``(h + 1) * d``.
"""
from typing import Tuple

import torch

HW = Tuple[int, int]


def is_exporting() -> bool:
    """Whether the forward pass is being traced (``torch.jit.trace``) or
    exported to ONNX rather than run: sizes are then symbolic, so a Python
    branch on them would be fixed in the graph at the traced size. Callers
    take the one path that is valid at every size (pad even by zero,
    resize even to the same grid)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def is_building_graph() -> bool:
    """Whether the forward pass is being compiled, scripted, traced or
    exported rather than run eagerly. The eager-only fast paths (the CPU's
    in-place inference, the CPU depthwise weight gradient, memory-frugal
    autograd, the token-major ``kᵀv``) then step aside, so that a graph
    records plain operations."""
    return (torch.compiler.is_compiling() or torch.jit.is_scripting()
            or is_exporting())


def records_eagerly(*tensors) -> bool:
    """Whether autograd records an operation on ``tensors`` (None
    allowed) in an eager pass: grad mode on, some tensor requires grad, and
    no graph being built (:func:`is_building_graph`). The eager training
    fast paths take this condition, each with its own measured scope."""
    return (torch.is_grad_enabled() and not is_building_graph() and any(
        isinstance(t, torch.Tensor) and t.requires_grad for t in tensors))


def tokens_to_map(x: torch.Tensor, hw: HW) -> torch.Tensor:
    """``(B, H*W, C)`` tokens -> ``(B, C, H, W)`` map (a view).

    Built as a permute of ``(B, H, W, C)`` so that every stride, the batch
    one included, is that of a channels-last tensor: oneDNN then runs the
    (depthwise) convolutions in channels-last, several times faster than on
    a transposed view, which it would treat as a strided NCHW input.
    """
    batch, _, channels = x.shape
    return x.reshape(batch, *hw, channels).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` map -> ``(B, H*W, C)`` tokens (a view of a
    channels-last map)."""
    batch, channels = x.shape[:2]
    return x.permute(0, 2, 3, 1).reshape(batch, -1, channels)


def tokens_to_nchw(x: torch.Tensor, hw: HW) -> torch.Tensor:
    """``(B, H*W, C)`` tokens -> a contiguous ``(B, C, H, W)`` map."""
    batch, _, channels = x.shape
    return x.reshape(batch, *hw, channels).permute(0, 3, 1, 2).contiguous()


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(..., N, C)`` -> ``(..., heads, N, C // heads)`` (a view)."""
    # Not unflatten: the ONNX exporter writes the other sizes of an
    # unflatten as the traced constants; reshape keeps them symbolic.
    return x.reshape(*x.shape[:-1], num_heads, -1).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(..., heads, N, d)`` -> ``(..., N, heads * d)``, the inverse of
    :func:`split_heads` (a copy unless ``x`` is such a view)."""
    return x.transpose(-3, -2).flatten(-2)


class _TokenProduct(torch.autograd.Function):
    """``aᵀb`` whose backward returns each gradient with its tokens' rows
    contiguous, like the input's own."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a.transpose(-2, -1) @ b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = b @ grad.transpose(-2, -1)
        if ctx.needs_input_grad[1]:
            grad_b = a @ grad
        return grad_a, grad_b


def token_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``aᵀb`` summed over the tokens: ``(..., N, d1)`` and ``(..., N, d2)``
    -> ``(..., d1, d2)``.

    Autograd would return ``a``'s gradient as the transpose of a ``(d1,
    N)`` product, channel-major: every element-wise step of ``a``'s
    backward (a feature map's, a focusing function's) then mixes that
    layout with its token-major operands, which costs the CPU 3-6x a plain
    pass. In eager CPU training (where it was measured) the gradients are
    instead computed as ``(N, d)`` products, token-major; the forward
    product is the same.
    """
    if a.device.type == 'cpu' and records_eagerly(a, b):
        return _TokenProduct.apply(a, b)
    return a.transpose(-2, -1) @ b
