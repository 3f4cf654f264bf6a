# Copyright (c) OpenMMLab. All rights reserved.
"""Linear-attention backbones (L²ViT, FLatten) for OpenMMLab.

Importing the package registers every backbone (see :mod:`.registry`) and
applies the fixes the installed mmengine/torch needs, all listed in
:mod:`.runtime` (``MMPLUGIN_L2VIT_STACK_FIXES=0`` turns them off):
weights-only checkpoint loading with a scoped allow-list, atomic writes
that keep outdated checkpoints until the new one is in place, distributed
training on CPU-only hosts. It also lets configs inherit ours by scope,
``_base_ = 'mmplugin_l2vit::...'`` (see :mod:`.config_scope`), and adds
our ImageNet classifiers to mmpretrain's ``ModelHub`` (see
:mod:`.model_index`).
"""
from .checks import check_model_channels, explain_load_error
from .config_scope import register_config_scope
from .model_index import register_with_mmpretrain
from .models import *  # noqa: F401,F403,E402  (registers the backbones)
from .registry import register_into_downstream
from .runtime import apply_stack_fixes
from .version import __version__

apply_stack_fixes()
register_into_downstream()
register_config_scope()
register_with_mmpretrain()

__all__ = ['__version__', 'check_model_channels', 'explain_load_error']
