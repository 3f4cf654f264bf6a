# Copyright (c) OpenMMLab. All rights reserved.
"""Generate the synthetic shapes datasets (COCO and ADE20K layouts).

    python tools/misc/generate_demo_data.py [OUT_DIR] [--seed 0]
        [--num-train 1000] [--num-val 100] [--size 128] [--overwrite]

Writes ``OUT_DIR/coco`` (instance segmentation) and ``OUT_DIR/ade``
(semantic segmentation) from the same scenes, and ``OUT_DIR/imagenet``
(classification, one shape per image, in the ImageNet layout); see
:mod:`mmplugin_l2vit.datasets.demo_data`. The output depends only on the
arguments. A non-empty OUT_DIR is refused unless ``--overwrite``, which
empties it first.
"""
import argparse
import os.path as osp
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

from mmplugin_l2vit import datasets  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'out_dir',
        nargs='?',
        default=osp.join(REPO_ROOT, 'demo_data'),
        help='output directory (default: demo_data/ in the repository)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--num-train',
        type=int,
        default=datasets.DEFAULT_NUM_TRAIN,
        help='training images')
    parser.add_argument(
        '--num-val',
        type=int,
        default=datasets.DEFAULT_NUM_VAL,
        help='validation images')
    parser.add_argument(
        '--size',
        type=int,
        default=datasets.DEFAULT_SIZE,
        help='side of the square images')
    parser.add_argument(
        '--overwrite',
        action='store_true',
        help='empty a non-empty OUT_DIR first (otherwise it is refused)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        roots = datasets.generate_demo_data(
            args.out_dir,
            seed=args.seed,
            num_train=args.num_train,
            num_val=args.num_val,
            size=args.size,
            overwrite=args.overwrite)
    except (ValueError, OSError) as error:
        sys.exit(f'error: {error}')
    print(f'{args.num_train} train + {args.num_val} val scenes of '
          f'{args.size}x{args.size} in {time.perf_counter() - start:.1f}s:')
    for name, root in roots.items():
        print(f'  {name}: {root}')


if __name__ == '__main__':
    main()
