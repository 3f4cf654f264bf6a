# Copyright (c) OpenMMLab. All rights reserved.
"""FLatten-CSwin: CSWin Transformer whose first two stages use FLatten's
focused linear attention."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import constant_init, trunc_normal_init

from ...registry import MODELS
from ..converters import FLATTEN_CSWIN_CONVERTER
from ..layers import (FocusedLinearAttention, Mlp, add_mlp_branch,
                      check_pos_resize_mode, image_to_channels_last,
                      map_to_tokens, tokens_to_map, tokens_to_nchw)
from ..layers.tokens import HW, is_exporting
from .base import HierarchicalBackbone, Stage

# (height, width) of attention windows; None spans the whole map.
WindowShape = Tuple[Optional[int], Optional[int]]


class CSwinStem(nn.Module):
    """Overlapping 7x7 stride-4 convolution (padding 2), then a LayerNorm on
    the tokens; the grid is ``floor((H - 3) / 4) + 1`` per side.

    Args:
        in_channels (int): Channels of the input image.
        embed_dims (int): Channels of the output tokens.
    """

    def __init__(self, in_channels: int, embed_dims: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, embed_dims, 7, stride=4, padding=2)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x):
        x = self.conv(image_to_channels_last(x))
        return self.norm(map_to_tokens(x)), (x.shape[-2], x.shape[-1])


class MergeBlock(nn.Module):
    """CSWin's downsampling: a 3x3 stride-2 convolution (padding 1) on the
    token map, then a LayerNorm; the grid becomes ``ceil(H / 2)`` per side.

    Args:
        in_channels (int): Channels of the input tokens.
        out_channels (int): Channels of the output tokens.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x, hw: HW):
        x = self.conv(tokens_to_map(x, hw))
        return self.norm(map_to_tokens(x)), (x.shape[-2], x.shape[-1])


def _partition(x, hw: HW, window: HW):
    """``(B, H*W, C)`` tokens -> ``(B * num_windows, wh * ww, C)`` windows,
    after zero-padding the map on the right and bottom to multiples of
    ``window = (wh, ww)``."""
    batch, _, channels = x.shape
    (height, width), (win_h, win_w) = hw, window
    x = x.reshape(batch, height, width, channels)
    pad_h, pad_w = -height % win_h, -width % win_w
    if is_exporting() or pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    x = x.view(batch, (height + pad_h) // win_h, win_h,
               (width + pad_w) // win_w, win_w, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, win_h * win_w, channels)


def _unpartition(windows, hw: HW, window: HW):
    """Inverse of :func:`_partition`, cropping the padding off."""
    (height, width), (win_h, win_w) = hw, window
    # Ceil division on non-negative operands only: an exported graph's
    # integer division truncates.
    rows = (height + win_h - 1) // win_h
    cols = (width + win_w - 1) // win_w
    channels = windows.shape[-1]
    x = windows.view(-1, rows, cols, win_h, win_w, channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, rows * win_h, cols * win_w,
                                            channels)
    return x[:, :height, :width].reshape(-1, height * width, channels)


class LePEAttention(nn.Module):
    """CSWin's softmax attention with a locally-enhanced positional encoding
    (LePE), within windows of a token map of any size.

    Inside each window, ``softmax(q kᵀ / sqrt(d)) v + get_v(v)``, where
    ``get_v`` is a 3x3 depthwise conv applied to each window's ``v`` map
    separately. A window side of None spans the whole map: ``(None, s)``
    gives CSWin's vertical stripes of width ``s``, ``(s, None)`` its
    horizontal stripes and ``(None, None)`` global attention. A map that is
    not a multiple of a stripe width is zero-padded on the right or bottom
    (``q``, ``k`` and ``v`` alike, so padded keys take part with a zero
    logit and a zero value, unmasked), and the output is cropped back.

    Args:
        embed_dims (int): Channels of ``q``, ``k`` and ``v``.
        num_heads (int): Heads.
        window (tuple[int | None, int | None]): Window (height, width).
    """

    def __init__(self, embed_dims: int, num_heads: int, window: WindowShape):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.get_v = nn.Conv2d(
            embed_dims, embed_dims, 3, padding=1, groups=embed_dims)

    def _split_heads(self, x):
        num_windows, num_tokens, channels = x.shape
        return x.view(num_windows, num_tokens, self.num_heads,
                      channels // self.num_heads).transpose(1, 2)

    def forward(self, q, k, v, hw: HW):
        """Attend with ``(B, H*W, C)`` queries, keys and values."""
        window = tuple(side or size for side, size in zip(self.window, hw))
        q, k, v = (_partition(x, hw, window) for x in (q, k, v))
        # Convolving contiguous NCHW maps, as the official code does, keeps
        # the LePE bit-exact.
        lepe = map_to_tokens(self.get_v(tokens_to_nchw(v, window)))
        out = F.scaled_dot_product_attention(
            self._split_heads(q), self._split_heads(k), self._split_heads(v))
        out = out.transpose(1, 2).reshape(lepe.shape) + lepe
        return _unpartition(out, hw, window)


class LePEFocusedLinearAttention(FocusedLinearAttention):
    """FLatten-CSwin's linear attention: FLatten's focused linear attention
    (with its 5x5 head-shared DWC) over the whole map, plus CSWin's LePE, a
    3x3 depthwise conv ``get_v`` on ``v``, added last.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Heads.
        pos_grid (tuple[int, int]): Grid of the positional encoding (the
            stage's grid at the training resolution).
        pos_resize_mode (str): Interpolation of the positional encoding at
            other grids.
    """

    def __init__(self, embed_dims: int, num_heads: int, pos_grid: HW,
                 pos_resize_mode: str):
        super().__init__(
            embed_dims, num_heads, pos_grid, pos_resize_mode=pos_resize_mode)
        self.get_v = nn.Conv2d(
            embed_dims, embed_dims, 3, padding=1, groups=embed_dims)

    def forward(self, q, k, v, hw: HW):
        """Attend with ``(B, H*W, C)`` queries, keys and values."""
        # A contiguous NCHW map, as in the official code: bit-exact LePE.
        lepe = map_to_tokens(self.get_v(tokens_to_nchw(v, hw)))
        return self.attend(q, k, v, hw) + lepe


class CSwinBlock(nn.Module):
    """A CSWin block with one or two attention branches.

    ``x = x + proj(cat_b(attn_b(q_b, k_b, v_b))); x = x + MLP(LN(x))``,
    where ``q, k, v = qkv(LN(x))`` and branch ``b`` takes the ``b``-th
    equal share of their channels and heads.

    Args:
        embed_dims (int): Channels of the tokens.
        attns (list[nn.Module]): The attention branches.
        mlp_ratio (float): Hidden width of the MLP over ``embed_dims``.
        drop_path (float): Stochastic depth rate of the residual branches.
    """

    def __init__(self, embed_dims: int, attns: List[nn.Module],
                 mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.attns = nn.ModuleList(attns)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path else nn.Identity()

    def forward(self, x, hw: HW):
        branch_dims = x.shape[-1] // len(self.attns)
        q, k, v = (
            t.split(branch_dims, dim=-1)
            for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))
        out = torch.cat(
            [attn(*qkv, hw) for attn, qkv in zip(self.attns, zip(q, k, v))],
            dim=-1)
        x = x + self.drop_path(self.proj(out))
        return add_mlp_branch(x, self.norm2, self.mlp, self.drop_path)


class CSwinStage(Stage):
    """Optional :class:`MergeBlock`, then blocks of one attention kind.

    Args:
        in_channels (int | None): Channels before the stage's merge; None
            for the first stage, which follows the stem.
        embed_dims (int): Channels of the stage.
        depth (int): Number of blocks.
        num_heads (int): Attention heads.
        attention (str): ``'linear'`` (global focused linear attention),
            ``'cross'`` (vertical and horizontal stripes of width
            ``split_size``, half of the channels and heads each) or
            ``'global'`` (global softmax attention).
        split_size (int): Stripe width of ``'cross'`` stages.
        pos_grid (tuple[int, int]): Positional encoding grid of
            ``'linear'`` stages.
        pos_resize_mode (str): See :class:`LePEFocusedLinearAttention`.
        mlp_ratio (float): Hidden width of the MLPs over ``embed_dims``.
        drop_paths (Sequence[float]): Stochastic depth rate of each block.
        with_cp (bool): Gradient checkpointing of each block.
    """

    def __init__(self, in_channels: Optional[int], embed_dims: int, depth: int,
                 num_heads: int, attention: str, split_size: int, pos_grid: HW,
                 pos_resize_mode: str, mlp_ratio: float,
                 drop_paths: Sequence[float], with_cp: bool):

        def make_attns():
            if attention == 'linear':
                return [
                    LePEFocusedLinearAttention(embed_dims, num_heads, pos_grid,
                                               pos_resize_mode)
                ]
            if attention == 'cross':
                return [
                    LePEAttention(embed_dims // 2, num_heads // 2, window)
                    for window in ((None, split_size), (split_size, None))
                ]
            return [LePEAttention(embed_dims, num_heads, (None, None))]

        super().__init__(
            None
            if in_channels is None else MergeBlock(in_channels, embed_dims), [
                CSwinBlock(embed_dims, make_attns(), mlp_ratio, drop_paths[j])
                for j in range(depth)
            ], with_cp)


@MODELS.register_module()
class FLattenCSWin(HierarchicalBackbone):
    """FLatten-CSwin backbone.

    A PyTorch implementation of the CSWin variant of `FLatten Transformer:
    Vision Transformer using Focused Linear Attention
    <https://arxiv.org/abs/2308.00442>`_ (ICCV 2023) that matches the
    official model at its training resolution (stages 1-2 bit for bit in
    fp32, stages 3-4 to about 1e-6 through
    ``F.scaled_dot_product_attention``; converted official checkpoints load
    through ``init_cfg=dict(type='Pretrained', checkpoint=...)``) and runs
    at any input size.

    Stages 1-2 use focused linear attention over the whole map, with both
    FLatten's 5x5 DWC and CSWin's 3x3 LePE on ``v``, in a single branch
    (as the official 224/384 models do: their "stripes" span the map).
    Stage 3 uses CSWin's cross-shaped window attention: half of the
    channels and heads attend within vertical stripes and half within
    horizontal stripes of width ``split_size``, with LePE. Stage 4 uses
    global softmax attention with LePE. Outputs are tapped after each
    stage's blocks (before the next merge) and normalised by new
    LayerNorms ``norm{i}``; the official final norm becomes ``norm3``.

    Reproduced on purpose: the official (HEAD) normaliser of the linear
    attention, ``q . mean(k) + 1e-6``, and linear-attention blocks that are
    single-branch and global with both a DWC and a LePE.

    At other input sizes:

    - the stem gives a ``floor((H - 3) / 4) + 1`` grid and each merge
      ``ceil(H / 2)``; no padding is needed there;
    - the learned positional encodings of stages 1-2, stored at the
      training grid (56 and 28 for 224 inputs), are interpolated to the live
      grid with ``pos_resize_mode`` (unchanged at the training grid);
    - stage-3 stripes pad ``q``, ``k`` and ``v`` with zeros on the right
      (vertical stripes) or bottom (horizontal stripes) to a multiple of
      ``split_size``, in every block, without masking the padded keys, and
      crop the output back (a map narrower than ``split_size`` is padded up
      to one stripe);
    - stage 4 attends globally over the whole map.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` or
            ``'base-384'``, or a dict with the keys ``embed_dims``,
            ``depths``, ``num_heads`` and optionally ``split_size`` (stage-3
            stripe width, default 7), ``pretrain_size`` (training input
            size, which sets the positional encoding grids, default 224)
            and ``mlp_ratio`` (default 4). Default: ``'tiny'``.
        in_channels (int): Channels of the input image. Default: 3.
        out_indices (Sequence[int]): Stages to return (strides 4, 8, 16,
            32). Default: (0, 1, 2, 3).
        drop_path_rate (float): Stochastic depth rate of the last block,
            rising linearly from 0 over all blocks. Default: 0.
        frozen_stages (int): mmdet convention: -1 freezes nothing, 0 the
            stem, k the stem and stages 1..k. Default: -1.
        norm_eval (bool): Keep BatchNorm layers in eval mode during
            training (the model itself has none). Default: False.
        with_cp (bool): Gradient checkpointing of each block to save
            memory. Default: False.
        pos_resize_mode (str): ``'bilinear'`` or ``'bicubic'``
            (``align_corners=False``): how the positional encodings are
            resized to other grids. Default: ``'bilinear'``.
        init_cfg (dict | list[dict], optional): Initialisation config, e.g.
            ``dict(type='Pretrained', checkpoint=PATH_OR_URL)`` for an
            official or converted checkpoint. Default: None.
    """
    arch_zoo = {
        'tiny':
        dict(
            embed_dims=[64, 128, 256, 512],
            depths=[2, 4, 18, 1],
            num_heads=[2, 4, 8, 16]),
        'small':
        dict(
            embed_dims=[64, 128, 256, 512],
            depths=[2, 4, 32, 2],
            num_heads=[2, 4, 8, 16]),
        'base':
        dict(
            embed_dims=[96, 192, 384, 768],
            depths=[3, 6, 29, 2],
            num_heads=[4, 8, 16, 32]),
        'base-384':
        dict(
            embed_dims=[96, 192, 384, 768],
            depths=[3, 6, 29, 2],
            num_heads=[4, 8, 16, 32],
            split_size=12,
            pretrain_size=384),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads')
    arch_defaults = dict(split_size=7, pretrain_size=224, mlp_ratio=4.)
    checkpoint_converter = FLATTEN_CSWIN_CONVERTER
    stage_attentions = ('linear', 'linear', 'cross', 'global')

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 pos_resize_mode: str = 'bilinear',
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg)
        check_pos_resize_mode(pos_resize_mode)
        settings = self.arch_settings
        self.embed_dims = list(settings['embed_dims'])
        depths = settings['depths']
        num_heads = settings['num_heads']
        if num_heads[2] % 2:
            raise ValueError('the cross-shaped stage 3 splits its heads '
                             f'into two branches; got {num_heads[2]} heads')
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()

        self.stem = CSwinStem(in_channels, self.embed_dims[0])
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            # The official models size the positional encodings from the
            # training input as img_size // 4 and // 8.
            pos_side = settings['pretrain_size'] // 2**(i + 2)
            first = sum(depths[:i])
            self.stages.append(
                CSwinStage(
                    in_channels=self.embed_dims[i - 1] if i else None,
                    embed_dims=self.embed_dims[i],
                    depth=depth,
                    num_heads=num_heads[i],
                    attention=self.stage_attentions[i],
                    split_size=settings['split_size'],
                    pos_grid=(pos_side, pos_side),
                    pos_resize_mode=pos_resize_mode,
                    mlp_ratio=settings['mlp_ratio'],
                    drop_paths=dpr[first:first + depth],
                    with_cp=with_cp))
        self._add_out_norms(self.embed_dims)
        self._freeze_stages()

    def init_weights(self):
        """Initialise as the official model (truncated-normal linears, unit
        LayerNorms, PyTorch's default for convolutions, zero positional
        encodings and temperatures), then apply ``init_cfg`` (a
        ``Pretrained`` checkpoint overwrites everything it holds). Calling
        it again after that changes nothing."""
        if self.is_init:
            return
        for module in self.modules():
            if isinstance(module, nn.Linear):
                trunc_normal_init(module, std=.02, bias=0.)
            elif isinstance(module, nn.LayerNorm):
                constant_init(module, 1, bias=0)
        super().init_weights()
