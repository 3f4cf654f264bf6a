# Copyright (c) OpenMMLab. All rights reserved.
"""Fixes that today's software stack needs; nothing here imports models."""
from .safe_load import allow_checkpoint_globals, checkpoint_safe_globals

__all__ = ['allow_checkpoint_globals', 'checkpoint_safe_globals']
