# Copyright (c) OpenMMLab. All rights reserved.
"""Fixes that today's software stack needs; nothing here imports models.

:func:`apply_stack_fixes` runs when the package is imported:

- weights-only ``torch.load`` allow-list for OpenMMLab and official
  checkpoints, and weights-only loading of URLs (:mod:`.safe_load`);
- distributed training on CPU-only hosts with gloo (:mod:`.distributed`);
- atomic checkpoint writes (:mod:`.atomic_io`).
"""
from .atomic_io import make_local_writes_atomic
from .distributed import allow_cpu_distributed
from .safe_load import (allow_checkpoint_globals, checkpoint_safe_globals,
                        load_urls_weights_only)


def apply_stack_fixes() -> None:
    allow_checkpoint_globals()
    load_urls_weights_only()
    allow_cpu_distributed()
    make_local_writes_atomic()


__all__ = [
    'allow_checkpoint_globals', 'allow_cpu_distributed',
    'apply_stack_fixes', 'checkpoint_safe_globals',
    'load_urls_weights_only', 'make_local_writes_atomic'
]
