# Copyright (c) OpenMMLab. All rights reserved.
"""L²ViT's Local Concentration Module (LCM): the convolutional branch that
sharpens the linear global attention's diffuse output locally."""
from typing import Optional

import torch.nn as nn

from .depthwise_conv import DepthwiseConv2d
from .frugal_autograd import recompute
from .tokens import HW, map_to_tokens, tokens_to_map


class LocalConcentrationModule(nn.Module):
    """L²ViT's LCM: depthwise 7x7 conv -> GELU -> BatchNorm -> depthwise 7x7
    conv, applied to the token map.

    Args:
        channels (int): Channels of the tokens.
        kernel_size (int): Kernel of both depthwise convolutions. Default: 7.
    """

    def __init__(self, channels: int, kernel_size: int = 7):
        super().__init__()
        self.conv1 = DepthwiseConv2d(channels, kernel_size)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(channels)
        self.conv2 = DepthwiseConv2d(channels, kernel_size)

    def concentrate(self, x, hw: HW, norm: Optional[nn.Module] = None):
        """The chain on ``(B, H*W, C)`` tokens, after ``norm`` if given."""
        if norm is not None:
            x = norm(x)
        x = self.bn(self.act(self.conv1(tokens_to_map(x, hw))))
        return map_to_tokens(self.conv2(x))

    def forward(self, x, hw: HW, norm: Optional[nn.Module] = None):
        """The LCM of ``(B, H*W, C)`` tokens, or of ``norm(x)``. In training
        only ``x`` is kept; the chain (and the norm) is recomputed for the
        gradients."""
        owners = (self, ) if norm is None else (norm, self)
        return recompute(
            lambda tokens: self.concentrate(tokens, hw, norm),
            x,
            owners=owners)
