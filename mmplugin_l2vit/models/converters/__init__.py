# Copyright (c) OpenMMLab. All rights reserved.
from .l2vit import L2VIT_CONVERTER
from .official import (CheckpointFormatError, KeyMapConverter,
                       convert_checkpoint_file, unwrap_checkpoint)

__all__ = [
    'L2VIT_CONVERTER', 'CheckpointFormatError', 'KeyMapConverter',
    'convert_checkpoint_file', 'unwrap_checkpoint'
]
