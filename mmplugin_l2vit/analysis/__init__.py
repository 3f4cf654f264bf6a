# Copyright (c) OpenMMLab. All rights reserved.
from .attention_maps import (AttentionMaps, attention_maps, build_backbone,
                             check_points, effective_keys, image_to_tensor,
                             list_layers, read_image)
from .complexity import count_macs, count_macs_of
from .memory import peak_activation_memory
from .receptive_field import (MASS_FRACTIONS, centre_gradients,
                              effective_receptive_field, log_heat_map,
                              mass_area, mass_share, summary_line)

__all__ = [
    'AttentionMaps', 'attention_maps', 'build_backbone', 'check_points',
    'effective_keys', 'image_to_tensor', 'list_layers', 'read_image',
    'count_macs', 'count_macs_of', 'peak_activation_memory', 'MASS_FRACTIONS',
    'centre_gradients', 'effective_receptive_field', 'log_heat_map',
    'mass_area', 'mass_share', 'summary_line'
]
