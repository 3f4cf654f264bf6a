# Copyright (c) OpenMMLab. All rights reserved.
"""Lets a config inherit ours by scope, from any directory::

    _base_ = 'mmplugin_l2vit::l2vit/mask-rcnn_l2vit-t_fpn_1x_coco.py'

mmengine 0.10 resolves ``scope::path`` only for the packages named in its
``MODULE2PACKAGE`` table, and then reads ``<package>/.mim/configs/path``
(setup.py puts the configs there). :func:`register_config_scope`, run when
the package is imported, adds this package's entry to that table and
touches no other. The import has to come before the config is parsed:
mmengine resolves ``_base_`` before it runs the config's
``custom_imports``.
"""
from mmengine.config.utils import MODULE2PACKAGE

SCOPE = 'mmplugin_l2vit'
# The name mmengine looks the package's folder up by. mmengine asks
# pkg_resources for a distribution of that name first, and for an editable
# install the distribution's location is site-packages, not the checkout.
# This module's dotted name is no distribution, so mmengine falls back to
# importlib's find_spec, which finds the folder of the package Python
# imports (this module's folder) for a wheel and an editable install alike.
PACKAGE_LOCATOR = __name__


def register_config_scope() -> None:
    """Make ``mmplugin_l2vit::`` config paths resolvable; idempotent. An
    entry that mmengine itself may bring one day is left as it is."""
    MODULE2PACKAGE.setdefault(SCOPE, PACKAGE_LOCATOR)
