# Copyright (c) OpenMMLab. All rights reserved.
from .base import HierarchicalBackbone
from .flatten_swin import FLattenSwin
from .l2vit import L2ViT

__all__ = ['HierarchicalBackbone', 'FLattenSwin', 'L2ViT']
