# Copyright (c) OpenMMLab. All rights reserved.
from .embeddings import (ConvDownsample, ConvPosEnc, ConvStem, Mlp,
                         pad_to_multiple)
from .linear_attention import (LocalConcentrationModule, ReLULinearAttention,
                               kfirst_linear_attention)
from .tokens import map_to_tokens, tokens_to_map, tokens_to_nchw
from .window_attention import (UnmaskedWindowAttention, window_partition,
                               window_reverse)

__all__ = [
    'ConvDownsample', 'ConvPosEnc', 'ConvStem', 'Mlp', 'pad_to_multiple',
    'LocalConcentrationModule', 'ReLULinearAttention',
    'kfirst_linear_attention', 'map_to_tokens', 'tokens_to_map',
    'tokens_to_nchw', 'UnmaskedWindowAttention', 'window_partition',
    'window_reverse'
]
