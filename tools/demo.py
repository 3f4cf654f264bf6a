# Copyright (c) OpenMMLab. All rights reserved.
"""Build Mask R-CNN with an L²ViT backbone from a config and run it on an
image, printing the multi-scale feature shapes and the detections.

    python tools/demo.py                      # generated image, random init
    python tools/demo.py --img IMG --checkpoint CKPT --out vis.jpg
"""
import argparse
import logging
import os.path as osp
import sys

import numpy as np

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmplugin_l2vit  # noqa: E402,F401  (registers the backbones)

DEFAULT_CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs',
    'mask_rcnn_l2vit.py')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument(
        '--checkpoint',
        help='detector checkpoint; without one the model is randomly '
        'initialised (the backbone init_cfg is not downloaded)')
    parser.add_argument(
        '--img', help='image file; without one a scene is generated')
    parser.add_argument('--size', type=int, nargs=2, default=(480, 640),
                        metavar=('H', 'W'), help='generated image size')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--topk', type=int, default=5,
                        help='detections to print')
    parser.add_argument('--out', help='write the visualised result here')
    return parser.parse_args()


def generated_scene(height, width, seed=0):
    """A BGR image with a few filled shapes on a textured background."""
    import cv2
    rng = np.random.default_rng(seed)
    img = rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
    for _ in range(6):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        side = min(height, width)
        r = int(rng.integers(side // 16, side // 5))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), r, color, -1)
        else:
            cv2.rectangle(img, (x - r, y - r), (x + r, y + r), color, -1)
    return img


def main():
    args = parse_args()
    import cv2
    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config
    from mmengine.logging import MMLogger

    cfg = Config.fromfile(args.config)
    if args.checkpoint is None:
        cfg.model.backbone.init_cfg = None
    model = init_detector(cfg, args.checkpoint, device=args.device)
    if args.checkpoint is None:
        # init_weights logs every parameter's initialiser at INFO level.
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)
        model.init_weights()
        logger.setLevel(level)
        print('no --checkpoint: the detector is randomly initialised, so '
              'the detections below are meaningless')

    img = cv2.imread(args.img) if args.img else generated_scene(*args.size)
    if img is None:
        sys.exit(f'cannot read the image {args.img!r}')

    shapes = {}

    def record(name):

        def hook(module, inputs, outputs):
            shapes[name] = [tuple(o.shape) for o in outputs]

        return hook

    model.backbone.register_forward_hook(record('backbone'))
    model.neck.register_forward_hook(record('neck'))
    result = inference_detector(model, img)

    backbone = type(model.backbone).__name__
    print(f'input image: {img.shape[0]}x{img.shape[1]}, network input: '
          f'{"x".join(map(str, result.metainfo["batch_input_shape"]))}')
    for name in ('backbone', 'neck'):
        print(f'{name} ({backbone if name == "backbone" else "FPN"}) '
              f'outputs:')
        for i, shape in enumerate(shapes[name]):
            print(f'  [{i}] {shape}')
    pred = result.pred_instances
    classes = model.dataset_meta.get('classes', ())
    score_thr = cfg.model.test_cfg.rcnn.score_thr
    print(f'detections: {len(pred)} above score {score_thr} (top '
          f'{min(args.topk, len(pred))} shown)')
    for i in pred.scores.argsort(descending=True)[:args.topk].tolist():
        label = int(pred.labels[i])
        name = classes[label] if label < len(classes) else str(label)
        box = ', '.join(f'{v:.1f}' for v in pred.bboxes[i].tolist())
        mask = ''
        if 'masks' in pred:
            mask = f' mask area {int(pred.masks[i].sum())} px'
        print(f'  {name:>14s} {float(pred.scores[i]):.3f} '
              f'box [{box}]{mask}')
    if args.out:
        from mmdet.registry import VISUALIZERS
        visualizer = VISUALIZERS.build(cfg.visualizer)
        visualizer.dataset_meta = model.dataset_meta
        visualizer.add_datasample(
            'result', img[..., ::-1], result, draw_gt=False,
            out_file=args.out)
        print(f'visualisation written to {args.out}')


if __name__ == '__main__':
    main()
