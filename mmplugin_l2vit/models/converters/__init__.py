# Copyright (c) OpenMMLab. All rights reserved.
from .flatten_cswin import FLATTEN_CSWIN_CONVERTER
from .flatten_pvt import FLATTEN_PVT_CONVERTER, FLATTEN_PVT_V2_CONVERTER
from .flatten_swin import FLATTEN_SWIN_CONVERTER
from .l2vit import L2VIT_CONVERTER
from .official import (CheckpointFormatError, KeyMapConverter,
                       convert_checkpoint_file, unwrap_checkpoint)

# Every family's converter, to recognise an official file of any of them.
CONVERTERS = (L2VIT_CONVERTER, FLATTEN_PVT_CONVERTER, FLATTEN_PVT_V2_CONVERTER,
              FLATTEN_SWIN_CONVERTER, FLATTEN_CSWIN_CONVERTER)

__all__ = [
    'CONVERTERS', 'FLATTEN_CSWIN_CONVERTER', 'FLATTEN_PVT_CONVERTER',
    'FLATTEN_PVT_V2_CONVERTER', 'FLATTEN_SWIN_CONVERTER', 'L2VIT_CONVERTER',
    'CheckpointFormatError', 'KeyMapConverter', 'convert_checkpoint_file',
    'unwrap_checkpoint'
]
