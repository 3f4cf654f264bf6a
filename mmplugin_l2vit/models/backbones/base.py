# Copyright (c) OpenMMLab. All rights reserved.
"""The backbone contract shared by every family of the plugin."""
import copy
import math
import numbers
import re
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ..converters import CheckpointFormatError
from ..layers.cpu_inference import forward_in_place, runs_in_place, to_nchw
from ..layers.tokens import HW


def _is_int_at_least(value, minimum: int) -> bool:
    return (isinstance(value, numbers.Integral)
            and not isinstance(value, bool) and value >= minimum)


def _is_positive_number(value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _one_per_stage(is_valid):

    def check(value, cls) -> bool:
        if not isinstance(value, (list, tuple)):
            return False
        return len(value) == cls.num_stages and all(map(is_valid, value))

    return check


_POSITIVE_INT_PER_STAGE = ('a list of {n} positive ints, one value per stage',
                           _one_per_stage(lambda v: _is_int_at_least(v, 1)))
_POSITIVE_INT = ('a positive int', lambda v, cls: _is_int_at_least(v, 1))
_TRAINING_SIZE = ('an int of at least {min_size}, the total stride',
                  lambda v, cls: _is_int_at_least(v, cls.min_input_size))
# What each arch value of every family must be: (requirement for the
# message, check of the value given the backbone class).
ARCH_VALUE_RULES = dict(
    embed_dims=_POSITIVE_INT_PER_STAGE,
    depths=_POSITIVE_INT_PER_STAGE,
    num_heads=_POSITIVE_INT_PER_STAGE,
    mlp_ratios=('a list of {n} positive numbers, one value per stage',
                _one_per_stage(_is_positive_number)),
    mlp_ratio=('a positive number', lambda v, cls: _is_positive_number(v)),
    window_size=_POSITIVE_INT,
    split_size=_POSITIVE_INT,
    pretrain_img_size=_TRAINING_SIZE,
)

# The unit a weight belongs to: a block, or the stem or a downsampling.
BLOCK_KEY = re.compile(r'^stages\.(\d+)\.blocks\.(\d+)\.')
UNIT_KEY = re.compile(r'^(stem|stages\.\d+\.downsample)\.')


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
    - input checks (shape, channels, minimum size, dtype) and empty
      outputs of the right shapes for an empty batch;
    - official checkpoints converted on load (``init_cfg=Pretrained``),
      and a checkpoint that would leave most weights unloaded refused.

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
        allow_partial_load (bool): Load a checkpoint that holds fewer than
            half of the backbone's weights (with their shapes) instead of
            refusing it with :class:`CheckpointFormatError`; the weights it
            lacks keep their initialisation. Default: False.
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
                 init_cfg: Optional[Union[dict, list]] = None,
                 allow_partial_load: bool = False):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._resolve_arch(arch)
        if not _is_int_at_least(in_channels, 1):
            raise ValueError(f'{type(self).__name__} in_channels must be a '
                             f'positive int, got {in_channels!r}')
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
        self.allow_partial_load = allow_partial_load
        self.register_load_state_dict_pre_hook(self._check_checkpoint_on_load)

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
        return cls._check_arch_values(
            dict(copy.deepcopy(cls.arch_defaults), **arch))

    @classmethod
    def _check_arch_values(cls, settings: dict) -> dict:
        """Return ``settings`` or raise a ValueError that names the first
        bad value, worded the same for every family."""
        for key, value in settings.items():
            requirement, is_valid = ARCH_VALUE_RULES[key]
            if not is_valid(value, cls):
                requirement = requirement.format(
                    n=cls.num_stages, min_size=cls.min_input_size)
                raise ValueError(f'{cls.__name__} arch {key!r} must be '
                                 f'{requirement}, got {value!r}')
        cls._check_family_arch(settings)
        dims, heads = settings['embed_dims'], settings['num_heads']
        for stage, (d, h) in enumerate(zip(dims, heads), 1):
            if d % h:
                raise ValueError(
                    f"{cls.__name__} arch 'num_heads' must divide "
                    f"'embed_dims' in every stage, got embed_dims {dims} and "
                    f'num_heads {heads} (stage {stage}: {d} is not '
                    f'divisible by num_heads {h})')
        return settings

    @classmethod
    def check_complete(cls, state_dict: Mapping) -> None:
        """Refuse converted official weights that lack part of the network.

        The depths are read from the block indices of ``state_dict``; every
        weight a backbone of those depths has in its stem and stages must
        be there (the output norms the official models lack are not
        required). A last block missing from a stage cannot be told from a
        shallower stage.

        Args:
            state_dict (Mapping): Weights with the backbone's keys.

        Raises:
            CheckpointFormatError: Naming the stages without any block and
                the blocks (or stem, downsamplings) with missing weights.
        """
        depths = [0] * cls.num_stages
        for key in state_dict:
            match = BLOCK_KEY.match(key)
            if match and int(match[1]) < cls.num_stages:
                stage, block = int(match[1]), int(match[2])
                depths[stage] = max(depths[stage], block + 1)
        preset = next(iter(cls.arch_zoo.values()))
        model = cls(dict(preset, depths=[max(d, 1) for d in depths]))
        missing: Dict[str, int] = {}
        for key in model.state_dict():
            if key.startswith(('stem.', 'stages.')) and key not in state_dict:
                unit = BLOCK_KEY.match(key) or UNIT_KEY.match(key)
                name = unit[0][:-1]
                missing[name] = missing.get(name, 0) + 1
        empty = tuple(f'stages.{i}.' for i, d in enumerate(depths) if not d)
        listed = [
            f'{unit} ({count} tensors)' for unit, count in missing.items()
            if not (unit + '.').startswith(empty)
        ]
        if not (empty or listed):
            return
        problems = [f'no block at all in {[s[:-1] for s in empty]}'] \
            if empty else []
        if listed:
            problems.append(f'missing weights of {listed[:12]}' +
                            (f' and {len(listed) - 12} more units'
                             if len(listed) > 12 else ''))
        raise CheckpointFormatError(
            f'incomplete {cls.__name__} weights (the file shows block '
            f'depths {depths}): ' + '; '.join(problems))

    @classmethod
    def _check_family_arch(cls, settings: dict) -> None:
        """Raise a ValueError for valid values that this family cannot
        combine; called before the check that heads divide the dims."""

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

    @property
    def out_channels(self) -> List[int]:
        """Channels of each output, in the order :meth:`forward` returns
        them."""
        return [self.embed_dims[i] for i in self.out_indices]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for an input the backbone cannot take."""
        weights_dtype = self.stem_dtype
        if not x.is_floating_point() or (
                x.dtype != weights_dtype
                and not torch.is_autocast_enabled(x.device.type)):
            raise TypeError(
                f'{type(self).__name__} expects a floating-point image of '
                f'its weights\' dtype {weights_dtype} (under autocast any '
                f'floating dtype), got {x.dtype}: normalise the image with '
                'a data preprocessor or convert it, e.g. x.to('
                f'{weights_dtype})')
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

    @property
    def stem_dtype(self) -> torch.dtype:
        """The dtype of the first weights the image meets."""
        return next(self.stem.parameters()).dtype

    def forward(self, x):
        """Return a tuple of ``(B, C_i, H_i, W_i)`` maps, one per entry of
        ``out_indices``, at strides 4, 8, 16 and 32 (empty ones for an
        empty batch, as convolutional backbones give)."""
        self.check_input(x)
        if x.shape[0] == 0:
            return self._empty_outputs(x)
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

    def _empty_outputs(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """The outputs for the empty batch ``x``. The stem and the
        downsamplings, run on one blank image (the token reshapes cannot
        take an empty batch), give the grids; the blocks keep them."""
        with torch.no_grad():
            tokens, hw = self.stem(x.new_zeros((1, *x.shape[1:])))
            outs = []
            for i, stage in enumerate(self.stages):
                if stage.downsample is not None:
                    tokens, hw = stage.downsample(tokens, hw)
                if i in self.out_indices:
                    outs.append(x.new_empty((0, tokens.shape[-1], *hw)))
        return tuple(outs)

    def _check_checkpoint_on_load(self, module, state_dict, prefix, *args):
        if self.checkpoint_converter is not None:
            self.checkpoint_converter.convert_in_place(state_dict, prefix)
        if not self.allow_partial_load:
            self._refuse_mostly_missing(state_dict, prefix)

    def _refuse_mostly_missing(self, state_dict: Mapping, prefix: str) -> None:
        """Raise when most of the backbone's weights (parameters and
        persistent buffers) are absent from ``state_dict`` or there with
        another shape: random weights would pass for trained ones."""
        expected = self.state_dict(keep_vars=True)
        other_shapes = {}
        missing = 0
        for key, weight in expected.items():
            value = state_dict.get(prefix + key)
            if not isinstance(value, torch.Tensor):
                missing += 1
            elif value.shape != weight.shape:
                other_shapes[key] = (tuple(value.shape), tuple(weight.shape))
        unloaded = missing + len(other_shapes)
        if 2 * unloaded <= len(expected):
            return
        name = type(self).__name__
        under = f' under the prefix {prefix!r}' if prefix else ''
        message = (f'{name}: only {len(expected) - unloaded} of its '
                   f'{len(expected)} weights would load from this '
                   f'checkpoint{under}.')
        if other_shapes:
            key, (found, wanted) = next(iter(other_shapes.items()))
            message += (f' {len(other_shapes)} are there with other shapes '
                        f'(e.g. {prefix}{key}: {found} in the checkpoint, '
                        f'{wanted} in the model): a checkpoint of another '
                        'arch?')
        # torch's own load_state_dict hands each module only the keys
        # under its prefix; mmengine's hands it all.
        keys = list(state_dict)[:5]
        if keys:
            message += f' Its first keys are {keys}.'
        else:
            message += f' It holds no key under {prefix!r}.'
        message += (' To load it anyway, build the backbone with '
                    'allow_partial_load=True.')
        raise CheckpointFormatError(message)
