# Copyright (c) OpenMMLab. All rights reserved.
"""Key map between the official FLatten-CSwin checkpoints and
:class:`FLattenCSWin`.

Official (classification) key     ->  plugin key
``stage1_conv_embed.0``               ``stem.conv``
``stage1_conv_embed.2``               ``stem.norm``
``merge{i}.{conv,norm}``              ``stages.{i}.downsample.{conv,norm}``
``stage{s}.{j}.*``                    ``stages.{s-1}.blocks.{j}.*``
``norm``                              ``norm3`` (the last output norm)
``head``                              dropped, or ``head.fc`` (mmpretrain)

Inside a block the names are the official ones (``norm1``, ``qkv``,
``attns.{b}.{scale,positional_encoding,get_v,dwc}``, ``proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``), and no tensor changes shape.
"""
from .official import KeyMapConverter

FLATTEN_CSWIN_CONVERTER = KeyMapConverter(
    family='FLatten-CSwin',
    # Only FLatten's linear-attention blocks have a positional encoding; it
    # tells these checkpoints from the original CSWin's, whose stages 1-2
    # have two stripe branches and would not load.
    official_pattern=r'^stage[12]\.\d+\.attns\.0\.positional_encoding$',
    # Every block of the plugin's model has a LePE conv.
    own_pattern=r'^stages\.\d+\.blocks\.\d+\.attns\.\d+\.get_v\.',
    rules=[
        (r'^stage1_conv_embed\.0\.', 'stem.conv.'),
        (r'^stage1_conv_embed\.2\.', 'stem.norm.'),
        (r'^merge([1-3])\.', r'stages.\1.downsample.'),
        *[(rf'^stage{s}\.(\d+)\.', rf'stages.{s - 1}.blocks.\1.')
          for s in range(1, 5)],
        (r'^norm\.', 'norm3.'),
    ],
    head_rules=[(r'^head\.', 'head.fc.')],
    convert_command='tools/model_converters/flatten2mmdet.py --family cswin',
)
