# Copyright (c) OpenMMLab. All rights reserved.
"""Draw the effective receptive field of each stage's centre output.

    python tools/analysis_tools/effective_receptive_field.py \\
        L2ViT:tiny FLattenSwin:tiny mmdet.SwinTransformer:tiny \\
        --img demo_data/coco/val --max-images 4 --shape 512 --out erf.png

For each backbone (a config file, or a registered ``TYPE[:ARCH]``) and
stage, the gradient of the centre pixel of the stage's output,
summed over channels, with respect to the input image is averaged over the
images and drawn as a log-scaled heat map (Luo et al., 2016). One line per
backbone gives the share of the image that holds 50% and 90% of the
gradient mass. ``mmdet.SwinTransformer:tiny`` is there for comparison.
``--checkpoint`` takes one file per backbone, ``none`` for random weights;
random weights are said on the picture.
"""
import argparse
import math
import os
import os.path as osp
import sys
import time

# Before torch loads OpenMP: threads that spin while they wait stall each
# other on a shared CPU (several times slower); a user's setting wins.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import cv2  # noqa: E402
import matplotlib  # noqa: E402
import torch  # noqa: E402

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__)))))

from mmplugin_l2vit import analysis  # noqa: E402

PANEL_INCHES = 2.2
LOG_FLOOR = 1e-4


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument(
        'backbones',
        nargs='+',
        help='one or more of: ' + analysis.BACKBONE_HELP)
    parser.add_argument(
        '--checkpoint',
        nargs='+',
        help="one checkpoint per backbone, 'none' for random weights")
    parser.add_argument(
        '--img',
        nargs='+',
        required=True,
        help='image files, or directories of them')
    parser.add_argument(
        '--max-images',
        type=int,
        default=2,
        help='average over at most this many images (default: 2, under a '
        'minute at 512x512 for a Tiny backbone on two CPU cores)')
    analysis.add_shape_argument(
        parser, 'resize every image to H (square) or H W; default: the '
        'size of the first image')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of random weights')
    args = parser.parse_args(argv)
    args.shape = analysis.parse_shape(parser, args.shape)
    if args.checkpoint is None:
        args.checkpoint = ['none'] * len(args.backbones)
    if len(args.checkpoint) != len(args.backbones):
        parser.error(f'--checkpoint needs one entry per backbone '
                     f"({len(args.backbones)}), 'none' for random weights")
    return parser, args


def image_files(paths, max_images):
    """Files of ``paths``, directories expanded to the files in them that
    OpenCV can read, sorted; at most ``max_images``."""
    files = []
    for path in paths:
        if osp.isdir(path):
            files += [
                osp.join(path, name) for name in sorted(os.listdir(path))
                if cv2.haveImageReader(osp.join(path, name))
            ]
        else:
            files.append(path)
    return files[:max_images]


def draw(names, fields, header, random_weights, out):
    rows, columns = len(fields), len(fields[0])
    fig, axes = plt.subplots(
        rows,
        columns,
        squeeze=False,
        figsize=(columns * PANEL_INCHES + 0.8, rows * PANEL_INCHES + 0.9))
    for name, maps, axes_row in zip(names, fields, axes):
        for stage, (gradient, ax) in enumerate(zip(maps, axes_row)):
            image = ax.imshow(
                analysis.log_heat_map(gradient, LOG_FLOOR).numpy(),
                cmap='inferno',
                vmin=math.log10(LOG_FLOOR),
                vmax=0)
            areas = ' / '.join(
                f'{100 * analysis.mass_share(gradient, fraction):.2g}%'
                for fraction in analysis.MASS_FRACTIONS)
            ax.set_title(f'stage {stage}: {areas}', fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes_row[0].set_ylabel(name, fontsize=8)
    fig.colorbar(
        image, ax=axes, shrink=0.6, label='log10(gradient / max)')
    fig.suptitle(header, fontsize=8)
    if random_weights:
        fig.text(0.5, 0.01, 'RANDOM WEIGHTS (no checkpoint) for: ' +
                 ', '.join(random_weights), ha='center', va='bottom',
                 color='red', fontsize=8)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser, args = parse_args(argv)
    files = image_files(args.img, args.max_images)
    try:
        images = [analysis.read_image(path) for path in files]
    except ValueError as error:
        parser.error(str(error))
    if not images:
        parser.error(f'no images found in {args.img}')
    shape = args.shape or images[0].shape[:2]
    fields, random_weights = [], []
    for spec, checkpoint in zip(args.backbones, args.checkpoint):
        checkpoint = None if checkpoint == 'none' else checkpoint
        if checkpoint is None:
            random_weights.append(spec)
        start = time.perf_counter()
        torch.manual_seed(args.seed)
        try:
            backbone = analysis.build_backbone(
                spec, checkpoint, all_outputs=True)
            normalisation = analysis.image_normalisation(spec)
        except (OSError, KeyError, ValueError) as error:
            parser.error(f'cannot build {spec!r}: {error}')
        tensors = (
            analysis.image_to_tensor(image, shape, **normalisation)
            for image in images)
        fields.append(analysis.effective_receptive_field(backbone, tensors))
        print(analysis.summary_line(spec, fields[-1]) +
              f' ({time.perf_counter() - start:.1f}s)')
    fractions = ' / '.join(f'{f:.0%}' for f in analysis.MASS_FRACTIONS)
    header = (f'effective receptive field of each stage\'s centre output, '
              f'{len(images)} image(s) at {analysis.shape_text(shape)}; '
              f'titles: share of the image holding {fractions} of the '
              'gradient mass')
    draw(args.backbones, fields, header, random_weights, args.out)
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
