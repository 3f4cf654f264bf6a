# Copyright (c) OpenMMLab. All rights reserved.
"""Key map between the official L²ViT checkpoints and :class:`L2ViT`.

Official (classification) key -> plugin key:

- ``downsample_layers.0.proj.proj.{0,1,3,4}`` -> ``stem.{conv1,bn1,conv2,
  bn2}``; ``downsample_layers.0.norm`` -> ``stem.norm``
- ``downsample_layers.{i}.{norm,proj}`` -> ``stages.{i}.downsample.{norm,
  conv}``
- in ``stages.{i}.{j}`` -> ``stages.{i}.blocks.{j}``: ``cpe.0.proj`` ->
  ``cpe_attn.conv``, ``cpe.1.proj`` -> ``cpe_ffn.conv``, ``norm1`` ->
  ``norm_attn``, ``norm3`` -> ``norm_lcm``, ``local_mp`` -> ``lcm``,
  ``norm2`` -> ``norm_ffn``, ``mlp`` -> ``ffn``, ``attn`` unchanged
- ``norm`` -> ``norm3`` (the last output norm)
- ``head`` -> dropped, or ``head.fc`` (an mmpretrain ``LinearClsHead``)
"""
from .official import KeyMapConverter

L2VIT_CONVERTER = KeyMapConverter(
    family='L2ViT',
    official_pattern=r'^(downsample_layers\.|stages\.\d+\.\d+\.)',
    # Keys only an L2ViT has (a Swin also has stages.i.blocks.j.norm1).
    own_pattern=(r'^(stem\.|stages\.\d+\.blocks\.\d+\.'
                 r'(cpe_attn|cpe_ffn|norm_attn|norm_lcm|lcm|norm_ffn)\.)'),
    rules=[
        (r'^downsample_layers\.0\.proj\.proj\.0\.', 'stem.conv1.'),
        (r'^downsample_layers\.0\.proj\.proj\.1\.', 'stem.bn1.'),
        (r'^downsample_layers\.0\.proj\.proj\.3\.', 'stem.conv2.'),
        (r'^downsample_layers\.0\.proj\.proj\.4\.', 'stem.bn2.'),
        (r'^downsample_layers\.0\.norm\.', 'stem.norm.'),
        (r'^downsample_layers\.([1-3])\.norm\.',
         r'stages.\1.downsample.norm.'),
        (r'^downsample_layers\.([1-3])\.proj\.',
         r'stages.\1.downsample.conv.'),
        (r'^stages\.(\d+)\.(\d+)\.cpe\.0\.proj\.',
         r'stages.\1.blocks.\2.cpe_attn.conv.'),
        (r'^stages\.(\d+)\.(\d+)\.cpe\.1\.proj\.',
         r'stages.\1.blocks.\2.cpe_ffn.conv.'),
        (r'^stages\.(\d+)\.(\d+)\.norm1\.', r'stages.\1.blocks.\2.norm_attn.'),
        (r'^stages\.(\d+)\.(\d+)\.attn\.', r'stages.\1.blocks.\2.attn.'),
        (r'^stages\.(\d+)\.(\d+)\.norm3\.', r'stages.\1.blocks.\2.norm_lcm.'),
        (r'^stages\.(\d+)\.(\d+)\.local_mp\.', r'stages.\1.blocks.\2.lcm.'),
        (r'^stages\.(\d+)\.(\d+)\.norm2\.', r'stages.\1.blocks.\2.norm_ffn.'),
        (r'^stages\.(\d+)\.(\d+)\.mlp\.', r'stages.\1.blocks.\2.ffn.'),
        (r'^norm\.', 'norm3.'),
    ],
    head_rules=[(r'^head\.', 'head.fc.')],
    convert_command='tools/model_converters/l2vit2mmdet.py',
)
