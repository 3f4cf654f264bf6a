# Copyright (c) OpenMMLab. All rights reserved.
"""The plugin's scoped registry and its bridge into the downstream libraries.

``type='mmplugin_l2vit.L2ViT'`` resolves from any OpenMMLab registry without
``custom_imports``: mmengine imports this module for the ``mmplugin_l2vit``
scope and then the registry's ``locations``. Importing the package also adds
every backbone to the ``MODELS`` registry of mmdet, mmseg and mmpretrain
where those are installed, so plain ``type='L2ViT'`` works there too.
"""
import importlib
import importlib.util
import logging
import warnings

from mmengine.logging import print_log
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model',
    parent=MMENGINE_MODELS,
    scope='mmplugin_l2vit',
    locations=['mmplugin_l2vit.models'])

DOWNSTREAM_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')


def _downstream_registry(scope):
    """Return ``<scope>.registry.MODELS``, or None if it cannot be used."""
    if importlib.util.find_spec(scope) is None:
        return None
    try:
        # Importing ``mmdet.registry`` runs ``mmdet/__init__.py``, which
        # asserts the mmcv version (AssertionError, not ImportError).
        return importlib.import_module(f'{scope}.registry').MODELS
    except Exception as error:  # noqa: BLE001
        warnings.warn(f'mmplugin_l2vit: {scope} is installed but its '
                      f'registry cannot be imported ({error!r}); the '
                      f'backbones are not registered into {scope}.')
        return None


def _tolerate_missing_torchvision(registry):
    """Let a registry whose ``locations`` need torchvision still build the
    modules registered into it explicitly.

    ``mmpretrain.models`` imports torchvision at module level without
    declaring it, and a registry imports its locations before every lookup,
    so without torchvision nothing at all could be built from mmpretrain's
    ``MODELS``. With this wrapper a failed import for want of torchvision is
    reported once and the lookup goes on; any other error still raises.
    """
    if getattr(registry, '_l2vit_tolerates_torchvision', False):
        return
    import_locations = registry.import_from_location

    def import_from_location():
        try:
            import_locations()
        except ModuleNotFoundError as error:
            if error.name != 'torchvision':
                raise
            registry._imported = True
            print_log(
                f'{registry.scope}.models needs torchvision, which is not '
                f'installed: only modules registered explicitly (such as '
                f'the mmplugin_l2vit backbones) can be built from the '
                f'{registry.scope} registry.',
                logger='current',
                level=logging.WARNING)

    registry.import_from_location = import_from_location
    registry._l2vit_tolerates_torchvision = True


def register_into_downstream():
    """Add every module of :data:`MODELS` to the installed downstream
    registries. Safe to call more than once."""
    for scope in DOWNSTREAM_SCOPES:
        registry = _downstream_registry(scope)
        if registry is None:
            continue
        if scope == 'mmpretrain':
            _tolerate_missing_torchvision(registry)
        for name, module in MODELS.module_dict.items():
            existing = registry.module_dict.get(name)
            if existing is module:
                continue
            if existing is not None:
                warnings.warn(f'mmplugin_l2vit: {scope} already registers '
                              f'a different {name!r}; use '
                              f"type='mmplugin_l2vit.{name}' for ours.")
                continue
            registry.register_module(name=name, module=module)
