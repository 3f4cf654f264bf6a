# Copyright (c) OpenMMLab. All rights reserved.
"""Checks that turn config and checkpoint mistakes into clear messages.

``tools/train.py`` and ``tools/test.py`` call :func:`check_model_channels`
once the Runner has built the model; call it in your own pipelines the same
way::

    from mmplugin_l2vit import check_model_channels
    check_model_channels(runner.model)  # or any built model
"""
from typing import List, Optional, Sequence, Union

import torch.nn as nn

from .models.converters import CONVERTERS


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside wrappers (DDP, test-time augmentation) that hold it
    as ``module``."""
    while not hasattr(model, 'backbone') and isinstance(
            getattr(model, 'module', None), nn.Module):
        model = model.module
    return model


def _modules(attribute) -> List[nn.Module]:
    """A module, or the modules of a list of them (mmseg's auxiliary
    heads, mmdet's stacked necks)."""
    if attribute is None:
        return []
    if isinstance(attribute, (nn.ModuleList, nn.Sequential)):
        return list(attribute)
    return [attribute]


def _head_input(head: nn.Module, channels: Sequence[int], role: str,
                source: str) -> Union[int, List[int], None]:
    """The channels ``head`` receives from ``channels``: mmseg heads pick
    outputs by ``in_index`` (and sum them for ``'resize_concat'``), other
    heads (mmpretrain's) take the last one."""
    in_index = getattr(head, 'in_index', None)
    if in_index is None:
        return channels[-1]
    indices = in_index if isinstance(in_index, (list, tuple)) else [in_index]
    if any(not -len(channels) <= i < len(channels) for i in indices):
        raise ValueError(
            f'the {role} {type(head).__name__} reads outputs in_index '
            f'{in_index} but {source}, {len(channels)} outputs')
    picked = [channels[i] for i in indices]
    if getattr(head, 'input_transform', None) == 'resize_concat':
        return sum(picked)
    return picked if isinstance(in_index, (list, tuple)) else picked[0]


def check_model_channels(model: nn.Module) -> None:
    """Check that the neck or heads of ``model`` take the channels its
    backbone outputs.

    Covers mmdet detectors, mmseg segmentors and mmpretrain classifiers
    (also inside wrappers that hold them as ``module``) whose backbone
    reports its output channels as a list ``out_channels``, as the plugin's
    backbones do:

    - a neck with a list ``in_channels`` (FPN, ChannelMapper, ...) must
      list the backbone's channels, in order;
    - without such a neck, mmseg's ``decode_head`` and ``auxiliary_head``
      must take the outputs their ``in_index`` picks (summed for
      ``input_transform='resize_concat'``), and an mmpretrain ``head`` the
      last output (also after a neck without ``in_channels``, such as
      ``GlobalAveragePooling``).

    Other models pass unchecked.

    Args:
        model (nn.Module): A built model.

    Raises:
        ValueError: Naming the module, the channels it takes and the ones
            the backbone outputs.
    """
    model = _unwrap(model)
    backbone = getattr(model, 'backbone', None)
    channels = getattr(backbone, 'out_channels', None)
    if not isinstance(channels, (list, tuple)):
        return
    channels = list(channels)
    source = (f'the backbone {type(backbone).__name__} outputs {channels} '
              f'(out_indices {getattr(backbone, "out_indices", "?")})')
    necks = _modules(getattr(model, 'neck', None))
    if necks:
        expected = getattr(necks[0], 'in_channels', None)
        if isinstance(expected, (list, tuple)):
            if list(expected) != channels:
                raise ValueError(
                    f'the neck {type(necks[0]).__name__} takes in_channels '
                    f'{list(expected)} but {source}')
            return
        if expected is not None:
            return
    for role in ('decode_head', 'auxiliary_head', 'head'):
        for head in _modules(getattr(model, role, None)):
            expected = getattr(head, 'in_channels', None)
            if expected is None:
                continue
            if isinstance(expected, tuple):
                expected = list(expected)
            given = _head_input(head, channels, role, source)
            if expected != given:
                raise ValueError(
                    f'the {role} {type(head).__name__} takes in_channels '
                    f'{expected} but {source}, of which it gets {given}')


def explain_load_error(checkpoint: Optional[str], error: Exception) -> str:
    """A one-line message for ``error``, raised while loading the file
    ``checkpoint`` (None if unknown) into a whole model: the conversion
    advice when the file is an official release, else the error."""
    if checkpoint is not None:
        from mmengine.runner.checkpoint import _load_checkpoint
        content = _load_checkpoint(checkpoint, map_location='cpu')
        for converter in CONVERTERS:
            advice = converter.release_advice(content)
            if advice is not None:
                return f'{checkpoint}: {advice}'
    return f'{checkpoint or "loading weights"}: {error}'
