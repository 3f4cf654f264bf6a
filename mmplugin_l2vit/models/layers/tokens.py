# Copyright (c) OpenMMLab. All rights reserved.
"""Conversions between token sequences and feature maps.

Tokens are ``(B, N, C)`` with ``N = H * W`` in row-major order. The map view
of a contiguous token tensor is a channels-last ``(B, C, H, W)`` tensor that
shares its memory, so convolutions on it need no copy.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

HW = Tuple[int, int]

# Chunked in-place inference (see :func:`adds_in_place`): elements of the
# largest temporary of one chunk. A whole-map temporary (hundreds of MB at
# 2048x2048) would be mapped fresh and zeroed page by page in every block;
# chunks reuse one buffer. Sizes measured on a 2-core EPYC (1 MB L2 per
# core, 32 MB L3), interleaved runs at 224 to 2048 pixels:
# - the MLP's hidden layer, 2 MB in fp32: it stays in the caches between
#   fc1, GELU and fc2 (FLatten-PVT-T at 224: ~15% faster than 8 MB); but
#   at least 1024 tokens, below which the wide late-stage GEMMs slow down;
MLP_CHUNK_ELEMENTS = 1 << 19
MLP_MIN_CHUNK_TOKENS = 1024
# - L²ViT's keys and values, 8 MB: smaller chunks only slow its GEMMs;
LINEAR_ATTENTION_CHUNK_ELEMENTS = 1 << 21
# - FLatten's keys and values, 4 MB: the focusing function makes eight
#   element-wise passes over each chunk.
FOCUSED_ATTENTION_CHUNK_ELEMENTS = 1 << 20
# Tokens -> NCHW outputs: transposed a 512 KB band at a time (fits the L2).
TRANSPOSE_CHUNK_ELEMENTS = 1 << 17


def even_chunk_size(total: int, largest: int) -> int:
    """The smallest step that cuts ``total`` items into as few chunks of at
    most ``largest`` items as possible: the chunks are equal but for the
    last, short by fewer items than there are chunks. No small leftover
    chunk whose matrix products run far below the GEMM rate. At least 1,
    so that an empty input still gives a valid step."""
    count = max(1, -(-total // max(1, largest)))
    return max(1, -(-total // count))


def is_exporting() -> bool:
    """Whether the forward pass is being traced (``torch.jit.trace``) or
    exported to ONNX rather than run: sizes are then symbolic, so a Python
    branch on them would be fixed in the graph at the traced size, and
    loops over chunks would be unrolled. Callers take the one path that is
    valid at every size (pad even by zero, resize even to the same grid)
    and never the in-place inference paths."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _hooked(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks
               for m in module.modules())


def adds_in_place(x: torch.Tensor,
                  drop_path: nn.Module,
                  *branch: nn.Module,
                  under_autocast: bool = False) -> bool:
    """Whether a residual branch ``x + drop_path(f(x))`` made of the
    modules ``branch`` may be added into ``x`` in place, chunk by chunk:
    only in eager inference (autograd off, stochastic depth in eval mode; a
    compiled graph plans its own memory), with autocast off unless the
    branch handles it (``under_autocast``), on a contiguous ``x`` the
    caller owns, and with no forward hook on the branch (hooks expect the
    whole-map calls). Never while tracing or exporting (see
    :func:`is_exporting`): the chunk loops and oneDNN calls would be baked
    into the graph or not export at all."""
    return not (torch.is_grad_enabled() or drop_path.training or
                (torch.is_autocast_enabled(x.device.type)
                 and not under_autocast) or torch.compiler.is_compiling()
                or is_exporting() or not x.is_contiguous()
                or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks
                or any(_hooked(module) for module in branch))


def _onednn_linear_available() -> bool:
    try:
        return (torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._linear_pointwise is not None)
    except (AttributeError, RuntimeError):
        return False


ONEDNN_LINEAR = _onednn_linear_available()


# Never traced: only eager in-place paths call it, but after a graph break
# dynamo compiles the frames that run next, and inductor cannot lower
# oneDNN's linear with weights that are graph inputs.
@torch.compiler.disable
def inference_linear(x: torch.Tensor,
                     weight: torch.Tensor,
                     bias: Optional[torch.Tensor] = None,
                     gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then the exact GELU with ``gelu``, for
    the in-place inference paths only (where :func:`adds_in_place` holds:
    no autograd or hooks to respect).

    On the CPU in float32, or in bfloat16 under autocast, it is one oneDNN
    call with the bias and the GELU in the GEMM's epilogue (the kernel
    inductor uses): aten's ``addmm`` first copies the bias into the
    output, and the GELU is another pass over it (a slow one in bfloat16
    on CPUs without bfloat16 element-wise units). Same arithmetic up to
    rounding (float32: whole backbones agree to ~1e-6 relative); 10-30%
    faster GEMMs for the backbones' shapes.
    """
    dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    if (ONEDNN_LINEAR and x.device.type == 'cpu'
            and dtype in (torch.float32, torch.bfloat16)
            and x.dtype == weight.dtype == torch.float32):
        return torch.ops.mkldnn._linear_pointwise(
            x.to(dtype), weight.to(dtype),
            None if bias is None else bias.to(dtype),
            'gelu' if gelu else 'none', [], 'none' if gelu else '')
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


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
    """``(B, H*W, C)`` tokens -> a contiguous ``(B, C, H, W)`` output.

    Without autograd (eager), the transpose is copied a band of tokens at a
    time: aten's one transposing copy of a large map strides through memory
    far beyond the caches (3-4x slower for a 64-channel map of 256x256 or
    more). Same values either way. Traced and exported graphs take the one
    copy (see :func:`is_exporting`).
    """
    batch, num_tokens, channels = x.shape
    band = max(1, TRANSPOSE_CHUNK_ELEMENTS // channels)
    if (torch.is_grad_enabled() or torch.compiler.is_compiling()
            or is_exporting() or num_tokens <= band):
        return x.reshape(batch, *hw, channels).permute(0, 3, 1, 2).contiguous()
    out = x.new_empty(batch, channels, num_tokens)
    for start in range(0, num_tokens, band):
        out[:, :, start:start + band] = x[:,
                                          start:start + band].transpose(1, 2)
    return out.view(batch, channels, *hw)
