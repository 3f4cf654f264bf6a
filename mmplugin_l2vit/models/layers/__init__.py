# Copyright (c) OpenMMLab. All rights reserved.
from .embeddings import (ConvDownsample, ConvPosEnc, ConvStem, Mlp,
                         add_mlp_branch, image_to_channels_last,
                         pad_to_multiple)
from .linear_attention import (POS_RESIZE_MODES, FocusedLinearAttention,
                               LocalConcentrationModule, ReLULinearAttention,
                               check_pos_resize_mode, focused_linear_attention,
                               focusing_function, relu_linear_attention,
                               resize_pos_embed, split_qkv_projection,
                               square_grid)
from .tokens import map_to_tokens, tokens_to_map, tokens_to_nchw
from .window_attention import UnmaskedWindowAttention, window_partition

__all__ = [
    'ConvDownsample', 'ConvPosEnc', 'ConvStem', 'Mlp', 'add_mlp_branch',
    'image_to_channels_last', 'pad_to_multiple', 'POS_RESIZE_MODES',
    'FocusedLinearAttention', 'LocalConcentrationModule',
    'check_pos_resize_mode', 'ReLULinearAttention', 'focused_linear_attention',
    'focusing_function', 'relu_linear_attention', 'resize_pos_embed',
    'split_qkv_projection', 'square_grid', 'map_to_tokens', 'tokens_to_map',
    'tokens_to_nchw', 'UnmaskedWindowAttention', 'window_partition'
]
