# Copyright (c) OpenMMLab. All rights reserved.
"""Linear-attention backbones (L²ViT, FLatten) for OpenMMLab.

Importing the package registers every backbone (see :mod:`.registry`) and
applies the fixes the installed mmengine/torch needs, all listed in
:mod:`.runtime` (``MMPLUGIN_L2VIT_STACK_FIXES=0`` turns them off):
weights-only checkpoint loading with a scoped allow-list, atomic writes
that keep outdated checkpoints until the new one is in place, distributed
training on CPU-only hosts.
"""
from .models import *  # noqa: F401,F403,E402  (registers the backbones)
from .registry import register_into_downstream
from .runtime import apply_stack_fixes
from .version import __version__

apply_stack_fixes()
register_into_downstream()

__all__ = ['__version__']
