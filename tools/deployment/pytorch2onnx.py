# Copyright (c) OpenMMLab. All rights reserved.
"""Export a backbone or a whole segmentor to ONNX and check it in
onnxruntime.

    python tools/deployment/pytorch2onnx.py L2ViT:tiny --shape 224 224 \\
        --dynamic --verify 200 264 --out work_dirs/l2vit-t.onnx
    python tools/deployment/pytorch2onnx.py \\
        configs/demo/upernet_l2vit-demo_shapes.py --checkpoint CKPT \\
        --shape 128 128 --dynamic --verify 96 160

A backbone is named ``TYPE[:ARCH]`` (``FLattenSwin:tiny``) or by a config
(its ``model.backbone``). A segmentor config (mmseg ``EncoderDecoder``)
exports the whole segmentor: a normalised ``(B, 3, H, W)`` batch in, seg
logits ``(B, num_classes, H, W)`` out (``--backbone-only`` for its
backbone). A backbone graph returns one ``(B, C_i, H_i, W_i)`` map per
output stage. Detectors need mmdeploy's rewrites of their heads: their
configs export the backbone.

The graph comes from PyTorch's TorchScript exporter (``dynamo=False``),
not the torch.export-based default: with dynamic sizes the latter traced
the backbones 25x slower and failed on Swin's shifted windows, whose
branches on the map size it cannot keep symbolic; the backbones are
written so that one trace holds for every size. ``--dynamic`` makes the
batch, height and width dynamic; without it the graph is fixed to
``--shape``.

If onnxruntime is installed, the graph is run at ``--shape`` and at every
``--verify`` size and compared with PyTorch; the tool fails if the largest
difference, relative to the largest output, exceeds ``--tolerance``.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0,
                osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmplugin_l2vit import deployment  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'model',
        help="a backbone 'TYPE[:ARCH]' (e.g. 'L2ViT:tiny') or a config file")
    parser.add_argument(
        '--checkpoint', help='weights (path or URL); default: random')
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=[224],
        help='input size traced: H (square) or H W')
    parser.add_argument(
        '--dynamic',
        action='store_true',
        help='dynamic batch size, height and width')
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help="export a segmentor config's backbone only")
    parser.add_argument(
        '--verify',
        type=int,
        nargs=2,
        action='append',
        default=[],
        metavar=('H', 'W'),
        help='also compare with PyTorch at this size (needs --dynamic); '
        'repeatable')
    parser.add_argument(
        '--tolerance',
        type=float,
        default=1e-4,
        help='largest difference allowed, relative to the largest output')
    parser.add_argument(
        '--out', help='output file (default: work_dirs/onnx/NAME.onnx)')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2):
        parser.error('--shape takes H or H W')
    args.shape = tuple(args.shape * (3 - len(args.shape)))
    if args.verify and not args.dynamic:
        parser.error('--verify at other sizes needs --dynamic (a static '
                     f'graph only takes {args.shape[0]}x{args.shape[1]})')
    if args.model.endswith('.py') and not osp.isfile(args.model):
        parser.error(f'config file {args.model!r} does not exist')
    if args.out is None:
        name = osp.splitext(osp.basename(args.model))[0].replace(':', '-')
        args.out = osp.join('work_dirs', 'onnx', f'{name}.onnx')
    return args


def main(argv=None):
    args = parse_args(argv)
    model, kind = deployment.build_exportable(args.model, args.checkpoint,
                                              args.backbone_only)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    names = deployment.export_onnx(model, args.shape, args.out, args.dynamic)
    print(f'wrote {args.out}: {kind} {args.model}, input {args.shape[0]}x'
          f'{args.shape[1]}{" (dynamic)" if args.dynamic else ""}, '
          f'{len(names)} output(s)')
    try:
        session = deployment.onnxruntime_session(args.out)
    except ImportError:
        print('onnxruntime is not installed: the graph was not checked')
        return
    shapes = [args.shape] + [tuple(shape) for shape in args.verify]
    failed = False
    for shape, error in zip(shapes,
                            deployment.relative_errors(model, session,
                                                       shapes)):
        ok = error <= args.tolerance
        failed |= not ok
        print(f'onnxruntime vs PyTorch at {shape[0]}x{shape[1]}: largest '
              f'difference {error:.2e} of the output scale '
              f'({"ok" if ok else "above " + str(args.tolerance)})')
    if failed:
        raise SystemExit(1)


if __name__ == '__main__':
    main()
