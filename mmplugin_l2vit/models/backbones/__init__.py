# Copyright (c) OpenMMLab. All rights reserved.
from .base import HierarchicalBackbone
from .flatten_cswin import FLattenCSWin
from .flatten_pvt import FLattenPVT, FLattenPVTv2
from .flatten_swin import FLattenSwin
from .l2vit import L2ViT

__all__ = [
    'HierarchicalBackbone', 'FLattenCSWin', 'FLattenPVT', 'FLattenPVTv2',
    'FLattenSwin', 'L2ViT'
]
