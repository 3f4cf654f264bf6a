# Copyright (c) OpenMMLab. All rights reserved.
from .complexity import count_macs, count_macs_of

__all__ = ['count_macs', 'count_macs_of']
