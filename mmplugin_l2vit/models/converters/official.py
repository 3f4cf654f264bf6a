# Copyright (c) OpenMMLab. All rights reserved.
"""Recognise and convert official (research-code) checkpoints.

A :class:`KeyMapConverter` holds one family's key map as ordered regular
expression rules. Backbones call :meth:`KeyMapConverter.convert_in_place`
from a ``load_state_dict`` pre-hook, so ``init_cfg=dict(type='Pretrained',
checkpoint=...)`` accepts an official release file as it is; the model
converter CLIs call :func:`convert_checkpoint_file`.
"""
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from ...runtime import load_checkpoint_file

Rules = Sequence[Tuple[str, Optional[str]]]

# Keys of the training dicts that official release files are saved as:
# L²ViT has ``model`` and ``model_ema``, FLatten ``model`` and (CSwin)
# ``state_dict_ema``.
CONTAINER_KEYS = ('model', 'model_ema', 'state_dict', 'state_dict_ema',
                  'module')
EMA_KEYS = ('model_ema', 'state_dict_ema')


_DROP = object()


class CheckpointFormatError(ValueError):
    """The checkpoint is not one that the backbone can load."""


def _strip_module_prefix(state_dict: Mapping) -> 'OrderedDict':
    return OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v)
        for k, v in state_dict.items())


def unwrap_checkpoint(checkpoint: Mapping,
                      use_ema: bool = False) -> 'OrderedDict':
    """Return the model state dict held by a checkpoint file's content.

    Accepts an official training dict (``model`` and maybe ``model_ema`` or
    ``state_dict_ema``), an mmengine one (``state_dict``) or a bare state
    dict, and strips a ``module.`` prefix.

    Args:
        checkpoint (Mapping): What ``torch.load`` returned.
        use_ema (bool): Take the EMA weights rather than ``model``.
            Default: False.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointFormatError(
            f'expected a dict from the checkpoint, got {type(checkpoint)}')
    if use_ema:
        ema_key = next((k for k in EMA_KEYS if k in checkpoint), None)
        if ema_key is None:
            raise CheckpointFormatError(
                f'EMA weights were asked for but the checkpoint has none of '
                f'{list(EMA_KEYS)}; its top-level keys are '
                f'{sorted(checkpoint)[:10]}')
        state_dict = checkpoint[ema_key]
    else:
        state_dict = next(
            (checkpoint[key] for key in CONTAINER_KEYS
             if isinstance(checkpoint.get(key), Mapping)), checkpoint)
    return _strip_module_prefix(state_dict)


class KeyMapConverter:
    """One family's official-to-plugin key map.

    Args:
        family (str): Name used in messages, e.g. ``'L2ViT'``.
        official_pattern (str): Matches keys of an official checkpoint.
        own_pattern (str): Matches keys of the plugin's backbone.
        rules (list[tuple[str, str | None]]): ``(pattern, replacement)``
            pairs for :func:`re.sub`; the first matching rule renames a key,
            or drops it when the replacement is None (buffers the backbone
            rebuilds, say).
        head_rules (list[tuple[str, str]]): Rules for the classification
            head, applied only when the head is kept.
    """

    def __init__(self, family: str, official_pattern: str, own_pattern: str,
                 rules: Rules, head_rules: Rules):
        self.family = family
        self.official_pattern = re.compile(official_pattern)
        self.own_pattern = re.compile(own_pattern)
        self.rules = [(re.compile(p), r) for p, r in rules]
        self.head_rules = [(re.compile(p), r) for p, r in head_rules]

    def is_official(self, keys) -> bool:
        return any(self.official_pattern.match(k) for k in keys)

    def _rename(self, key: str, rules):
        """Return the new key, ``_DROP`` or None when no rule matches."""
        for pattern, replacement in rules:
            if pattern.match(key):
                if replacement is None:
                    return _DROP
                return pattern.sub(replacement, key, count=1)
        return None

    def convert(self, state_dict: Mapping,
                keep_head: bool = False) -> 'OrderedDict':
        """Rename official keys to the plugin's.

        Args:
            state_dict (Mapping): An official model state dict.
            keep_head (bool): Keep the classification head (renamed for an
                mmpretrain ``LinearClsHead``) instead of dropping it.

        Raises:
            CheckpointFormatError: If the dict is not an official checkpoint
                of this family or has keys the map does not know.
        """
        if not self.is_official(state_dict):
            raise CheckpointFormatError(
                f'this is not an official {self.family} checkpoint; its '
                f'first keys are {list(state_dict)[:5]}')
        converted = OrderedDict()
        unknown: List[str] = []
        for key, value in state_dict.items():
            new_key = self._rename(key, self.rules)
            if new_key is _DROP:
                continue
            if new_key is None:
                head_key = self._rename(key, self.head_rules)
                if head_key is None:
                    unknown.append(key)
                elif keep_head:
                    converted[head_key] = value
                continue
            converted[new_key] = value
        if unknown:
            raise CheckpointFormatError(
                f'keys not in the official {self.family} key map: '
                f'{unknown[:10]}' + (' ...' if len(unknown) > 10 else ''))
        return converted

    def convert_in_place(self, state_dict: Dict, prefix: str) -> None:
        """Make ``state_dict`` loadable into the backbone at ``prefix``.

        Called from a ``load_state_dict`` pre-hook. It unwraps an official
        training dict (``model``/``model_ema`` with optimizer state and
        arguments), converts official keys, and refuses a foreign
        checkpoint. Keys outside ``prefix`` are left alone.
        """
        own = [k for k in state_dict if k.startswith(prefix)]
        if not own:
            return
        local = {k[len(prefix):]: state_dict[k] for k in own}
        if any(isinstance(local.get(k), Mapping) for k in CONTAINER_KEYS):
            local = unwrap_checkpoint(local)
        elif not self.is_official(local):
            if not any(self.own_pattern.match(k) for k in local):
                raise CheckpointFormatError(self._foreign_message(local))
            return
        converted = self.convert(local)
        for key in own:
            del state_dict[key]
        state_dict.update((prefix + k, v) for k, v in converted.items())

    def _foreign_message(self, local: Mapping) -> str:
        keys = list(local)
        hint = ''
        if any(k.startswith('backbone.') for k in keys):
            hint = (" It holds a whole model: load it with "
                    "init_cfg=dict(type='Pretrained', checkpoint=..., "
                    "prefix='backbone.').")
        return (f'the checkpoint is not an {self.family} one (neither '
                f'official nor converted); its first keys are {keys[:5]}.'
                + hint)


def convert_checkpoint_file(src: str,
                            dst: str,
                            converter: KeyMapConverter,
                            use_ema: bool = False,
                            mmpretrain: bool = False) -> int:
    """Convert an official checkpoint file; return the tensors written.

    Writes a plain backbone state dict, or with ``mmpretrain`` a whole
    ``ImageClassifier`` one (``backbone.*`` and ``head.fc.*``). The file is
    written under a temporary name and renamed, so an interrupted run never
    leaves a partial ``dst``; ``dst`` may not be ``src``.
    """
    if osp.abspath(src) == osp.abspath(dst):
        raise ValueError('refusing to overwrite the source checkpoint')
    checkpoint = load_checkpoint_file(src, map_location='cpu')
    weights = converter.convert(
        unwrap_checkpoint(checkpoint, use_ema=use_ema), keep_head=mmpretrain)
    if mmpretrain:
        weights = OrderedDict(
            (k if k.startswith('head.') else 'backbone.' + k, v)
            for k, v in weights.items())
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    tmp = f'{dst}.tmp{os.getpid()}'
    try:
        torch.save(weights, tmp)
        os.replace(tmp, dst)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return len(weights)
