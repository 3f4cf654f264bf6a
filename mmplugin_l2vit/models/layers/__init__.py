# Copyright (c) OpenMMLab. All rights reserved.
"""Where each idea lives:

- :mod:`.relu_linear_attention`: L²ViT's linear global attention;
- :mod:`.local_concentration`: L²ViT's Local Concentration Module (LCM);
- :mod:`.focused_linear_attention`: FLatten's focused linear attention
  (focusing function, DWC rank restoration);
- :mod:`.window_attention`: window softmax attention, L²ViT's unmasked
  padded windows and Swin's shifted ones;
- :mod:`.lepe`: CSWin's LePE and FLatten-CSwin's attentions;
- :mod:`.embeddings`: stems, downsampling, position encodings, the MLP;
- :mod:`.tokens`: token, map and head views, and the attentions' ``kᵀv``;
- :mod:`.depthwise_conv`: the depthwise convolutions of every local branch,
  with a faster weight gradient in CPU training;
- :mod:`.float32_sums`: the linear attentions' precision policy;
- :mod:`.cpu_inference`: the CPU's in-place inference over the same steps.
"""
from .depthwise_conv import DepthwiseConv2d, depthwise_weight_grad
from .embeddings import (POS_RESIZE_MODES, ConvDownsample, ConvPosEnc,
                         ConvStem, Mlp, check_pos_resize_mode,
                         image_to_channels_last, pad_to_multiple,
                         resize_pos_embed)
from .focused_linear_attention import (EPS, FocusedLinearAttention,
                                       focused_attend,
                                       focused_key_value_summary,
                                       focused_linear_attention,
                                       focused_normaliser, focusing_function,
                                       rank_restoration)
from .lepe import LePEAttention, LePEFocusedLinearAttention, lepe
from .local_concentration import LocalConcentrationModule
from .relu_linear_attention import (DENOMINATOR_FLOOR, ReLULinearAttention,
                                    relu_attend, relu_features,
                                    relu_key_value_summary,
                                    relu_linear_attention, relu_normaliser)
from .tokens import (map_to_tokens, merge_heads, split_heads, tokens_to_map,
                     tokens_to_nchw)
from .window_attention import (ShiftedWindowAttention, UnmaskedWindowAttention,
                               fits_one_window, merge_windows,
                               partition_windows, relative_position_index,
                               shifted_window_mask)

__all__ = [
    'DepthwiseConv2d', 'depthwise_weight_grad', 'POS_RESIZE_MODES',
    'ConvDownsample', 'ConvPosEnc', 'ConvStem', 'Mlp', 'check_pos_resize_mode',
    'image_to_channels_last', 'pad_to_multiple', 'resize_pos_embed', 'EPS',
    'FocusedLinearAttention', 'focused_attend', 'focused_key_value_summary',
    'focused_linear_attention', 'focused_normaliser', 'focusing_function',
    'rank_restoration', 'LePEAttention', 'LePEFocusedLinearAttention', 'lepe',
    'LocalConcentrationModule', 'DENOMINATOR_FLOOR', 'ReLULinearAttention',
    'relu_attend', 'relu_features', 'relu_key_value_summary',
    'relu_linear_attention', 'relu_normaliser', 'map_to_tokens', 'merge_heads',
    'split_heads', 'tokens_to_map', 'tokens_to_nchw', 'ShiftedWindowAttention',
    'UnmaskedWindowAttention', 'fits_one_window', 'merge_windows',
    'partition_windows', 'relative_position_index', 'shifted_window_mask'
]
