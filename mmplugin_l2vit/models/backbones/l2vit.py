# Copyright (c) OpenMMLab. All rights reserved.
"""L²ViT: alternating local window attention and enhanced linear global
attention blocks in four stages."""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import (constant_init, kaiming_init,
                                        trunc_normal_init)

from ...registry import MODELS
from ..converters import L2VIT_CONVERTER
from ..layers import (DENOMINATOR_FLOOR, ConvDownsample, ConvPosEnc, ConvStem,
                      LocalConcentrationModule, Mlp, ReLULinearAttention,
                      UnmaskedWindowAttention)
from ..layers.tokens import HW
from .base import HierarchicalBackbone, Stage


class LocalWindowBlock(nn.Module):
    """L²ViT's LWA block.

    ``a = CPE(x); b = a + W-MSA(LN(a)); c = CPE(b); out = c + MLP(LN(c))``

    Args:
        embed_dims (int): Channels of the tokens.
        num_heads (int): Attention heads.
        window_size (int): Side of the attention windows.
        mlp_ratio (float): Hidden width of the MLP over ``embed_dims``.
        drop_path (float): Stochastic depth rate of the residual branches.
    """
    # The forward for the CPU's in-place inference (see
    # layers/cpu_inference.py: a name is a step, a pair a residual).
    forward_steps = ('cpe_attn', ('norm_attn', 'attn'), 'cpe_ffn', ('norm_ffn',
                                                                    'ffn'))

    def __init__(self, embed_dims: int, num_heads: int, window_size: int,
                 mlp_ratio: float, drop_path: float):
        super().__init__()
        self.cpe_attn = ConvPosEnc(embed_dims)
        self.norm_attn = nn.LayerNorm(embed_dims)
        self.attn = UnmaskedWindowAttention(embed_dims, num_heads, window_size)
        self.cpe_ffn = ConvPosEnc(embed_dims)
        self.norm_ffn = nn.LayerNorm(embed_dims)
        self.ffn = Mlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x, hw: HW):
        # The norms are passed on: in training their outputs are not kept.
        x = self.cpe_attn(x, hw)
        x = x + self.drop_path(self.attn(x, hw, norm=self.norm_attn))
        x = self.cpe_ffn(x, hw)
        return x + self.drop_path(self.ffn(x, hw, norm=self.norm_ffn))


class LinearGlobalBlock(nn.Module):
    """L²ViT's LGA block: enhanced linear global attention.

    ``a = CPE(x); b = a + LinAttn(LN(a)); c = b + LCM(LN(b));
    out = c + MLP(LN(c))``

    Args:
        embed_dims (int): Channels of the tokens.
        num_heads (int): Attention heads.
        mlp_ratio (float): Hidden width of the MLP over ``embed_dims``.
        drop_path (float): Stochastic depth rate of the residual branches.
        denominator_floor (float): Lower bound of the linear attention's
            normaliser.
    """
    # The forward for the CPU's in-place inference (see
    # layers/cpu_inference.py: a name is a step, a pair a residual).
    forward_steps = ('cpe_attn', ('norm_attn', 'attn'), ('norm_lcm', 'lcm'),
                     ('norm_ffn', 'ffn'))

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float,
                 drop_path: float, denominator_floor: float):
        super().__init__()
        self.cpe_attn = ConvPosEnc(embed_dims)
        self.norm_attn = nn.LayerNorm(embed_dims)
        self.attn = ReLULinearAttention(embed_dims, num_heads,
                                        denominator_floor)
        self.norm_lcm = nn.LayerNorm(embed_dims)
        self.lcm = LocalConcentrationModule(embed_dims)
        self.norm_ffn = nn.LayerNorm(embed_dims)
        self.ffn = Mlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x, hw: HW):
        # The norms are passed on: in training their outputs are not kept.
        x = self.cpe_attn(x, hw)
        x = x + self.drop_path(self.attn(x, hw, norm=self.norm_attn))
        x = x + self.drop_path(self.lcm(x, hw, norm=self.norm_lcm))
        return x + self.drop_path(self.ffn(x, hw, norm=self.norm_ffn))


@MODELS.register_module()
class L2ViT(HierarchicalBackbone):
    """L²ViT backbone.

    A PyTorch implementation of `The Linear Attention Resurrection in Vision
    Transformer <https://arxiv.org/abs/2501.16182>`_, numerically identical
    to the official model (converted official checkpoints load through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``). Each stage
    alternates a Local Window Attention block and a Linear Global Attention
    block with the Local Concentration Module.

    Reproduced on purpose: the stem's BatchNorm followed by a LayerNorm, the
    linear attention's normaliser floor of 100, zero padding on the right
    and bottom (of the image to a multiple of 4, of odd maps before each
    downsampling, of maps to a multiple of the window) and padded window
    tokens attended to without a mask.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` or
            ``'base-384'`` (window 12), or a dict with the keys
            ``embed_dims``, ``depths``, ``num_heads``, ``window_size`` (one
            int) and optionally ``mlp_ratio``. Default: ``'tiny'``.
        in_channels (int): Channels of the input image. Default: 3.
        out_indices (Sequence[int]): Stages to return (strides 4, 8, 16,
            32). Default: (0, 1, 2, 3).
        drop_path_rate (float): Stochastic depth rate of the last block,
            rising linearly from 0 over all blocks. Default: 0.
        frozen_stages (int): mmdet convention: -1 freezes nothing, 0 the
            stem, k the stem and stages 1..k. Default: -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode during
            training. Default: False.
        with_cp (bool): Gradient checkpointing of each block to save
            memory. Default: False.
        denominator_floor (float): Lower bound of the linear attention's
            normaliser; 100 in the official model. Default: 100.
        allow_partial_load (bool): Load a checkpoint that holds fewer than
            half of the backbone's weights (with their shapes); by default
            it is refused with a ``CheckpointFormatError``, since random
            weights would pass for trained ones. Default: False.
        init_cfg (dict | list[dict], optional): Initialisation config, e.g.
            ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` for an
            official or converted checkpoint. Default: None.
    """
    arch_zoo = {
        'tiny':
        dict(
            embed_dims=[96, 192, 384, 768],
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7),
        'small':
        dict(
            embed_dims=[96, 192, 384, 768],
            depths=[2, 2, 18, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7),
        'base':
        dict(
            embed_dims=[128, 256, 512, 1024],
            depths=[2, 2, 18, 2],
            num_heads=[4, 8, 16, 32],
            window_size=7),
        'base-384':
        dict(
            embed_dims=[128, 256, 512, 1024],
            depths=[2, 2, 18, 2],
            num_heads=[4, 8, 16, 32],
            window_size=12),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads', 'window_size')
    arch_defaults = dict(mlp_ratio=4.)
    checkpoint_converter = L2VIT_CONVERTER

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 denominator_floor: float = DENOMINATOR_FLOOR,
                 allow_partial_load: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg, allow_partial_load)
        settings = self.arch_settings
        self.embed_dims = list(settings['embed_dims'])
        depths = settings['depths']
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()

        self.stem = ConvStem(in_channels, self.embed_dims[0])
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            dims, heads = self.embed_dims[i], settings['num_heads'][i]
            blocks = []
            for j in range(sum(depths[:i]), sum(depths[:i + 1])):
                # Blocks alternate LWA (even index in the stage) and LGA.
                if len(blocks) % 2 == 0:
                    blocks.append(
                        LocalWindowBlock(dims, heads, settings['window_size'],
                                         settings['mlp_ratio'], dpr[j]))
                else:
                    blocks.append(
                        LinearGlobalBlock(dims, heads, settings['mlp_ratio'],
                                          dpr[j], denominator_floor))
            downsample = ConvDownsample(self.embed_dims[i - 1],
                                        dims) if i else None
            self.stages.append(Stage(downsample, blocks, with_cp))
        self._add_out_norms(self.embed_dims)
        self._freeze_stages()

    def init_weights(self):
        """Initialise as the official detection backbone, then apply
        ``init_cfg`` (a ``Pretrained`` checkpoint overwrites everything it
        holds). Calling it again after that changes nothing."""
        if self.is_init:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_init(module, std=.02, bias=0.)
            elif isinstance(module, nn.Conv2d):
                kaiming_init(module, mode='fan_out', nonlinearity='relu')
            elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
                constant_init(module, 1, bias=0)
        super().init_weights()
