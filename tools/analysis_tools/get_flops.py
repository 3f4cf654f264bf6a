# Copyright (c) OpenMMLab. All rights reserved.
"""Count the parameters and MACs of a backbone (and neck), attention
matmuls included.

    python tools/analysis_tools/get_flops.py configs/mask_rcnn_l2vit.py \\
        --shape 800 1333
    python tools/analysis_tools/get_flops.py --backbone L2ViT --arch tiny \\
        --shape 224

mmcv-style module counters miss the matmuls of linear attention; this
counts at the operator level (see ``mmplugin_l2vit.analysis``).
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

import mmplugin_l2vit  # noqa: E402,F401
from mmplugin_l2vit.analysis import count_macs  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', nargs='?', help='model config file')
    parser.add_argument(
        '--backbone', help="a registered backbone type, e.g. 'L2ViT'")
    parser.add_argument('--arch', default='tiny', help='with --backbone')
    parser.add_argument(
        '--shape', type=int, nargs='+', default=[224],
        help='input size: H (square) or H W')
    parser.add_argument(
        '--no-neck', action='store_true', help='count the backbone only')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.backbone is None):
        parser.error('give either a config or --backbone')
    if len(args.shape) not in (1, 2):
        parser.error('--shape takes H or H W')
    return args


def build_parts(args):
    """Return ``[(name, module)]`` to count, fed one after the other."""
    from mmplugin_l2vit.registry import MODELS
    if args.backbone is not None:
        return [('backbone', MODELS.build(
            dict(type=f'mmplugin_l2vit.{args.backbone}', arch=args.arch)))]
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cfg.model
    # The architecture is counted, so no checkpoint is downloaded.
    model_cfg.backbone.pop('init_cfg', None)
    parts = [('backbone', MODELS.build(model_cfg.backbone))]
    if 'neck' in model_cfg and not args.no_neck:
        parts.append(('neck', MODELS.build(model_cfg.neck)))
    return parts


def main(argv=None):
    args = parse_args(argv)
    height, width = (args.shape * 2)[:2]
    x = torch.randn(1, 3, height, width)
    rows = []
    for name, module in build_parts(args):
        module.eval()
        macs = count_macs(module, x)
        params = sum(p.numel() for p in module.parameters())
        rows.append((name, type(module).__name__, params, macs['total']))
        with torch.no_grad():
            x = module(x)
    print(f'input shape: 1x3x{height}x{width}')
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
