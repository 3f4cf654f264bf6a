# Copyright (c) OpenMMLab. All rights reserved.
"""The backbone contract shared by every family of the plugin."""
import copy
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers.cpu_inference import forward_in_place, runs_in_place, to_nchw
from ..layers.tokens import HW


class Stage(nn.Module):
    """One stage: an optional downsampling of the previous stage's tokens,
    then blocks called as ``block(x, hw)``.

    The one place that picks how a block runs: with gradient checkpointing
    where asked in training, in place on the CPU in inference (see
    :func:`~..layers.cpu_inference.runs_in_place`), or plainly. In place,
    the stage adds into the tokens it is given, which the backbone owns
    (the stem's output).

    Args:
        downsample (nn.Module, optional): Maps ``(x, hw)`` to the stage's
            ``(x, hw)``; None for the first stage, which follows the stem.
        blocks (Sequence[nn.Module]): The stage's blocks.
        with_cp (bool): Gradient checkpointing of each block.
    """

    def __init__(self, downsample: Optional[nn.Module],
                 blocks: Sequence[nn.Module], with_cp: bool):
        super().__init__()
        self.with_cp = with_cp
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, hw: HW):
        if self.downsample is not None:
            x, hw = self.downsample(x, hw)
        for block in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = cp.checkpoint(block, x, hw, use_reentrant=False)
            elif runs_in_place(block, x):
                x = forward_in_place(block, x, hw)
            else:
                x = block(x, hw)
        return x, hw


class HierarchicalBackbone(BaseModule):
    """Base of the plugin's four-stage (strides 4/8/16/32) backbones.

    A subclass defines ``arch_zoo``, ``arch_keys`` and
    ``checkpoint_converter``, builds ``self.stem`` (image -> ``(tokens,
    hw)``) and ``self.stages`` (one :class:`Stage` each, the downsampling
    that starts a stage included) and calls :meth:`_add_out_norms`. This
    class provides the OpenMMLab backbone contract and the forward pass:

    - ``arch`` presets or a dict, validated with a clear message;
    - ``out_indices`` validation and one LayerNorm ``norm{i}`` per output;
    - ``frozen_stages`` with the mmdet convention: 0 freezes the stem, k
      freezes the stem, stages 1..k and their output norms;
    - ``norm_eval``: BatchNorm layers stay in eval mode during training;
    - input checks (channels, minimum size);
    - official checkpoints converted on load (``init_cfg=Pretrained``).

    Args:
        arch (str | dict): A key of ``arch_zoo`` or a dict with the keys in
            ``arch_keys`` (and optionally those of ``arch_defaults``).
        in_channels (int): Channels of the input image.
        out_indices (Sequence[int]): Stages whose outputs are returned;
            negative indices count from the end.
        frozen_stages (int): Freeze the stem and this many stages; -1
            freezes nothing.
        norm_eval (bool): Keep BatchNorm layers in eval mode in training.
        with_cp (bool): Use gradient checkpointing in every block.
        init_cfg (dict | list[dict], optional): Initialisation config.
    """
    num_stages = 4
    arch_zoo: Dict[str, dict] = {}
    arch_keys: Tuple[str, ...] = ()
    arch_defaults: Dict[str, object] = {}
    checkpoint_converter = None
    # Total stride; a smaller input would leave no full last-stage pixel.
    min_input_size = 32
    # True where the norms ``norm{i}`` sit in the main path and the next
    # stage takes the normed tokens (PVTv2); otherwise they only normalise
    # the returned outputs.
    main_path_norms = False

    def __init__(self,
                 arch: Union[str, dict],
                 in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._resolve_arch(arch)
        self.in_channels = in_channels
        self.out_indices = self._check_out_indices(out_indices)
        if not (isinstance(frozen_stages, int)
                and -1 <= frozen_stages <= self.num_stages):
            raise ValueError(
                f'frozen_stages must be an int in [-1, {self.num_stages}], '
                f'got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        if self.checkpoint_converter is not None:
            self.register_load_state_dict_pre_hook(
                self._convert_checkpoint_on_load)

    @classmethod
    def _resolve_arch(cls, arch: Union[str, dict]) -> dict:
        name = cls.__name__
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise ValueError(
                    f'unknown {name} arch {arch!r}; valid archs are '
                    f'{sorted(cls.arch_zoo)} or a dict with the keys '
                    f'{list(cls.arch_keys)}')
            return dict(
                copy.deepcopy(cls.arch_defaults),
                **copy.deepcopy(cls.arch_zoo[key]))
        if not isinstance(arch, dict):
            raise TypeError(f'{name} arch must be a str or a dict, got '
                            f'{type(arch).__name__}')
        missing = [k for k in cls.arch_keys if k not in arch]
        unknown = [
            k for k in arch
            if k not in cls.arch_keys and k not in cls.arch_defaults
        ]
        if missing or unknown:
            raise ValueError(
                f'{name} arch dict needs the keys {list(cls.arch_keys)} '
                f'(optional: {list(cls.arch_defaults)}); missing {missing}, '
                f'unknown {unknown}')
        settings = dict(copy.deepcopy(cls.arch_defaults), **arch)
        for key, value in settings.items():
            if isinstance(value, (list, tuple)) and len(value) != \
                    cls.num_stages:
                raise ValueError(f'{name} arch {key!r} needs one value per '
                                 f'stage ({cls.num_stages}), got {value}')
        return settings

    def _check_out_indices(self, out_indices) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        n = self.num_stages
        checked = []
        for index in out_indices:
            if not isinstance(index, int) or not -n <= index < n:
                raise ValueError(
                    f'out_indices must hold stage indices in [{-n}, {n - 1}]'
                    f', got {tuple(out_indices)}')
            checked.append(index % n)
        if len(set(checked)) != len(checked) or not checked:
            raise ValueError('out_indices must be a non-empty sequence of '
                             f'distinct stages, got {tuple(out_indices)}')
        return tuple(sorted(checked))

    def _add_out_norms(self,
                       channels: Sequence[int],
                       eps: float = 1e-5) -> None:
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(channels[i], eps=eps))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for an input the backbone cannot take."""
        if x.dim() != 4:
            raise ValueError(f'{type(self).__name__} expects a (B, C, H, W) '
                             f'tensor, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'{type(self).__name__} was built for in_channels='
                f'{self.in_channels} (expected) but the input has '
                f'{x.shape[1]} channels (got)')
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f'{type(self).__name__} needs inputs of at least '
                f'{self.min_input_size}x{self.min_input_size}, got '
                f'{x.shape[-2]}x{x.shape[-1]}')

    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.stem
        for i in range(self.frozen_stages):
            yield self.stages[i]
            if i in self.out_indices:
                yield getattr(self, f'norm{i}')

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def forward(self, x):
        """Return a tuple of ``(B, C_i, H_i, W_i)`` maps, one per entry of
        ``out_indices``, at strides 4, 8, 16 and 32."""
        self.check_input(x)
        x, hw = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw = stage(x, hw)
            if self.main_path_norms:
                x = getattr(self, f'norm{i}')(x)
            if i in self.out_indices:
                out = x if self.main_path_norms else getattr(self, f'norm{i}')(
                    x)
                outs.append(to_nchw(out, hw))
        return tuple(outs)

    def _convert_checkpoint_on_load(self, module, state_dict, prefix, *args):
        self.checkpoint_converter.convert_in_place(state_dict, prefix)
