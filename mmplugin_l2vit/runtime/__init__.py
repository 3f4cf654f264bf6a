# Copyright (c) OpenMMLab. All rights reserved.
"""Every change the plugin makes to mmengine and torch; nothing here
imports models.

:func:`apply_stack_fixes` runs when the package is imported. It applies
each fix below only where its check says the installed version needs it,
and none when the environment variable ``MMPLUGIN_L2VIT_STACK_FIXES`` is
``0``. mmengine fixes are checked against mmengine <= 0.10.7 (the newest
release they were written for); a later mmengine is left alone.

``checkpoint-loading`` (torch >= 2.6 and mmengine <= 0.10.7)
    mmengine's ``CheckpointLoader.load_checkpoint`` loads inside
    :func:`checkpoint_globals`, which allow-lists what Runner checkpoints
    and the official release files hold for those loads only; errors name
    the file, and an empty or truncated file says so (:mod:`.safe_load`).
``weights-only-urls`` (torch >= 2.6 and mmengine <= 0.10.7)
    mmengine's URL loader (``http(s)://``, ``torchvision://``,
    ``modelzoo://``, ``open-mmlab://``, ``mmcls://``) loads weights-only.
``atomic-writes`` (mmengine <= 0.10.7)
    ``LocalBackend.put``/``put_text`` write a temporary file and rename it,
    keeping a plain write's permissions and symlinks (:mod:`.atomic_io`).
``keep-until-replaced`` (mmengine <= 0.10.7)
    ``CheckpointHook`` removes outdated checkpoints after the new one and
    ``last_checkpoint`` are written (:mod:`.checkpoint_hook`).
``cpu-distributed`` (mmengine <= 0.10.7)
    ``--launcher pytorch`` works on CPU-only hosts with gloo
    (:mod:`.distributed`).
"""
import os
from typing import Callable, List, NamedTuple, Tuple

import mmengine
import torch
from mmengine.utils import digit_version

from .atomic_io import (atomic_write, make_local_writes_atomic,
                        remove_stale_temporaries)
from .checkpoint_hook import keep_checkpoints_until_replaced
from .distributed import allow_cpu_distributed
from .safe_load import (CheckpointFileError, checkpoint_globals,
                        checkpoint_safe_globals, load_checkpoint_file,
                        load_urls_weights_only,
                        scope_checkpoint_globals_to_mmengine)

STACK_FIXES_ENV = 'MMPLUGIN_L2VIT_STACK_FIXES'
LAST_CHECKED_MMENGINE = '0.10.7'


class StackFix(NamedTuple):
    name: str
    needed: Callable[[], bool]
    apply: Callable[[], None]


def _mmengine_unfixed() -> bool:
    return (digit_version(mmengine.__version__) <=
            digit_version(LAST_CHECKED_MMENGINE))


def _mmengine_loads_without_weights_only_support() -> bool:
    # torch 2.6 made weights_only the default of torch.load.
    return (digit_version(torch.__version__) >= digit_version('2.6.0')
            and _mmengine_unfixed())


STACK_FIXES: Tuple[StackFix, ...] = (
    StackFix('checkpoint-loading',
             _mmengine_loads_without_weights_only_support,
             scope_checkpoint_globals_to_mmengine),
    StackFix('weights-only-urls',
             _mmengine_loads_without_weights_only_support,
             load_urls_weights_only),
    StackFix('atomic-writes', _mmengine_unfixed, make_local_writes_atomic),
    StackFix('keep-until-replaced', _mmengine_unfixed,
             keep_checkpoints_until_replaced),
    StackFix('cpu-distributed', _mmengine_unfixed, allow_cpu_distributed),
)

_applied: List[str] = []


def stack_fixes_disabled() -> bool:
    """Whether ``MMPLUGIN_L2VIT_STACK_FIXES`` turns every fix off."""
    value = os.environ.get(STACK_FIXES_ENV, '1').strip().lower()
    return value in ('0', 'false', 'off', 'no')


def apply_stack_fixes() -> Tuple[str, ...]:
    """Apply the fixes the installed stack needs (once each); return the
    names of those applied in this process."""
    if not stack_fixes_disabled():
        for fix in STACK_FIXES:
            if fix.name not in _applied and fix.needed():
                fix.apply()
                _applied.append(fix.name)
    return tuple(_applied)


__all__ = [
    'CheckpointFileError', 'LAST_CHECKED_MMENGINE', 'STACK_FIXES',
    'STACK_FIXES_ENV', 'StackFix', 'apply_stack_fixes', 'atomic_write',
    'checkpoint_globals', 'checkpoint_safe_globals', 'load_checkpoint_file',
    'remove_stale_temporaries', 'stack_fixes_disabled'
]
