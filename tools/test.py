# Copyright (c) OpenMMLab. All rights reserved.
"""Evaluate a checkpoint with an mmdet, mmseg or mmpretrain config.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE]
        [--show] [--wait-time SECONDS] [--show-dir DIR] [--tta]
        [--cfg-options K=V ...] [--launcher pytorch]

CHECKPOINT is a file or a URL (``https://...``; any scheme of mmengine's
``CheckpointLoader``), downloaded once into torch's hub cache and loaded
weights-only like a file.

``--out`` dumps the raw predictions (a .pkl file for mmdet and mmpretrain,
a directory of label maps for mmseg); ``--show-dir`` saves drawn results
under the work dir (a relative DIR): mmdet in ``WORK_DIR/TIMESTAMP/DIR``,
mmseg in ``WORK_DIR/DIR/vis_data/vis_image``, mmpretrain in
``WORK_DIR/DIR``. ``--show`` displays each drawn result in a window for
``--wait-time`` seconds.

A checkpoint that would leave most backbone weights unloaded (an official
release file, another model's checkpoint) and a neck or head whose
``in_channels`` do not match the backbone's outputs
(:func:`mmplugin_l2vit.check_model_channels`) end the run with a one-line
message before the first test iteration.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, ConfigDict, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmplugin_l2vit import check_model_channels  # noqa: E402
from mmplugin_l2vit import explain_load_error  # noqa: E402
from mmplugin_l2vit.models.converters import \
    CheckpointFormatError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file or URL')
    parser.add_argument('--work-dir', help='where to save the metrics')
    parser.add_argument('--out', help='dump the predictions to this file')
    parser.add_argument(
        '--show', action='store_true', help='show the drawn predictions')
    parser.add_argument(
        '--wait-time',
        type=float,
        default=2,
        help='seconds each shown prediction stays on screen')
    parser.add_argument(
        '--show-dir', help='save drawn predictions in this directory')
    parser.add_argument(
        '--tta', action='store_true', help='test-time augmentation')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def _enable_drawing(cfg, args, scope):
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise SystemExit('--show and --show-dir need '
                         'default_hooks.visualization')
    if args.show:
        # The hooks of all three libraries take these two arguments.
        hooks.visualization.update(show=True, wait_time=args.wait_time)
    show_dir = args.show_dir
    if scope == 'mmpretrain':
        # mmpretrain's VisualizationHook is switched on by ``enable`` and
        # draws every 5000th sample by default.
        hooks.visualization.update(enable=True, interval=1)
        if show_dir:
            hooks.visualization.out_dir = osp.join(cfg.work_dir, show_dir)
        return
    hooks.visualization.draw = True
    if scope == 'mmseg':
        # Every test image (the hook's default interval is 50). The hook has
        # no test_out_dir: as in mmseg's own tools/test.py, the visualizer's
        # backends save the drawings.
        hooks.visualization.interval = 1
        if show_dir:
            cfg.visualizer.save_dir = osp.join(cfg.work_dir, show_dir)
    elif show_dir:
        hooks.visualization.test_out_dir = show_dir


def _dump_predictions(cfg, out, scope):
    if scope == 'mmseg':
        # mmseg's IoUMetric writes the label maps itself.
        evaluators = cfg.test_evaluator
        for evaluator in (evaluators if isinstance(evaluators, list) else
                          [evaluators]):
            evaluator['output_dir'] = out
            evaluator['keep_results'] = True
        return None
    if not out.endswith(('.pkl', '.pickle')):
        raise SystemExit('--out must be a .pkl or .pickle file')
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out)


def _use_tta(cfg):
    if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
        raise SystemExit('--tta needs tta_model and tta_pipeline in the '
                         'config')
    if (cfg.tta_model.get('type') == 'DetTTAModel'
            and cfg.model.get('roi_head', {}).get('mask_head')):
        # Refused here rather than by an assertion after the run started.
        raise SystemExit("--tta: mmdet's DetTTAModel merges boxes only; "
                         'it does not support a model with a mask head')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def build_config(args) -> Config:
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    # A URL (every CheckpointLoader scheme has '://') is loaded by the
    # Runner through CheckpointLoader, weights-only (mmplugin_l2vit.runtime).
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise SystemExit(f'no checkpoint at {args.checkpoint}')
    cfg.load_from = args.checkpoint
    scope = cfg.get('default_scope', 'mmdet')
    if args.show or args.show_dir:
        _enable_drawing(cfg, args, scope)
    if args.tta:
        _use_tta(cfg)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = build_config(args)
    scope = cfg.get('default_scope', 'mmdet')
    dump = _dump_predictions(cfg, args.out, scope) if args.out else None
    runner = (Runner.from_cfg(cfg)
              if 'runner_type' not in cfg else RUNNERS.build(cfg))
    if dump is not None:
        runner.test_evaluator.metrics.append(dump)
    try:
        check_model_channels(runner.model)
    except ValueError as error:
        raise SystemExit(str(error))
    try:
        runner.test()
    except CheckpointFormatError as error:
        raise SystemExit(explain_load_error(args.checkpoint, error))


if __name__ == '__main__':
    main()
