# Copyright (c) OpenMMLab. All rights reserved.
"""Draw the attention weights of query positions over an image, per head.

    python tools/analysis_tools/visualize_attention.py L2ViT:tiny \\
        --img demo.jpg --layer 2.1 --query 256,256 --shape 512 \\
        --out attention.png
    python tools/analysis_tools/visualize_attention.py CONFIG \\
        --checkpoint CKPT --img demo.jpg --layer 0.1 --query 100,80 \\
        --compare --out compare.png

The backbone is a config file (its ``model.backbone``) or a registered
``TYPE[:ARCH]`` (``FLattenSwin:small``). ``--shape H [W]`` resizes the
image before the backbone. ``--layer STAGE.BLOCK``
counts from 0; a wrong one is refused with the list of valid layers and
their kinds. ``--query X,Y`` is a pixel of the image as read (repeatable).
Each panel shows one head's row over all keys (window softmax, ReLU linear
or focused linear attention), their mean, and the convolution branch beside
the attention (LCM, DWC, LePE) separately. ``--compare`` shows, for a
linear block, the mean row of softmax, plain ReLU linear and the block's own
enhanced (L²ViT, with the LCM) or focused (FLatten) attention computed from
the same queries and keys. Without ``--checkpoint`` the weights are random,
and the picture says so.
"""
import argparse
import os
import os.path as osp
import sys

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

PANEL_INCHES = 2.4
MAX_COLUMNS = 6


def query_point(text):
    try:
        x, y = (int(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'a query is X,Y in pixels, got {text!r}')
    return x, y


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='\n'.join(__doc__.splitlines()[1:]))
    parser.add_argument('backbone', help=analysis.BACKBONE_HELP)
    parser.add_argument('--checkpoint', help='backbone or model checkpoint')
    parser.add_argument('--img', required=True, help='image file')
    parser.add_argument(
        '--layer', required=True, help='STAGE.BLOCK, 0-based, e.g. 2.1')
    parser.add_argument(
        '--query',
        required=True,
        action='append',
        type=query_point,
        help='X,Y pixel of the image (repeat for several queries)')
    analysis.add_shape_argument(
        parser, 'resize the image to H (square) or H W before the backbone')
    parser.add_argument(
        '--compare',
        action='store_true',
        help='softmax vs ReLU linear vs the block\'s own attention')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument(
        '--seed', type=int, default=0, help='seed of random weights')
    args = parser.parse_args(argv)
    args.shape = analysis.parse_shape(parser, args.shape)
    return parser, args


def panels_of(maps, index, compare):
    """``[(title, (H, W) map)]`` to draw for query ``index``."""
    if compare:
        panels = [(name, rows[index].mean(0))
                  for name, rows in maps.variants.items()]
    else:
        panels = [(f'head {h}', row) for h, row in enumerate(maps.rows[index])]
        panels.append(('mean of heads', maps.rows[index].mean(0)))
    titled = [(f'{name}\nsum {row.sum():.3f}, '
               f'{analysis.effective_keys(row.flatten()):.0f} eff. keys', row)
              for name, row in panels]
    if maps.local is not None and not compare:
        titled.append((f'{maps.local_name} (separate)\n'
                       f'{maps.local_share[index]:.0%} of the update',
                       maps.local[index]))
    return titled


def draw(image, points, maps, header, random_weights, compare, out):
    # Grey, so that all colour comes from the weights.
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    height, width = image.shape[:2]
    grid = [panels_of(maps, i, compare) for i in range(len(points))]
    columns = min(MAX_COLUMNS, max(len(p) for p in grid))
    rows_per_query = [-(-len(p) // columns) for p in grid]
    fig, axes = plt.subplots(
        sum(rows_per_query),
        columns,
        squeeze=False,
        figsize=(columns * PANEL_INCHES,
                 sum(rows_per_query) * PANEL_INCHES * height / width + 1.2))
    for ax in axes.flat:
        ax.axis('off')
    first_row = 0
    for (x, y), panels, num_rows in zip(points, grid, rows_per_query):
        for i, (title, heat) in enumerate(panels):
            ax = axes[first_row + i // columns, i % columns]
            heat = cv2.resize(heat.numpy(), (width, height),
                              interpolation=cv2.INTER_NEAREST)
            ax.imshow(grey, cmap='gray')
            ax.imshow(heat, cmap='jet', alpha=0.55, vmin=0,
                      vmax=max(heat.max(), 1e-12))
            ax.plot(x, y, marker='+', color='white', markersize=12, mew=2)
            ax.set_title(title, fontsize=7)
        first_row += num_rows
    fig.suptitle(header, fontsize=8)
    if random_weights:
        fig.text(0.5, 0.005, 'RANDOM WEIGHTS (no --checkpoint): the maps '
                 'show the untrained architecture, not learned attention',
                 ha='center', va='bottom', color='red', fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv=None):
    parser, args = parse_args(argv)
    try:
        image = analysis.read_image(args.img)
        analysis.check_points(args.query, image.shape[:2])
    except ValueError as error:
        parser.error(str(error))
    torch.manual_seed(args.seed)
    try:
        backbone = analysis.build_backbone(args.backbone, args.checkpoint)
        normalisation = analysis.image_normalisation(args.backbone)
    except (OSError, KeyError, ValueError) as error:
        parser.error(f'cannot build {args.backbone!r}: {error}')
    x = analysis.image_to_tensor(image, args.shape, **normalisation)
    in_height, in_width = x.shape[-2:]
    height, width = image.shape[:2]
    points = [(px * in_width // width, py * in_height // height)
              for px, py in args.query]
    try:
        maps = analysis.attention_maps(backbone, x, args.layer, points,
                                       args.compare)
    except ValueError as error:
        parser.error(str(error))

    weights = 'random weights (no --checkpoint)' if args.checkpoint is None \
        else args.checkpoint
    grid_h, grid_w = maps.grid
    header = (f'{args.backbone} layer {args.layer}: {maps.kind}, '
              f'{grid_h}x{grid_w} tokens at {in_height}x{in_width}')
    print(f'{header}; {weights}')
    for i, ((px, py), (row, col)) in enumerate(zip(args.query, maps.queries)):
        sums = ' '.join(f'{s:.3f}' for s in maps.rows[i].flatten(1).sum(-1))
        print(f'query ({px}, {py}) -> token ({row}, {col}): row sums per '
              f'head {sums}; max {maps.unattended[i].max():.2e} '
              f'{maps.unattended_reason}')
        if maps.local is not None:
            print(f'  {maps.local_name}: {maps.local_share[i]:.1%} of the '
                  'update at the query (drawn separately)')
        if maps.variants:
            spreads = {
                name: analysis.effective_keys(rows[i].mean(0).flatten())
                for name, rows in maps.variants.items()
            }
            listed = ', '.join(f'{name} {keys:.0f}'
                               for name, keys in spreads.items())
            print(f'  effective keys of the mean row: {listed} '
                  f'(of {grid_h * grid_w})')
    draw(image, args.query, maps, header, args.checkpoint is None,
         args.compare, args.out)
    print(f'saved {args.out}')


if __name__ == '__main__':
    main()
