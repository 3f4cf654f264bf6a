# Copyright (c) OpenMMLab. All rights reserved.
"""Linear-attention backbones (L²ViT, FLatten) for OpenMMLab.

Importing the package registers every backbone (see :mod:`.registry`) and
applies the fixes today's stack needs (see :mod:`.runtime`): weights-only
``torch.load`` of OpenMMLab and official checkpoints, distributed training
on CPU-only hosts, atomic checkpoint writes.
"""
from .checks import check_model_channels, explain_load_error
from .models import *  # noqa: F401,F403,E402  (registers the backbones)
from .registry import register_into_downstream
from .runtime import apply_stack_fixes
from .version import __version__

apply_stack_fixes()
register_into_downstream()

__all__ = ['__version__', 'check_model_channels', 'explain_load_error']
