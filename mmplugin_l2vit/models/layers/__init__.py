# Copyright (c) OpenMMLab. All rights reserved.
from .embeddings import (ConvDownsample, ConvPosEnc, ConvStem, Mlp,
                         pad_to_multiple)
from .linear_attention import (FocusedLinearAttention,
                               LocalConcentrationModule, ReLULinearAttention,
                               focused_linear_attention, focusing_function,
                               relu_linear_attention, resize_pos_embed,
                               square_grid)
from .tokens import map_to_tokens, tokens_to_map, tokens_to_nchw
from .window_attention import (UnmaskedWindowAttention, window_partition,
                               window_reverse)

__all__ = [
    'ConvDownsample', 'ConvPosEnc', 'ConvStem', 'Mlp', 'pad_to_multiple',
    'FocusedLinearAttention', 'LocalConcentrationModule',
    'ReLULinearAttention', 'focused_linear_attention', 'focusing_function',
    'relu_linear_attention', 'resize_pos_embed', 'square_grid',
    'map_to_tokens', 'tokens_to_map',
    'tokens_to_nchw', 'UnmaskedWindowAttention', 'window_partition',
    'window_reverse'
]
