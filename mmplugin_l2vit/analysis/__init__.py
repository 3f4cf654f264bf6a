# Copyright (c) OpenMMLab. All rights reserved.
from .complexity import count_macs

__all__ = ['count_macs']
