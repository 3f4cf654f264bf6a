# Copyright (c) OpenMMLab. All rights reserved.
"""Convert an official L²ViT checkpoint to a plain backbone state dict.

    python tools/model_converters/l2vit2mmdet.py SRC DST [--ema]

The result loads with ``init_cfg=dict(type='Pretrained', checkpoint=DST)``
on an ``L2ViT`` backbone (the official file loads there directly too).
``--mmpretrain`` writes ``backbone.*`` plus the classifier as ``head.fc.*``
for an mmpretrain ``ImageClassifier`` with a ``LinearClsHead``.
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

import mmplugin_l2vit  # noqa: E402,F401  (allow-lists checkpoint classes)
from mmplugin_l2vit.models.converters import (L2VIT_CONVERTER,  # noqa: E402
                                              CheckpointFormatError,
                                              unwrap_checkpoint)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert official L²ViT weights to mmplugin_l2vit keys')
    parser.add_argument('src', help='official checkpoint (.pth)')
    parser.add_argument('dst', help='where to write the converted weights')
    parser.add_argument(
        '--ema', action='store_true',
        help='convert model_ema instead of model')
    parser.add_argument(
        '--mmpretrain', action='store_true',
        help='write a whole mmpretrain ImageClassifier state dict '
        '(backbone.* and head.fc.*)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.abspath(args.src) == osp.abspath(args.dst):
        sys.exit('refusing to overwrite the source checkpoint')
    checkpoint = torch.load(args.src, map_location='cpu')
    try:
        state_dict = unwrap_checkpoint(checkpoint, use_ema=args.ema)
        weights = L2VIT_CONVERTER.convert(
            state_dict, keep_head=args.mmpretrain)
    except CheckpointFormatError as error:
        sys.exit(f'{args.src}: {error}')
    if args.mmpretrain:
        weights = {(k if k.startswith('head.') else 'backbone.' + k): v
                   for k, v in weights.items()}
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    # Write then rename, so an interrupted run never leaves a partial DST.
    tmp = f'{args.dst}.tmp{os.getpid()}'
    torch.save(weights, tmp)
    os.replace(tmp, args.dst)
    print(f'wrote {len(weights)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
