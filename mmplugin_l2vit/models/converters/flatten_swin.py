# Copyright (c) OpenMMLab. All rights reserved.
"""Key map between the official FLatten-Swin checkpoints and
:class:`FLattenSwin`.

Official (classification) key          ->  plugin key
``patch_embed.{proj,norm}``                ``stem.{proj,norm}``
``layers.{i}.blocks.{j}.*``                ``stages.{i}.blocks.{j}.*``
``layers.{i}.downsample.*`` (i < 3)        ``stages.{i+1}.downsample.*``
``layers.{i}.blocks.{j}.attn_mask``,       dropped (rebuilt at run time
``~.attn.relative_position_index``         for the live map size)
``norm``                                   ``norm3`` (the last output norm)
``head``                                   dropped, or ``head.fc``
                                           (mmpretrain)

Inside a block the names are the official ones (``norm1``, ``attn.qkv``,
``attn.proj``, ``attn.{scale,positional_encoding,dwc}`` or
``attn.relative_position_bias_table``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``), and no tensor changes shape.
"""
from .official import KeyMapConverter

FLATTEN_SWIN_CONVERTER = KeyMapConverter(
    family='FLatten-Swin',
    # Only FLatten's linear-attention blocks have a positional encoding; it
    # tells these checkpoints from the original Swin's, which would load
    # without error into the softmax stages alone.
    official_pattern=r'^layers\.\d+\.blocks\.\d+\.attn\.positional_encoding$',
    # The softmax stages' bias tables sit directly in ``attn`` (mmdet's and
    # mmpretrain's Swin nest them in ``attn.w_msa``).
    own_pattern=(r'^stages\.\d+\.blocks\.\d+\.attn\.'
                 r'relative_position_bias_table$'),
    rules=[
        (r'^patch_embed\.(proj|norm)\.', r'stem.\1.'),
        (r'^layers\.\d+\.blocks\.\d+\.'
         r'(attn_mask|attn\.relative_position_index)$', None),
        (r'^layers\.(\d+)\.blocks\.', r'stages.\1.blocks.'),
        *[(rf'^layers\.{i}\.downsample\.', f'stages.{i + 1}.downsample.')
          for i in range(3)],
        (r'^norm\.', 'norm3.'),
    ],
    head_rules=[(r'^head\.', 'head.fc.')],
    convert_command='tools/model_converters/flatten2mmdet.py --family swin',
)
