# Copyright (c) OpenMMLab. All rights reserved.
from . import block_rows  # noqa: F401  (registers the plugin's blocks)
from .attention_maps import (AttentionMaps, AttentionRows, Rows,
                             attention_maps, attention_rows_of, check_points,
                             list_layers, register_attention_rows)
from .complexity import count_macs, count_macs_of
from .loading import (BACKBONE_HELP, MMDET_ARCHS, SHORT_NAMES,
                      add_shape_argument, backbone_config, build_backbone,
                      image_normalisation, image_to_tensor, load_model_config,
                      parse_shape, parse_shapes, read_image, shape_text)
from .memory import peak_activation_memory
from .receptive_field import (MASS_FRACTIONS, centre_gradients,
                              effective_receptive_field, log_heat_map,
                              mass_area, mass_share, summary_line)
from .row_math import effective_keys

__all__ = [
    'AttentionMaps', 'AttentionRows', 'Rows', 'attention_maps',
    'attention_rows_of', 'check_points', 'list_layers',
    'register_attention_rows', 'count_macs', 'count_macs_of', 'BACKBONE_HELP',
    'MMDET_ARCHS', 'SHORT_NAMES', 'add_shape_argument', 'backbone_config',
    'build_backbone', 'image_normalisation', 'image_to_tensor',
    'load_model_config', 'parse_shape', 'parse_shapes', 'read_image',
    'shape_text', 'peak_activation_memory', 'MASS_FRACTIONS',
    'centre_gradients', 'effective_receptive_field', 'log_heat_map',
    'mass_area', 'mass_share', 'summary_line', 'effective_keys'
]
