# Copyright (c) OpenMMLab. All rights reserved.
"""Depthwise convolutions, with a faster weight gradient in CPU training.

Every local branch of these backbones is a depthwise convolution: L²ViT's
LCM (7x7), FLatten's rank restoration (5x5), PVTv2's MLP, CSWin's LePE and
the conditional position encodings (3x3). On the CPU, aten computes the
weight gradient of a depthwise convolution 3-16x slower than the
convolution itself (a 96-channel 128x128 map, 7x7: 17-25 ms against
1.8 ms on 2 threads), which made it the largest cost of L²ViT-T's
training step after the matrix products.

That gradient is itself a depthwise correlation: for each channel, the
padded input correlated with the output's gradient, one value per kernel
tap. :class:`DepthwiseConv2d` computes it with the convolution's own
forward kernel, band by band of output rows so that each band stays in
the caches (2-3x faster than aten at 512² inputs, up to 16x on the small
late-stage maps). Only the weight gradient changes: the forward pass and
the input's gradient are aten's. The path runs where it was measured: CPU
float32 eager training without autocast; elsewhere (GPUs, autocast,
compiling, tracing, export) the module is a plain ``nn.Conv2d``.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tokens import records_eagerly

# Elements of the output gradient per band of rows (1 MB of float32): the
# band and its input rows stay in a core's L2 while the kernel passes.
WEIGHT_GRAD_BAND_ELEMENTS = 1 << 18


def depthwise_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, kernel_size,
                          padding) -> torch.Tensor:
    """The weight gradient ``(C, 1, kh, kw)`` of a stride-1 depthwise
    convolution whose output has the input's size, from its input ``x``
    and output gradient ``grad_out`` (both ``(B, C, H, W)``)."""
    batch, channels, height, width = grad_out.shape
    (kernel_h, kernel_w), (pad_h, pad_w) = kernel_size, padding
    rows = max(1, WEIGHT_GRAD_BAND_ELEMENTS // (width * channels))
    grad = None
    for image in range(batch):
        for top in range(0, height, rows):
            band = min(rows, height - top)
            # The input rows the band's outputs read, zero-padded where
            # they fall outside the map: the band of the padded input,
            # padded a band at a time (no padded copy of the whole map).
            first, last = top - pad_h, top + band + kernel_h - 1 - pad_h
            inputs = F.pad(
                x[image:image + 1, :,
                  max(first, 0):min(last, height)],
                (pad_w, pad_w, max(-first, 0), max(last - height, 0)))
            # Each channel's band of gradients is the kernel that slides
            # over its input rows: one output value per kernel tap.
            part = F.conv2d(
                inputs,
                grad_out[image, :,
                         top:top + band].reshape(channels, 1, band, width),
                groups=channels)
            grad = part if grad is None else grad.add_(part)
    return grad.reshape(channels, 1, kernel_h, kernel_w)


class _DepthwiseConv2dFunction(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, [1, 1], list(ctx.padding), [1, 1],
                False, [0, 0], x.shape[1], [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_weight = depthwise_weight_grad(x, grad_out, weight.shape[2:],
                                                ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None


class DepthwiseConv2d(nn.Conv2d):
    """A stride-1 depthwise ``nn.Conv2d`` (same parameters and checkpoint
    keys) that keeps the map's size: ``padding`` defaults to half the odd
    ``kernel_size``.

    Args:
        channels (int): Input and output channels, one filter each.
        kernel_size (int): Odd kernel size.
        bias (bool): Whether to add a learned bias. Default: True.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True):
        if kernel_size % 2 == 0:
            raise ValueError(f'a size-keeping depthwise convolution needs '
                             f'an odd kernel_size, got {kernel_size}')
        super().__init__(
            channels,
            channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=channels,
            bias=bias)

    def forward(self,
                x: torch.Tensor,
                shared_by: int = 1,
                channels: Optional[slice] = None) -> torch.Tensor:
        """Convolve ``x``; with ``shared_by`` > 1, ``x`` has ``shared_by``
        groups of this layer's channels, each convolved with the same
        filters (channel ``g * channels + j`` with filter ``j``); with
        ``channels``, ``x`` holds only those of this layer's channels."""
        weight, bias = self.weight, self.bias
        if channels is not None:
            weight = weight[channels]
            bias = None if bias is None else bias[channels]
        if shared_by > 1:
            weight = weight.repeat(shared_by, 1, 1, 1)
            bias = None if bias is None else bias.repeat(shared_by)
        if self.uses_cpu_weight_grad(x):
            return _DepthwiseConv2dFunction.apply(x, weight, bias,
                                                  self.padding)
        return F.conv2d(
            x, weight, bias, padding=self.padding, groups=weight.shape[0])

    def uses_cpu_weight_grad(self, x: torch.Tensor) -> bool:
        """Whether this call takes the measured CPU training path: float32
        on the CPU with the weight's gradient recorded, eager, no
        autocast."""
        return (x.device.type == 'cpu' and x.dtype == torch.float32
                and not torch.is_autocast_enabled('cpu')
                and records_eagerly(self.weight))
