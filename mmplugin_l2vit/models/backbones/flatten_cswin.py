# Copyright (c) OpenMMLab. All rights reserved.
"""FLatten-CSwin: CSWin Transformer whose first two stages use FLatten's
focused linear attention."""
import warnings
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.model.weight_init import constant_init, trunc_normal_init

from ...registry import MODELS
from ..converters import FLATTEN_CSWIN_CONVERTER
from ..layers import (LePEAttention, LePEFocusedLinearAttention, Mlp,
                      check_pos_resize_mode, image_to_channels_last,
                      map_to_tokens, tokens_to_map)
from ..layers.frugal_autograd import normed_linear, recompute_then_linear
from ..layers.tokens import HW
from .base import HierarchicalBackbone, Stage


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
    # The forward for the CPU's in-place inference (see
    # layers/cpu_inference.py: a pair is a residual).
    forward_steps = (('norm1', 'attention'), ('norm2', 'mlp'))

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

    def attention(self, x, hw: HW, norm: Optional[nn.Module] = None):
        """``proj(cat_b(attn_b(q_b, k_b, v_b)))`` of normed tokens (or of
        ``norm(x)``). In training only ``x`` and the projections are kept:
        the norm and the branches are recomputed for the gradients."""
        return recompute_then_linear(
            lambda qkv: self.attend_branches(qkv, hw),
            normed_linear(x, self.qkv, norm),
            linear=self.proj,
            owners=self.attns)

    def attend_branches(self, qkv, hw: HW):
        """``cat_b(attn_b(q_b, k_b, v_b))`` of the ``(B, N, 3C)`` projected
        queries, keys and values."""
        branch_dims = qkv.shape[-1] // (3 * len(self.attns))
        q, k, v = (t.split(branch_dims, dim=-1) for t in qkv.chunk(3, dim=-1))
        return torch.cat(
            [attn(*qkv, hw) for attn, qkv in zip(self.attns, zip(q, k, v))],
            dim=-1)

    def forward(self, x, hw: HW):
        # The norms are passed on: in training their outputs are not kept.
        x = x + self.drop_path(self.attention(x, hw, norm=self.norm1))
        return x + self.drop_path(self.mlp(x, hw, norm=self.norm2))


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
            stripe width, default 7), ``pretrain_img_size`` (training input
            size, which sets the positional encoding grids, default 224;
            the former key ``pretrain_size`` still works, with a
            FutureWarning) and ``mlp_ratio`` (default 4).
            Default: ``'tiny'``.
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
            pretrain_img_size=384),
    }
    arch_keys = ('embed_dims', 'depths', 'num_heads')
    arch_defaults = dict(split_size=7, pretrain_img_size=224, mlp_ratio=4.)
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
                 allow_partial_load: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(arch, in_channels, out_indices, frozen_stages,
                         norm_eval, with_cp, init_cfg, allow_partial_load)
        check_pos_resize_mode(pos_resize_mode)
        settings = self.arch_settings
        self.embed_dims = list(settings['embed_dims'])
        depths = settings['depths']
        num_heads = settings['num_heads']
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()

        self.stem = CSwinStem(in_channels, self.embed_dims[0])
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            # The official models size the positional encodings from the
            # training input as img_size // 4 and // 8.
            pos_side = settings['pretrain_img_size'] // 2**(i + 2)
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

    @classmethod
    def _resolve_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, dict) and 'pretrain_size' in arch:
            if 'pretrain_img_size' in arch:
                raise ValueError(
                    'FLattenCSWin arch has both pretrain_img_size and its '
                    'deprecated name pretrain_size; keep pretrain_img_size')
            warnings.warn(
                'FLattenCSWin arch key pretrain_size is deprecated: name it '
                'pretrain_img_size (as FLattenSwin and mmdet\'s Swin do)',
                FutureWarning)
            arch = {
                ('pretrain_img_size' if key == 'pretrain_size' else key): value
                for key, value in arch.items()
            }
        return super()._resolve_arch(arch)

    @classmethod
    def _check_family_arch(cls, settings: dict) -> None:
        heads = settings['num_heads'][2]
        if heads % 2:
            raise ValueError(
                f"{cls.__name__} arch 'num_heads' must be even in stage 3 "
                '(its cross-shaped attention splits the heads into two '
                f'branches), got {heads} heads')

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
