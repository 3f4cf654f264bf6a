# Copyright (c) OpenMMLab. All rights reserved.
"""FLatten-PVT and FLatten-PVTv2: pyramid vision transformers whose every
block uses FLatten's focused linear attention over the whole stage."""
import math
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import (constant_init, normal_init,
                                        trunc_normal_, trunc_normal_init)

from ...registry import MODELS
from ..converters import FLATTEN_PVT_CONVERTER, FLATTEN_PVT_V2_CONVERTER
from ..layers import (DepthwiseConv2d, FocusedLinearAttention, Mlp,
                      check_pos_resize_mode, image_to_channels_last,
                      map_to_tokens, pad_to_multiple, resize_pos_embed,
                      tokens_to_map)
from ..layers.frugal_autograd import channelwise_mlp, normed_linear
from ..layers.tokens import HW
from .base import HierarchicalBackbone, Stage

# The official models were trained at 224x224: their position tables hold
# the stage grids 56, 28, 14 and 7 of that size.
PRETRAIN_GRIDS = ((56, 56), (28, 28), (14, 14), (7, 7))
# Widths and heads of every preset but PVTv2-b0 (head_dims 64 throughout).
# PVT's MLPs are up to 8x wide: their backward pass takes a quarter of the
# hidden channels at a time, which keeps with_cp's cut of the training
# peak above 40% (FLatten-PVT-T and -PVTv2-B0 at 512²).
MLP_BACKWARD_CHUNKS = 4
PVT_WIDTHS = dict(embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8])


class PVTFocusedAttention(FocusedLinearAttention):
    """Focused linear attention with PVT's projections, global over the
    stage (no spatial reduction, as in every official FLatten-PVT).

    ``proj(attend(q(x), kv(x)))``, where ``kv`` yields the keys in its first
    C output channels and the values in the last C.

    Args:
        embed_dims (int): Channels of the tokens.
        num_heads (int): Attention heads.
        pos_grid (tuple[int, int]): Grid the positional encoding is stored
            at (the stage grid at the pre-training size).
        pos_resize_mode (str): Interpolation of the positional encoding to
            other grids.
    """

    def __init__(self, embed_dims: int, num_heads: int, pos_grid: HW,
                 pos_resize_mode: str):
        super().__init__(
            embed_dims, num_heads, pos_grid, pos_resize_mode=pos_resize_mode)
        self.q = nn.Linear(embed_dims, embed_dims)
        self.kv = nn.Linear(embed_dims, embed_dims * 2)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def qkv_projection(self):
        return (torch.cat([self.q.weight, self.kv.weight]),
                torch.cat([self.q.bias, self.kv.bias]))

    def forward(self, x, hw: HW, norm: Optional[nn.Module] = None):
        """The attention of ``(B, N, C)`` tokens, or of ``norm(x)``; in
        training only ``x`` and the projections are kept."""
        k, v = normed_linear(x, self.kv, norm).chunk(2, dim=-1)
        return self.attend_and_project(
            normed_linear(x, self.q, norm), k, v, hw)


class ConvMlp(Mlp):
    """PVTv2's MLP: ``fc2(GELU(DWConv3x3(fc1(x))))``, the depthwise conv
    running on the token map.

    Args:
        channels (int): Input and output channels.
        hidden_channels (int): Channels of the hidden layer.
        backward_chunks (int): See :class:`Mlp`. Default: 1.
    """

    def __init__(self,
                 channels: int,
                 hidden_channels: int,
                 backward_chunks: int = 1):
        super().__init__(channels, hidden_channels, backward_chunks)
        self.dwconv = DepthwiseConv2d(hidden_channels, 3)

    def conv_act(self, hidden, hw: HW, channels: Optional[slice] = None):
        """``GELU(DWConv3x3(hidden))`` on the hidden token map (holding the
        hidden ``channels`` only, if given)."""
        return self.act(
            map_to_tokens(
                self.dwconv(tokens_to_map(hidden, hw), channels=channels)))

    def forward(self, x, hw: HW, norm: Optional[nn.Module] = None):
        """The MLP of ``(B, N, C)`` tokens, or of ``norm(x)``. In training
        only ``x`` and ``fc1``'s output are kept: the norm, the conv and
        the GELU are recomputed for the gradients (a group of the hidden
        channels at a time, see :func:`channelwise_mlp`)."""
        return channelwise_mlp(
            x,
            self.fc1,
            lambda hidden, channels: self.conv_act(hidden, hw, channels),
            self.fc2,
            norm,
            owners=(self.dwconv, ),
            chunks=self.backward_chunks)


class FLattenPVTBlock(nn.Module):
    """Pre-norm block: ``x + FLA(LN(x))``, then ``x + MLP(LN(x))``.

    Args:
        embed_dims (int): Channels of the tokens.
        num_heads (int): Attention heads.
        mlp_ratio (float): Hidden width of the MLP over ``embed_dims``.
        pos_grid (tuple[int, int]): Grid of the positional encoding.
        drop_path (float): Stochastic depth rate of the residual branches.
        conv_mlp (bool): Use PVTv2's :class:`ConvMlp` instead of a plain MLP.
        pos_resize_mode (str): See :class:`PVTFocusedAttention`.
    """
    # The forward for the CPU's in-place inference (see
    # layers/cpu_inference.py: a pair is a residual).
    forward_steps = (('norm1', 'attn'), ('norm2', 'mlp'))

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float,
                 pos_grid: HW, drop_path: float, conv_mlp: bool,
                 pos_resize_mode: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = PVTFocusedAttention(embed_dims, num_heads, pos_grid,
                                        pos_resize_mode)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        hidden_channels = int(embed_dims * mlp_ratio)
        self.mlp = (ConvMlp if conv_mlp else Mlp)(embed_dims, hidden_channels,
                                                  MLP_BACKWARD_CHUNKS)
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x, hw: HW):
        # The norms are passed on: in training their outputs are not kept.
        x = x + self.drop_path(self.attn(x, hw, norm=self.norm1))
        return x + self.drop_path(self.mlp(x, hw, norm=self.norm2))


class PVTPatchEmbed(nn.Module):
    """Strided convolution, LayerNorm over the tokens and, for PVT v1, an
    absolute position embedding resized to the live grid.

    Args:
        in_channels (int): Channels of the input map.
        embed_dims (int): Channels of the output tokens.
        kernel_size (int): Kernel of the convolution.
        stride (int): Stride of the convolution.
        padding (int): Zero padding of the convolution on every side.
        pad_to_stride (bool): First zero-pad the input on the bottom and
            right to a multiple of ``stride`` (for non-overlapping patches:
            the last partial patch is kept instead of dropped).
        pos_grid (tuple[int, int], optional): Grid the position embedding
            is stored at; None for no position embedding.
        pos_resize_mode (str): Interpolation of the position embedding to
            other grids.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 kernel_size: int,
                 stride: int,
                 padding: int = 0,
                 pad_to_stride: bool = False,
                 pos_grid: Optional[HW] = None,
                 pos_resize_mode: str = 'bilinear'):
        super().__init__()
        self.stride = stride
        self.pad_to_stride = pad_to_stride
        self.proj = nn.Conv2d(
            in_channels, embed_dims, kernel_size, stride, padding=padding)
        self.norm = nn.LayerNorm(embed_dims)
        self.pos_grid = pos_grid
        self.pos_resize_mode = pos_resize_mode
        self.pos_embed = None if pos_grid is None else nn.Parameter(
            torch.zeros(1, pos_grid[0] * pos_grid[1], embed_dims))

    def forward(self, x, hw: Optional[HW] = None):
        """Embed an image, or the ``(B, N, C)`` tokens of a previous stage on
        the grid ``hw``; return ``(B, N', embed_dims)`` tokens and grid."""
        multiple = self.stride if self.pad_to_stride else 1
        if hw is None:
            x = image_to_channels_last(x, multiple)
        else:
            x = pad_to_multiple(tokens_to_map(x, hw), multiple)
        x = self.proj(x)
        hw = (x.shape[-2], x.shape[-1])
        x = self.norm(map_to_tokens(x))
        if self.pos_embed is not None:
            x = x + resize_pos_embed(self.pos_embed, self.pos_grid, hw,
                                     self.pos_resize_mode)
        return x, hw


class FLattenPVTBase(HierarchicalBackbone):
    """What FLatten-PVT and FLatten-PVTv2 share.

    Subclasses set ``conv_mlp``, ``main_path_norms`` and
    ``fan_out_conv_init``, implement :meth:`_patch_embed`, call
    :meth:`_build_layers` and add the ``norm{i}`` modules.
    """
    arch_keys = ('embed_dims', 'depths', 'num_heads')
    arch_defaults = dict(mlp_ratios=[8, 8, 4, 4])
    # PVTv2: an MLP with a depthwise conv.
    conv_mlp = False
    # PVTv2 initialises convolutions with normal(0, sqrt(2 / fan_out)),
    # PVT v1 keeps PyTorch's default.
    fan_out_conv_init = False

    def __init__(self,
                 arch: Union[str, dict],
                 in_channels: int,
                 out_indices: Sequence[int],
                 frozen_stages: int,
                 norm_eval: bool,
                 with_cp: bool,
                 pos_resize_mode: str,
                 allow_partial_load: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg, allow_partial_load)
        check_pos_resize_mode(pos_resize_mode)
        self.pos_resize_mode = pos_resize_mode
        self.embed_dims = list(self.arch_settings['embed_dims'])

    def _build_layers(self, drop_path_rate: float) -> None:
        """Build ``self.stem`` and ``self.stages``; subclasses call it once
        their options for :meth:`_patch_embed` are set."""
        settings = self.arch_settings
        depths = settings['depths']
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stem = self._patch_embed(0, self.in_channels)
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            blocks = [
                FLattenPVTBlock(
                    embed_dims=self.embed_dims[i],
                    num_heads=settings['num_heads'][i],
                    mlp_ratio=settings['mlp_ratios'][i],
                    pos_grid=PRETRAIN_GRIDS[i],
                    drop_path=dpr[first + j],
                    conv_mlp=self.conv_mlp,
                    pos_resize_mode=self.pos_resize_mode) for j in range(depth)
            ]
            downsample = self._patch_embed(
                i, self.embed_dims[i - 1]) if i else None
            self.stages.append(Stage(downsample, blocks, self.with_cp))

    def _patch_embed(self, stage: int, in_channels: int) -> PVTPatchEmbed:
        """Return the patch embedding that starts stage ``stage``."""
        raise NotImplementedError

    def init_weights(self):
        """Initialise as the official model, then apply ``init_cfg`` (a
        ``Pretrained`` checkpoint overwrites everything it holds). Calling it
        again after that changes nothing."""
        if self.is_init:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_init(module, std=.02, bias=0.)
            elif isinstance(module, nn.LayerNorm):
                constant_init(module, 1, bias=0)
            elif isinstance(module, nn.Conv2d) and self.fan_out_conv_init:
                fan_out = (
                    module.kernel_size[0] * module.kernel_size[1] *
                    module.out_channels // module.groups)
                normal_init(module, std=math.sqrt(2. / fan_out), bias=0.)
            elif isinstance(module, PVTPatchEmbed) and \
                    module.pos_embed is not None:
                trunc_normal_(module.pos_embed, std=.02)
        # The attention's ``scale`` and ``positional_encoding`` stay zero,
        # as in the official models.
        super().init_weights()


@MODELS.register_module()
class FLattenPVT(FLattenPVTBase):
    """FLatten-PVT backbone (PVT v1 with focused linear attention).

    A PyTorch implementation of `FLatten Transformer: Vision Transformer
    using Focused Linear Attention <https://arxiv.org/abs/2308.00442>`_,
    numerically identical to the official ``flatten_pvt_*`` models at
    224x224 (converted official checkpoints load through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``). Every block uses
    focused linear attention over all tokens of its stage (no spatial
    reduction, as in the official configs).

    For dense prediction:

    - the position embeddings ``pos_embed`` and every block's
      ``positional_encoding`` are stored at their 224x224 grids and resized
      to the live grid with ``pos_resize_mode`` (unchanged at the native
      grid). Each table is resized from its own grid: the official
      ``_get_pos_embed`` compared every stage with stage 1's size, which
      is harmless at 224 only;
    - the official model has no norm on its features (its final ``norm``
      is never applied and is not loaded), so each output gets a new
      LayerNorm ``norm{i}`` unless ``norm_outputs=False``;
    - with ``pad_to_patch=True`` each patch embedding zero-pads its input
      on the bottom and right to a multiple of its patch size (mmcv's
      ``AdaptivePadding`` 'corner'), so the grids are ceil(H / 4), then
      ceil(. / 2), and no pixel is dropped. The padding never makes a token
      of padding alone, which matters because linear attention cannot mask
      keys. The official convolutions instead floor and drop the remainder
      (``pad_to_patch=False``). Both agree on sizes that are multiples of
      32.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'medium'`` or
            ``'large'`` (the paper's T, S, M and B), or a dict with the keys
            ``embed_dims``, ``depths``, ``num_heads`` and optionally
            ``mlp_ratios`` (one value per stage each). Default: ``'tiny'``.
        in_channels (int): Channels of the input image. Default: 3.
        out_indices (Sequence[int]): Stages to return (strides 4, 8, 16,
            32). Default: (0, 1, 2, 3).
        drop_path_rate (float): Stochastic depth rate of the last block,
            rising linearly from 0 over all blocks; 0.1 (T, S) and 0.3 (M,
            B) in the official training. Default: 0.
        frozen_stages (int): mmdet convention: -1 freezes nothing, 0 the
            stem (stage 1's patch embedding), k the stem and stages 1..k.
            Default: -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode during
            training; the model has none, so it only matters for
            subclasses. Default: False.
        with_cp (bool): Gradient checkpointing of each block to save
            memory. Default: False.
        pos_resize_mode (str): ``F.interpolate`` mode (``align_corners=
            False``) used to resize ``pos_embed`` and ``positional_encoding``
            to other grids: ``'bilinear'`` as the official runtime resize of
            ``pos_embed``, or ``'bicubic'`` as its load-time resize for
            fine-tuning. Default: ``'bilinear'``.
        pad_to_patch (bool): Pad each patch embedding's input to a multiple
            of its patch size (see above). Default: True.
        norm_outputs (bool): Add a LayerNorm (eps 1e-6) to each output;
            False returns the stage tokens as the official model computes
            them (its classification head takes them unnormalised).
            Default: True.
        allow_partial_load (bool): Load a checkpoint that holds fewer than
            half of the backbone's weights (with their shapes); by default
            it is refused with a ``CheckpointFormatError``, since random
            weights would pass for trained ones. Default: False.
        init_cfg (dict | list[dict], optional): Initialisation config, e.g.
            ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` for an
            official or converted checkpoint. Default: None.
    """
    arch_zoo = {
        'tiny': dict(PVT_WIDTHS, depths=[2, 2, 2, 2]),
        'small': dict(PVT_WIDTHS, depths=[3, 4, 6, 3]),
        'medium': dict(PVT_WIDTHS, depths=[3, 4, 18, 3]),
        'large': dict(PVT_WIDTHS, depths=[3, 8, 27, 3]),
    }
    checkpoint_converter = FLATTEN_PVT_CONVERTER

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pos_resize_mode: str = 'bilinear',
                 pad_to_patch: bool = True,
                 norm_outputs: bool = True,
                 allow_partial_load: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, pos_resize_mode,
                         allow_partial_load, init_cfg)
        self.pad_to_patch = pad_to_patch
        self._build_layers(drop_path_rate)
        if norm_outputs:
            self._add_out_norms(self.embed_dims, eps=1e-6)
        else:
            for i in self.out_indices:
                self.add_module(f'norm{i}', nn.Identity())
        self._freeze_stages()

    def _patch_embed(self, stage: int, in_channels: int) -> PVTPatchEmbed:
        patch_size = 4 if stage == 0 else 2
        return PVTPatchEmbed(
            in_channels,
            self.embed_dims[stage],
            kernel_size=patch_size,
            stride=patch_size,
            pad_to_stride=self.pad_to_patch,
            pos_grid=PRETRAIN_GRIDS[stage],
            pos_resize_mode=self.pos_resize_mode)


@MODELS.register_module()
class FLattenPVTv2(FLattenPVTBase):
    """FLatten-PVTv2 backbone (PVTv2 with focused linear attention).

    A PyTorch implementation of `FLatten Transformer: Vision Transformer
    using Focused Linear Attention <https://arxiv.org/abs/2308.00442>`_,
    numerically identical to the official ``flatten_pvt_v2_*`` models at
    224x224 (converted official checkpoints load through
    ``init_cfg=dict(type='Pretrained', checkpoint=...)``). Overlapping
    patch embeddings (7x7 stride 4, then 3x3 stride 2, zero padded) give
    the grids ceil(H / 4), then ceil(. / 2); every block uses focused
    linear attention over all tokens of its stage and an MLP with a
    depthwise 3x3 conv.

    As in the official model, the trained LayerNorms ``norm0`` to ``norm3``
    (official ``norm1`` to ``norm4``, eps 1e-6) normalise every stage's
    tokens, which then feed the next stage: they are part of the network,
    so all four are built whatever ``out_indices`` is, each output is the
    normalised stage (as the official model passes it on), and
    ``frozen_stages=k`` also freezes ``norm0`` to ``norm{k-1}``. Every
    block's ``positional_encoding`` is stored at its 224x224 grid and
    resized to the live grid with ``pos_resize_mode`` (unchanged at the
    native grid).

    Args:
        arch (str | dict): ``'b0'`` to ``'b4'``, or a dict with the keys
            ``embed_dims``, ``depths``, ``num_heads`` and optionally
            ``mlp_ratios`` (one value per stage each). Default: ``'b0'``.
        in_channels (int): Channels of the input image. Default: 3.
        out_indices (Sequence[int]): Stages to return (strides 4, 8, 16,
            32). Default: (0, 1, 2, 3).
        drop_path_rate (float): Stochastic depth rate of the last block,
            rising linearly from 0 over all blocks; 0.1 (b0-b2) and 0.3
            (b3, b4) in the official training. Default: 0.
        frozen_stages (int): mmdet convention: -1 freezes nothing, 0 the
            stem (stage 1's patch embedding), k the stem, stages 1..k and
            their norms. Default: -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode during
            training; the model has none, so it only matters for
            subclasses. Default: False.
        with_cp (bool): Gradient checkpointing of each block to save
            memory. Default: False.
        pos_resize_mode (str): ``F.interpolate`` mode (``align_corners=
            False``) used to resize ``positional_encoding`` to other grids.
            Default: ``'bilinear'``.
        allow_partial_load (bool): Load a checkpoint that holds fewer than
            half of the backbone's weights (with their shapes); by default
            it is refused with a ``CheckpointFormatError``, since random
            weights would pass for trained ones. Default: False.
        init_cfg (dict | list[dict], optional): Initialisation config, e.g.
            ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` for an
            official or converted checkpoint. Default: None.
    """
    arch_zoo = {
        'b0':
        dict(
            embed_dims=[32, 64, 160, 256],
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 5, 8]),
        'b1':
        dict(PVT_WIDTHS, depths=[2, 2, 2, 2]),
        'b2':
        dict(PVT_WIDTHS, depths=[3, 4, 6, 3]),
        'b3':
        dict(PVT_WIDTHS, depths=[3, 4, 18, 3]),
        'b4':
        dict(PVT_WIDTHS, depths=[3, 8, 27, 3]),
    }
    checkpoint_converter = FLATTEN_PVT_V2_CONVERTER
    conv_mlp = True
    main_path_norms = True
    fan_out_conv_init = True

    def __init__(self,
                 arch: Union[str, dict] = 'b0',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pos_resize_mode: str = 'bilinear',
                 allow_partial_load: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, pos_resize_mode,
                         allow_partial_load, init_cfg)
        self._build_layers(drop_path_rate)
        for i, channels in enumerate(self.embed_dims):
            self.add_module(f'norm{i}', nn.LayerNorm(channels, eps=1e-6))
        self._freeze_stages()

    def _patch_embed(self, stage: int, in_channels: int) -> PVTPatchEmbed:
        kernel_size, stride = (7, 4) if stage == 0 else (3, 2)
        return PVTPatchEmbed(
            in_channels,
            self.embed_dims[stage],
            kernel_size=kernel_size,
            stride=stride,
            padding=kernel_size // 2)

    def _frozen_modules(self):
        yield from super()._frozen_modules()
        # The norms of frozen stages are in the main path: freeze them too.
        for i in range(self.frozen_stages):
            if i not in self.out_indices:
                yield getattr(self, f'norm{i}')
