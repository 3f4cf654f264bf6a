# Copyright (c) OpenMMLab. All rights reserved.
"""What every analysis tool shares: naming a backbone, building it, and
reading and preparing an image.

A backbone is named the same way in every tool:

- a config file: its ``model.backbone`` is built (its ``init_cfg`` dropped,
  so nothing is downloaded) and its data preprocessor gives the image
  normalisation;
- ``TYPE[:ARCH]``: a registered type with an optional arch, e.g.
  ``L2ViT:tiny``, ``FLattenSwin:small``, ``mmdet.SwinTransformer:tiny``
  (mmdet's backbones take widths and depths, not an arch: the few archs in
  :data:`MMDET_ARCHS` are translated);
- a short name of :data:`SHORT_NAMES`, which stands for one ``TYPE:ARCH``.

Input sizes are given as ``--shape H [W]`` (see :func:`add_shape_argument`).
"""
import argparse
import copy
import logging
import os.path as osp
from typing import List, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from ..models.layers.tokens import HW
from ..registry import MODELS

# ImageNet statistics on 0-255 RGB, used when a config names none.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# mmdet's reference backbones by arch: the baselines of the benchmark and
# of the pictures.
MMDET_ARCHS = {
    'mmdet.SwinTransformer': {
        'tiny':
        dict(
            embed_dims=96,
            depths=[2, 2, 6, 2],
            num_heads=[3, 6, 12, 24],
            window_size=7)
    },
    'mmdet.PyramidVisionTransformer': {
        'tiny': dict(num_layers=[2, 2, 2, 2])
    },
    'mmdet.PyramidVisionTransformerV2': {
        'b0': dict(embed_dims=32, num_layers=[2, 2, 2, 2])
    },
}

SHORT_NAMES = {
    'l2vit-t': 'L2ViT:tiny',
    'l2vit-s': 'L2ViT:small',
    'l2vit-b': 'L2ViT:base',
    'flatten-pvt-t': 'FLattenPVT:tiny',
    'flatten-pvtv2-b0': 'FLattenPVTv2:b0',
    'flatten-swin-t': 'FLattenSwin:tiny',
    'flatten-cswin-t': 'FLattenCSWin:tiny',
    'swin-t': 'mmdet.SwinTransformer:tiny',
    'pvt-t': 'mmdet.PyramidVisionTransformer:tiny',
    'pvtv2-b0': 'mmdet.PyramidVisionTransformerV2:b0',
}

BACKBONE_HELP = ('a config file (its model.backbone), a registered '
                 'TYPE[:ARCH] such as L2ViT:tiny or mmdet.SwinTransformer, '
                 f'or a short name: {", ".join(SHORT_NAMES)}')


def is_config_file(spec: str) -> bool:
    """Whether ``spec`` names a config file rather than a type."""
    return spec.endswith('.py') or osp.isfile(spec)


def load_model_config(spec: str) -> Optional[Config]:
    """The whole config of a config-file ``spec``, with its default scope
    set (None for a type).

    Raises:
        FileNotFoundError: ``spec`` ends with ``.py`` but does not exist.
    """
    if not is_config_file(spec):
        return None
    if not osp.isfile(spec):
        raise FileNotFoundError(f'config file {spec!r} does not exist')
    cfg = Config.fromfile(spec)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    return cfg


def _is_registered(type_name: str) -> bool:
    try:
        return MODELS.get(type_name) is not None
    except RuntimeError:  # what mmengine raises for some unknown names
        return False


def backbone_config(spec: str) -> dict:
    """The config dict that builds the backbone named by ``spec`` (see the
    module's docstring).

    Raises:
        FileNotFoundError: A missing config file.
        ValueError: A config without ``model.backbone``, a type that no
            registry holds, or an arch of :data:`MMDET_ARCHS`'s types that
            it lacks.
    """
    spec = SHORT_NAMES.get(spec, spec)
    cfg = load_model_config(spec)
    if cfg is not None:
        if 'backbone' not in cfg.get('model', {}):
            raise ValueError(f'config {spec!r} has no model.backbone')
        backbone = copy.deepcopy(cfg.to_dict()['model']['backbone'])
        # The architecture is what is analysed: no weights are downloaded.
        backbone.pop('init_cfg', None)
        return backbone
    type_name, _, arch = spec.partition(':')
    if not _is_registered(type_name):
        raise ValueError(f'{type_name!r} is not a registered backbone type; '
                         f'name {BACKBONE_HELP}')
    if type_name in MMDET_ARCHS:
        archs = MMDET_ARCHS[type_name]
        if arch and arch not in archs:
            raise ValueError(f'{type_name} archs known here: '
                             f'{", ".join(archs)}; got {arch!r}')
        return dict(type=type_name, **archs.get(arch, {}))
    return dict(type=type_name, arch=arch) if arch else dict(type=type_name)


def image_normalisation(spec: str) -> dict:
    """``dict(mean=..., std=..., to_rgb=...)`` of the images the backbone
    named by ``spec`` expects: a config's data preprocessor, else the
    ImageNet statistics on RGB."""
    normalisation = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD, to_rgb=True)
    cfg = load_model_config(SHORT_NAMES.get(spec, spec))
    if cfg is None:
        return normalisation
    preprocessor = cfg.model.get('data_preprocessor') or cfg.get(
        'data_preprocessor') or {}
    for key in ('mean', 'std'):
        normalisation[key] = preprocessor.get(key, normalisation[key])
    normalisation['to_rgb'] = preprocessor.get(
        'bgr_to_rgb', preprocessor.get('to_rgb', True))
    return normalisation


def build_backbone(spec: str,
                   checkpoint: Optional[str] = None,
                   all_outputs: bool = False,
                   **overrides) -> nn.Module:
    """Build the backbone named by ``spec``, in eval mode.

    Args:
        spec (str): See the module's docstring.
        checkpoint (str, optional): Backbone or full-model checkpoint (keys
            with a ``backbone.`` prefix are taken); without one the weights
            are the backbone's random initialisation.
        all_outputs (bool): Return the outputs of all four stages.
        **overrides: Further constructor arguments, e.g. ``with_cp=True``.
    """
    cfg = dict(backbone_config(spec), **overrides)
    if not is_config_file(SHORT_NAMES.get(spec, spec)):
        # A bare type is ours or scope-prefixed: resolve it from our scope
        # whatever default scope an earlier Runner or config left behind.
        cfg.setdefault('_scope_', MODELS.scope)
    if all_outputs:
        cfg['out_indices'] = (0, 1, 2, 3)
    backbone = MODELS.build(cfg)
    if checkpoint is None:
        # init_weights logs every parameter's initialiser at INFO level.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        try:
            backbone.init_weights()
        finally:
            logger.setLevel(level)
    else:
        load_checkpoint(
            backbone,
            checkpoint,
            map_location='cpu',
            revise_keys=[(r'^module\.', ''), (r'^backbone\.', '')])
    # Some backbones' ``train`` does not return the module: no chaining.
    backbone.eval()
    return backbone


def read_image(path: str) -> np.ndarray:
    """Read any image OpenCV reads as an ``(H, W, 3)`` uint8 BGR array."""
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR) \
        if osp.isfile(path) else None
    if image is None:
        raise ValueError(f'cannot read {path!r} as an image (OpenCV reads '
                         'PNG, JPEG, BMP, TIFF, WebP and more)')
    return image


def image_to_tensor(image: np.ndarray,
                    shape: Optional[HW] = None,
                    mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD,
                    to_rgb: bool = True) -> torch.Tensor:
    """A BGR uint8 image -> ``(1, 3, H, W)`` normalised float tensor,
    resized to ``shape = (H, W)`` if given."""
    if shape is not None:
        image = cv2.resize(image, shape[::-1], interpolation=cv2.INTER_LINEAR)
    if to_rgb:
        image = image[..., ::-1]
    x = torch.from_numpy(image.astype(np.float32))
    x = (x - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(2, 0, 1)[None].contiguous()


def _shape_values(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'--shape takes H or H W in pixels, got {text!r}')
    if value < 1:
        raise argparse.ArgumentTypeError(
            f'--shape takes positive sizes, got {value}')
    return value


def add_shape_argument(parser: argparse.ArgumentParser,
                       help: str,
                       repeatable: bool = False) -> None:
    """Add ``--shape H [W]`` to ``parser``, default None; with
    ``repeatable`` it may be given several times (``--shape 224 --shape
    800 1344``). Read the value with :func:`parse_shape` or
    :func:`parse_shapes`."""
    parser.add_argument(
        '--shape',
        type=_shape_values,
        nargs='+',
        action='append' if repeatable else 'store',
        metavar=('H', 'W'),
        help=help)


def _as_hw(parser: argparse.ArgumentParser, values: List[int]) -> HW:
    if len(values) not in (1, 2):
        parser.error(f'--shape takes H (square) or H W, got {values}')
    return tuple((values * 2)[:2])


def parse_shape(parser: argparse.ArgumentParser,
                values: Optional[List[int]]) -> Optional[HW]:
    """``(H, W)`` of one ``--shape`` (None if it was not given); anything
    but one or two sizes is refused through ``parser``."""
    return None if values is None else _as_hw(parser, values)


def parse_shapes(parser: argparse.ArgumentParser,
                 values: List[List[int]]) -> List[HW]:
    """``[(H, W)]`` of a repeatable ``--shape``."""
    return [_as_hw(parser, v) for v in values]


def shape_text(hw: Sequence[int]) -> str:
    """``'HxW'``."""
    return 'x'.join(str(side) for side in hw)
