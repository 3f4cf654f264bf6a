# Copyright (c) OpenMMLab. All rights reserved.
"""Convert an official L²ViT checkpoint to a plain backbone state dict.

    python tools/model_converters/l2vit2mmdet.py SRC DST [--ema]

SRC is a file or a URL (downloaded once into torch's hub cache).
The result loads with ``init_cfg=dict(type='Pretrained', checkpoint=DST)``
on an ``L2ViT`` backbone (the official file loads there directly too).
A file that lacks part of the network (a stage, a block, a tensor of one)
is refused with the list of what is missing, and nothing is written.
``--mmpretrain`` writes ``backbone.*`` plus the classifier as ``head.fc.*``
for an mmpretrain ``ImageClassifier`` with a ``LinearClsHead``.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

# isort: off
import mmplugin_l2vit  # noqa: E402,F401  (allow-lists checkpoint classes)
from mmplugin_l2vit import L2ViT  # noqa: E402
from mmplugin_l2vit.models.converters import \
    convert_checkpoint_file  # noqa: E402
# isort: on


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert official L²ViT weights to mmplugin_l2vit keys')
    parser.add_argument('src', help='official checkpoint (.pth) or its URL')
    parser.add_argument('dst', help='where to write the converted weights')
    parser.add_argument(
        '--ema',
        action='store_true',
        help='convert model_ema instead of model')
    parser.add_argument(
        '--mmpretrain',
        action='store_true',
        help='write a whole mmpretrain ImageClassifier state dict '
        '(backbone.* and head.fc.*)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        count = convert_checkpoint_file(args.src, args.dst, L2ViT, args.ema,
                                        args.mmpretrain)
    except ValueError as error:  # CheckpointFormatError included
        sys.exit(f'{args.src}: {error}')
    print(f'wrote {count} tensors to {args.dst}')


if __name__ == '__main__':
    main()
