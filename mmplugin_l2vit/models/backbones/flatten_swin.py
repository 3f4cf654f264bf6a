# Copyright (c) OpenMMLab. All rights reserved.
"""FLatten-Swin: a Swin Transformer whose first two stages use FLatten's
focused linear attention over the whole stage map."""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import constant_init, trunc_normal_init

from ...registry import MODELS
from ..converters import FLATTEN_SWIN_CONVERTER
from ..layers import (FocusedLinearAttention, Mlp, ShiftedWindowAttention,
                      check_pos_resize_mode, image_to_channels_last,
                      map_to_tokens)
from ..layers.frugal_autograd import normed_linear
from ..layers.tokens import HW, is_exporting
from .base import HierarchicalBackbone, Stage

# The official attention types 'LLSS': focused linear attention in stages
# 1-2, shifted-window softmax attention in stages 3-4.
LINEAR_STAGES = (0, 1)
SWIN_T_WIDTHS = dict(embed_dims=[96, 192, 384, 768], num_heads=[3, 6, 12, 24])
SWIN_B_WIDTHS = dict(
    embed_dims=[128, 256, 512, 1024], num_heads=[4, 8, 16, 32])


class SwinFocusedAttention(FocusedLinearAttention):
    """Focused linear attention with Swin's projections, global over the
    stage map.

    ``proj(attend(q, k, v))``, where ``q``, ``k`` and ``v`` are the first,
    second and last C output channels of ``qkv(x)``.

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
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def qkv_projection(self):
        return self.qkv.weight, self.qkv.bias

    def forward(self, x, hw: HW, norm: Optional[nn.Module] = None):
        """The attention of ``(B, N, C)`` tokens, or of ``norm(x)``; in
        training only ``x`` and the projections are kept."""
        q, k, v = normed_linear(x, self.qkv, norm).chunk(3, dim=-1)
        return self.attend_and_project(q, k, v, hw)


class SwinPatchEmbed(nn.Module):
    """Non-overlapping 4x4 patches: a stride-4 convolution, then a LayerNorm
    over the tokens.

    The input is zero-padded on the bottom and right to a multiple of 4
    (mmcv's ``AdaptivePadding`` 'corner'), so the grid is ceil(H / 4) x
    ceil(W / 4).

    Args:
        in_channels (int): Channels of the input image.
        embed_dims (int): Channels of the output tokens.
    """
    patch_size = 4

    def __init__(self, in_channels: int, embed_dims: int):
        super().__init__()
        self.proj = nn.Conv2d(
            in_channels, embed_dims, self.patch_size, stride=self.patch_size)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x):
        """``(B, C, H, W)`` image -> ``(B, N, embed_dims)`` tokens and
        grid."""
        x = self.proj(image_to_channels_last(x, self.patch_size))
        hw = (x.shape[-2], x.shape[-1])
        return self.norm(map_to_tokens(x)), hw


class PatchMerging(nn.Module):
    """Swin's 2x2 patch merging: LayerNorm and a linear map (no bias) of the
    four neighbours' channels, concatenated in the official order
    ``x[2i, 2j], x[2i + 1, 2j], x[2i, 2j + 1], x[2i + 1, 2j + 1]``.

    An odd height or width is zero-padded by one row or column at the
    bottom or right first (mmdet's Swin).

    Args:
        in_channels (int): Channels of the input tokens.
        out_channels (int): Channels of the output tokens.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x, hw: HW):
        batch, _, channels = x.shape
        height, width = hw
        x = x.view(batch, height, width, channels)
        if is_exporting() or height % 2 or width % 2:
            x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        # Ceil division on non-negative operands only: an exported graph's
        # integer division truncates.
        hw = ((height + 1) // 2, (width + 1) // 2)
        # Split rows and columns into (index, parity) pairs; the column
        # parity varies slowest in the official channel order.
        x = x.view(batch, hw[0], 2, hw[1], 2,
                   channels).permute(0, 1, 3, 4, 2,
                                     5).reshape(batch, hw[0] * hw[1],
                                                4 * channels)
        return self.reduction(self.norm(x)), hw


class FLattenSwinBlock(nn.Module):
    """Pre-norm block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

    Args:
        embed_dims (int): Channels of the tokens.
        attn (nn.Module): The attention, called as ``attn(x, hw)``.
        mlp_ratio (float): Hidden width of the MLP over ``embed_dims``.
        drop_path (float): Stochastic depth rate of the residual branches.
    """
    # The forward for the CPU's in-place inference (see
    # layers/cpu_inference.py: a pair is a residual).
    forward_steps = (('norm1', 'attn'), ('norm2', 'mlp'))

    def __init__(self, embed_dims: int, attn: nn.Module, mlp_ratio: float,
                 drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = attn
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x, hw: HW):
        # The norms are passed on: in training their outputs are not kept.
        x = x + self.drop_path(self.attn(x, hw, norm=self.norm1))
        return x + self.drop_path(self.mlp(x, hw, norm=self.norm2))


@MODELS.register_module()
class FLattenSwin(HierarchicalBackbone):
    """FLatten-Swin backbone.

    A PyTorch implementation of `FLatten Transformer: Vision Transformer
    using Focused Linear Attention <https://arxiv.org/abs/2308.00442>`_ on
    Swin Transformer (the official ``flatten_swin`` models with attention
    types 'LLSS'), numerically identical to the official model at its
    training size, 224x224 (384x384 for ``'base-384'``). Converted official
    checkpoints load through ``init_cfg=dict(type='Pretrained',
    checkpoint=...)``.

    Stages 1-2 use focused linear attention, stages 3-4 Swin's shifted
    window softmax attention. At its training size the official model's
    linear-attention window is the whole stage map, which this backbone
    keeps at any input size:

    - linear-attention blocks attend over the whole, unpadded stage map and
      never shift. Their ``positional_encoding``, stored at the stage grid
      of the training size, is resized to the live grid with
      ``pos_resize_mode`` (and used as is at the native grid);
    - softmax blocks use windows of ``window_size`` (7, or 12 for
      ``'base-384'``), shifted by half a window in odd blocks. A map that
      fits in one window is attended as a single window of its own size,
      unshifted: the official rule, which leaves stage 4 (7x7 at 224x224)
      unshifted. Larger maps follow mmdet's Swin: zero-padded on the right
      and bottom to window multiples, shifted with a mask built for the
      padded size at run time, and cropped back;
    - the image is zero-padded on the bottom and right to a multiple of 4
      and odd maps to even sizes before each patch merging (mmdet's Swin),
      so the stage grids are ceil(H / 4), then ceil(. / 2).

    Each output gets a new LayerNorm ``norm{i}``; the official final
    ``norm`` loads as ``norm3``.

    Reproduced on purpose: the attention of the official code as released
    (its normaliser adds 1e-6 to ``q . mean(k)``, whereas the released
    weights were trained with ``q . sum(k)``), its depthwise conv kernels
    shared by all heads and the finite -100 of the shift mask. The official
    linear attention accepts the shift mask and ignores it, which is
    harmless because its blocks never shift; here they never do.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` or
            ``'base-384'``, or a dict with the keys ``embed_dims``,
            ``depths`` and ``num_heads`` (one value per stage each) and
            optionally ``window_size`` (of the softmax stages, default 7),
            ``pretrain_img_size`` (the training size, which fixes the grids
            of the positional encodings; default 224) and ``mlp_ratio``
            (default 4). Default: ``'tiny'``.
        in_channels (int): Channels of the input image. Default: 3.
        out_indices (Sequence[int]): Stages to return (strides 4, 8, 16,
            32). Default: (0, 1, 2, 3).
        drop_path_rate (float): Stochastic depth rate of the last block,
            rising linearly from 0 over all blocks; 0.2 (T), 0.3 (S) and 0.5
            (B) in the official training. Default: 0.
        frozen_stages (int): mmdet convention: -1 freezes nothing, 0 the
            stem (the patch embedding), k the stem and stages 1..k.
            Default: -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode during
            training; the model has none, so it changes nothing here.
            Default: False.
        with_cp (bool): Gradient checkpointing of each block to save
            memory. Default: False.
        pos_resize_mode (str): ``'bilinear'`` or ``'bicubic'``
            (``align_corners=False``): how ``positional_encoding`` is
            resized to grids other than its own. The official code never
            resizes it at run time; bilinear is how it resizes position
            tables at run time elsewhere (PVT), bicubic how it resizes them
            when loading for fine-tuning. Default: ``'bilinear'``.
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
        dict(SWIN_T_WIDTHS, depths=[2, 2, 6, 2]),
        'small':
        dict(SWIN_T_WIDTHS, depths=[2, 2, 18, 2]),
        'base':
        dict(SWIN_B_WIDTHS, depths=[2, 2, 18, 2]),
        'base-384':
        dict(
            SWIN_B_WIDTHS,
            depths=[2, 2, 18, 2],
            window_size=12,
            pretrain_img_size=384),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads')
    arch_defaults = dict(window_size=7, pretrain_img_size=224, mlp_ratio=4.)
    checkpoint_converter = FLATTEN_SWIN_CONVERTER

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
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
                         norm_eval, with_cp, init_cfg, allow_partial_load)
        check_pos_resize_mode(pos_resize_mode)
        settings = self.arch_settings
        self.embed_dims = list(settings['embed_dims'])
        depths = settings['depths']
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()

        self.stem = SwinPatchEmbed(in_channels, self.embed_dims[0])
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            blocks = [
                FLattenSwinBlock(self.embed_dims[i],
                                 self._attention(i, j, pos_resize_mode),
                                 settings['mlp_ratio'], dpr[first + j])
                for j in range(depth)
            ]
            downsample = PatchMerging(self.embed_dims[i - 1],
                                      self.embed_dims[i]) if i else None
            self.stages.append(Stage(downsample, blocks, with_cp))
        self._add_out_norms(self.embed_dims)
        self._freeze_stages()

    def _attention(self, stage: int, index: int,
                   pos_resize_mode: str) -> nn.Module:
        """The attention of block ``index`` of stage ``stage``."""
        settings = self.arch_settings
        embed_dims = self.embed_dims[stage]
        num_heads = settings['num_heads'][stage]
        if stage in LINEAR_STAGES:
            # The stage grid at the training size (stride 4 * 2**stage).
            side = settings['pretrain_img_size'] // 2**(stage + 2)
            return SwinFocusedAttention(embed_dims, num_heads, (side, side),
                                        pos_resize_mode)
        window_size = settings['window_size']
        return ShiftedWindowAttention(
            embed_dims,
            num_heads,
            window_size,
            shift_size=window_size // 2 if index % 2 else 0)

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
        # The bias tables keep their trunc-normal (std 0.02) initialisation,
        # ``scale`` and ``positional_encoding`` stay zero and convolutions
        # keep PyTorch's default, as in the official model.
        super().init_weights()
