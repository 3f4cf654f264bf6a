# Copyright (c) OpenMMLab. All rights reserved.
"""Convert an official FLatten checkpoint to a plain backbone state dict.

    python tools/model_converters/flatten2mmdet.py \\
        --family {pvt,pvt_v2,swin,cswin} SRC DST [--ema] [--mmpretrain]

SRC is a file or a URL (downloaded once into torch's hub cache).
The result loads with ``init_cfg=dict(type='Pretrained', checkpoint=DST)``
on the family's backbone (``FLattenPVT``, ``FLattenPVTv2``, ``FLattenSwin``,
``FLattenCSWin``); the official file loads there directly too. A checkpoint
of another family, or one that lacks part of the network (a stage, a block,
a tensor of one), is refused and nothing is written.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

import mmplugin_l2vit  # noqa: E402  (also allow-lists checkpoint classes)
from mmplugin_l2vit.models import converters  # noqa: E402

FAMILIES = dict(
    pvt=mmplugin_l2vit.FLattenPVT,
    pvt_v2=mmplugin_l2vit.FLattenPVTv2,
    swin=mmplugin_l2vit.FLattenSwin,
    cswin=mmplugin_l2vit.FLattenCSWin)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert official FLatten weights to mmplugin_l2vit keys')
    parser.add_argument('--family', required=True, choices=sorted(FAMILIES))
    parser.add_argument('src', help='official checkpoint (.pth) or its URL')
    parser.add_argument('dst', help='where to write the converted weights')
    parser.add_argument(
        '--ema', action='store_true',
        help='convert the EMA weights (state_dict_ema) instead of model')
    parser.add_argument(
        '--mmpretrain', action='store_true',
        help='write a whole mmpretrain ImageClassifier state dict '
        '(backbone.* and head.fc.*)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        count = converters.convert_checkpoint_file(
            args.src, args.dst, FAMILIES[args.family], args.ema,
            args.mmpretrain)
    except ValueError as error:  # CheckpointFormatError included
        sys.exit(f'{args.src}: {error}')
    print(f'wrote {count} tensors to {args.dst}')


if __name__ == '__main__':
    main()
