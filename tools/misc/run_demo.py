# Copyright (c) OpenMMLab. All rights reserved.
"""Train and evaluate a small L²ViT model on the synthetic shapes data.

    python tools/misc/run_demo.py [--task det|seg|cls] [--work-dir DIR]
        [--data-root DIR] [--threads 1]

Generates the data if missing (tools/misc/generate_demo_data.py; what an
interrupted generation left is regenerated, a directory holding other
files refused), evaluates the untrained model with tools/test.py, trains
with tools/train.py, evaluates the final checkpoint with tools/test.py and
prints untrained vs trained metrics. Everything runs in this process on
the CPU (``--threads`` torch threads; 1 is the fastest on a busy machine).
"""
import argparse
import glob
import importlib.util
import json
import os
import os.path as osp
import sys
import time

import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)

from mmengine.config import Config  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402
from mmengine.runner import save_checkpoint, set_random_seed  # noqa: E402

from mmplugin_l2vit.datasets import generate_demo_data  # noqa: E402

TASKS = dict(
    det=dict(
        config='configs/demo/mask-rcnn_l2vit-demo_shapes.py',
        dataset='coco',
        metrics=('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP',
                 'coco/segm_mAP_50')),
    seg=dict(
        config='configs/demo/upernet_l2vit-demo_shapes.py',
        dataset='ade',
        metrics=('mIoU', 'mAcc', 'aAcc')),
    cls=dict(
        config='configs/demo/l2vit-demo_1xb32_shapes.py',
        dataset='imagenet',
        metrics=('accuracy/top1', )))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--task', choices=sorted(TASKS), default='det')
    parser.add_argument(
        '--work-dir', help='default: work_dirs/demo_<task> in the repository')
    parser.add_argument(
        '--data-root',
        default=osp.join(REPO_ROOT, 'demo_data'),
        help='generated data (written here if missing; default: '
        'demo_data/ in the repository)')
    parser.add_argument(
        '--threads', type=int, default=1, help='torch CPU threads')
    return parser.parse_args(argv)


def load_tool(name):
    """Import ``tools/<name>.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        f'l2vit_tools_{name}', osp.join(REPO_ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ensure_data(data_root):
    """Generate the demo data unless all three datasets are there."""
    expected = (osp.join(data_root, 'coco', 'annotations',
                         'instances_val.json'),
                osp.join(data_root, 'ade', 'annotations', 'validation'),
                osp.join(data_root, 'imagenet', 'meta', 'val.txt'))
    if all(osp.exists(path) for path in expected):
        print(f'Using the demo data in {data_root}')
        return
    # Only what an interrupted or older generation leaves (coco/, ade/,
    # imagenet/) is emptied; the generator refuses a directory holding
    # anything else.
    leftovers = set(os.listdir(data_root)) if osp.isdir(data_root) else set()
    start = time.perf_counter()
    try:
        generate_demo_data(
            data_root, overwrite=leftovers <= {'coco', 'ade', 'imagenet'})
    except (ValueError, OSError) as error:
        raise SystemExit(f'--data-root: {error}')
    print(f'Generated the demo data in {data_root} '
          f'({time.perf_counter() - start:.1f}s)')


def data_options(task, data_root):
    """``--cfg-options`` that point a demo config at ``data_root``."""
    root = osp.join(data_root, TASKS[task]['dataset']) + osp.sep
    options = [
        f'{split}_dataloader.dataset.data_root={root}'
        for split in ('train', 'val', 'test')
    ]
    if task == 'det':
        ann_file = osp.join(root, 'annotations', 'instances_val.json')
        options += [
            f'{split}_evaluator.ann_file={ann_file}'
            for split in ('val', 'test')
        ]
    return options


def save_untrained(cfg, path):
    """Write the freshly initialised model of ``cfg`` as a checkpoint,
    seeded as the training run is."""
    init_default_scope(cfg.default_scope)
    set_random_seed(cfg.get('randomness', {}).get('seed', 0))
    model = MODELS.build(cfg.model)
    model.init_weights()
    save_checkpoint(dict(meta=dict(iter=0), state_dict=model.state_dict()),
                    path)


def evaluate(test_tool, config, checkpoint, work_dir, options):
    """Run ``tools/test.py`` and return the metrics it wrote."""
    test_tool.main([
        config, checkpoint, '--work-dir', work_dir, '--cfg-options', *options
    ])
    latest_run = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))[-1]
    with open(latest_run) as f:
        return json.load(f)


def print_summary(metric_names, untrained, trained, minutes):
    width = max(len(name) for name in metric_names)
    print(f'\n{"metric":<{width}}  untrained  trained')
    for name in metric_names:
        print(f'{name:<{width}}  {untrained[name]:9.3f}  '
              f'{trained[name]:7.3f}')
    print(f'total wall-clock time: {minutes:.1f} min')


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    task = TASKS[args.task]
    config = osp.join(REPO_ROOT, task['config'])
    work_dir = args.work_dir or osp.join(REPO_ROOT, 'work_dirs',
                                         f'demo_{args.task}')
    data_root = osp.abspath(args.data_root)
    options = data_options(args.task, data_root)
    train_tool, test_tool = load_tool('train'), load_tool('test')

    ensure_data(data_root)
    cfg = Config.fromfile(config)
    untrained_ckpt = osp.join(work_dir, 'untrained.pth')
    save_untrained(cfg, untrained_ckpt)
    untrained = evaluate(test_tool, config, untrained_ckpt,
                         osp.join(work_dir, 'test_untrained'), options)
    # The final checkpoint is evaluated below; skip the validation that
    # would otherwise run at the end of training.
    no_validation = f'train_cfg.val_begin={cfg.train_cfg.max_iters + 1}'
    train_tool.main([
        config, '--work-dir', work_dir, '--cfg-options', *options,
        no_validation
    ])
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        trained_ckpt = f.read().strip()
    trained = evaluate(test_tool, config, trained_ckpt,
                       osp.join(work_dir, 'test_trained'), options)
    print_summary(task['metrics'], untrained, trained,
                  (time.perf_counter() - start) / 60)


if __name__ == '__main__':
    main()
