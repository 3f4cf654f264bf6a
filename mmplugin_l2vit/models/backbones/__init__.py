# Copyright (c) OpenMMLab. All rights reserved.
from .base import HierarchicalBackbone
from .l2vit import L2ViT

__all__ = ['HierarchicalBackbone', 'L2ViT']
