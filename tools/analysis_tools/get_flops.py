# Copyright (c) OpenMMLab. All rights reserved.
"""Count the parameters and MACs of a backbone, attention matmuls included.

    python tools/analysis_tools/get_flops.py configs/mask_rcnn_l2vit.py \\
        --shape 800 1333
    python tools/analysis_tools/get_flops.py L2ViT:tiny --shape 224

The backbone is a config file (its ``model.backbone``, and its
``model.neck`` unless ``--no-neck``: both are counted) or a registered
``TYPE[:ARCH]``.
mmcv-style module counters miss the matmuls of linear attention; this
counts at the operator level (see ``mmplugin_l2vit.analysis``).
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from mmplugin_l2vit import analysis  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('backbone', help=analysis.BACKBONE_HELP)
    analysis.add_shape_argument(
        parser, 'input size: H (square) or H W (default: 224)')
    parser.add_argument(
        '--no-neck', action='store_true', help="count a config's backbone "
        'only')
    args = parser.parse_args(argv)
    args.shape = analysis.parse_shape(parser, args.shape) or (224, 224)
    return parser, args


def build_parts(spec, with_neck):
    """Return ``[(name, module)]`` to count, fed one after the other, in
    eval mode."""
    parts = [('backbone', analysis.build_backbone(spec))]
    cfg = analysis.load_model_config(spec)
    if with_neck and cfg is not None and 'neck' in cfg.model:
        from mmplugin_l2vit.registry import MODELS
        parts.append(('neck', MODELS.build(cfg.model.neck).eval()))
    return parts


def main(argv=None):
    parser, args = parse_args(argv)
    height, width = args.shape
    x = torch.randn(1, 3, height, width)
    try:
        parts = build_parts(args.backbone, not args.no_neck)
    except (OSError, KeyError, ValueError) as error:
        parser.error(f'cannot build {args.backbone!r}: {error}')
    rows = []
    for name, module in parts:
        macs = analysis.count_macs(module, x)
        params = sum(p.numel() for p in module.parameters())
        rows.append((name, type(module).__name__, params, macs['total']))
        with torch.no_grad():
            x = module(x)
    print(f'input shape: 1x3x{analysis.shape_text(args.shape)}')
    print(f'{"part":<10}{"type":<22}{"params":>12}{"GMACs":>10}')
    for name, type_name, params, macs in rows:
        print(f'{name:<10}{type_name:<22}{params / 1e6:>11.2f}M'
              f'{macs / 1e9:>10.3f}')
    if len(rows) > 1:
        total_params = sum(r[2] for r in rows)
        total_macs = sum(r[3] for r in rows)
        print(f'{"total":<32}{total_params / 1e6:>11.2f}M'
              f'{total_macs / 1e9:>10.3f}')


if __name__ == '__main__':
    main()
