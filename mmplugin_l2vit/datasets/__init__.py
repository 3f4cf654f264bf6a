# Copyright (c) OpenMMLab. All rights reserved.
from .demo_data import (DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SIZE,
                        SHAPE_CLASSES, SHAPE_PALETTE, generate_demo_data,
                        render_scene)

__all__ = [
    'DEFAULT_NUM_TRAIN', 'DEFAULT_NUM_VAL', 'DEFAULT_SIZE', 'SHAPE_CLASSES',
    'SHAPE_PALETTE', 'generate_demo_data', 'render_scene'
]
