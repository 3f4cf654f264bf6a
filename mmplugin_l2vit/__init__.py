# Copyright (c) OpenMMLab. All rights reserved.
"""Linear-attention backbones (L²ViT, FLatten) for OpenMMLab.

Importing the package registers every backbone (see :mod:`.registry`) and
allow-lists the few classes that OpenMMLab and official checkpoints need for
``torch.load`` with ``weights_only=True`` (see :mod:`.runtime`).
"""
from .models import *  # noqa: F401,F403,E402  (registers the backbones)
from .registry import register_into_downstream
from .runtime import allow_checkpoint_globals
from .version import __version__

allow_checkpoint_globals()
register_into_downstream()

__all__ = ['__version__']
