# Copyright (c) OpenMMLab. All rights reserved.
"""Train a model from an mmdet, mmseg or mmpretrain config.

The config's ``default_scope`` decides the task; importing the plugin
registers its backbones and the fixes today's stack needs (weights-only
checkpoint loading, CPU distributed training, atomic checkpoint writes).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--cfg-options K=V ...] [--launcher pytorch]

Before the first iteration it checks that the checkpoint to resume from is
an intact Runner checkpoint (see ``--resume``) and that the neck and heads
take the channels the backbone outputs
(:func:`mmplugin_l2vit.check_model_channels`); a problem, or a checkpoint
that would leave most backbone weights unloaded, ends the run with a
one-line message.
"""
import argparse
import glob
import logging
import os
import os.path as osp
import sys
from collections.abc import Mapping
from typing import Iterable, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmengine.runner.checkpoint import _load_checkpoint  # noqa: E402

from mmplugin_l2vit import check_model_channels  # noqa: E402
from mmplugin_l2vit import explain_load_error  # noqa: E402
from mmplugin_l2vit.models.converters import \
    CheckpointFormatError  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from CKPT, or without a value from the checkpoint that '
        'WORK_DIR/last_checkpoint names. When that pointer is missing, '
        'empty, unreadable or names a file that is not an intact Runner '
        'checkpoint, training resumes from the newest intact checkpoint '
        'in the work dir and says so (from scratch if there is none and no '
        'pointer); a CKPT that is not an intact Runner checkpoint ends the '
        'run with a message naming the newest intact one')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr by the actual over the base batch size')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config entries, e.g. train_cfg.max_epochs=1')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (older: --local_rank).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


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
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        if optim_wrapper == 'OptimWrapper':
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
        elif optim_wrapper != 'AmpOptimWrapper':
            raise SystemExit(f'--amp needs an OptimWrapper, the config has '
                             f'{optim_wrapper}')
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise SystemExit('--auto-scale-lr needs auto_scale_lr.'
                             'base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume is not None:
        resume_from = choose_resume_checkpoint(cfg.work_dir, args.resume)
        cfg.resume = resume_from is not None
        cfg.load_from = resume_from
    return cfg


def resume_problem(path: str) -> Optional[str]:
    """Why the Runner cannot resume from ``path``; None if it can."""
    if not osp.isfile(path):
        return 'there is no such file'
    if osp.getsize(path) == 0:
        return 'the file is empty'
    try:
        checkpoint = _load_checkpoint(path, map_location='cpu')
    except Exception as error:  # whatever the reason, it cannot resume
        reason = (str(error).strip().splitlines() or [''])[0][:200]
        return f'it does not load ({type(error).__name__}: {reason})'
    meta = checkpoint.get('meta') if isinstance(checkpoint, Mapping) else None
    if not (isinstance(meta, Mapping) and 'epoch' in meta and 'iter' in meta
            and isinstance(checkpoint.get('state_dict'), Mapping)
            and 'message_hub' in checkpoint):
        return ('it is not a Runner checkpoint (one needs meta.epoch, '
                'meta.iter, state_dict and message_hub)')
    return None


def newest_intact_checkpoint(directories: Iterable[str]) -> Optional[str]:
    """The most recently written ``*.pth`` in ``directories`` the Runner
    can resume from; ``best_*.pth`` (no optimizer state) are skipped."""
    candidates = {
        path
        for directory in directories
        for path in glob.glob(osp.join(glob.escape(directory), '*.pth'))
        if not osp.basename(path).startswith('best_')
    }
    for path in sorted(candidates, key=osp.getmtime, reverse=True):
        if resume_problem(path) is None:
            return path
    return None


def read_pointer(pointer: str):
    """``(target, problem)`` of a ``last_checkpoint`` file: the checkpoint
    it names, or None and what is wrong with it."""
    if not osp.exists(pointer):
        return None, 'does not exist'
    try:
        with open(pointer, encoding='utf-8') as f:
            target = f.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        return None, f'is unreadable ({type(error).__name__})'
    if not target:
        return None, 'is empty'
    if '://' in target:  # a remote backend's path: left to mmengine
        return target, None
    problem = resume_problem(target)
    if problem is not None:
        return None, f'names {target}, but {problem}'
    return target, None


def choose_resume_checkpoint(work_dir: str, resume: str) -> Optional[str]:
    """The checkpoint to resume from, for ``--resume`` (``'auto'``: the
    work dir's) or ``--resume CKPT``; None to train from scratch."""
    if resume != 'auto':
        problem = resume_problem(resume)
        if problem is None:
            return resume
        intact = newest_intact_checkpoint([work_dir])
        advice = (f'the newest intact checkpoint in {work_dir} is {intact}'
                  if intact else f'{work_dir} holds no intact checkpoint')
        raise SystemExit(f'--resume: cannot resume from {resume}: {problem}'
                         f'; {advice}')
    pointer = osp.join(work_dir, 'last_checkpoint')
    target, problem = read_pointer(pointer)
    if problem is None:
        return target
    intact = newest_intact_checkpoint([work_dir])
    if intact is None:
        if osp.exists(pointer):
            raise SystemExit(
                f'--resume: {pointer} {problem}, and {work_dir} holds no '
                'intact checkpoint; run without --resume to train from '
                'scratch')
        print_log(
            f'--resume: no checkpoint in {work_dir}; training from scratch',
            logger='current')
        return None
    print_log(
        f'--resume: {pointer} {problem}; resuming from the newest intact '
        f'checkpoint {intact}',
        logger='current',
        level=logging.WARNING)
    return intact


def main(argv=None):
    cfg = build_config(parse_args(argv))
    runner = (Runner.from_cfg(cfg)
              if 'runner_type' not in cfg else RUNNERS.build(cfg))
    try:
        check_model_channels(runner.model)
    except ValueError as error:
        raise SystemExit(str(error))
    try:
        runner.train()
    except CheckpointFormatError as error:
        raise SystemExit(explain_load_error(cfg.load_from, error))


if __name__ == '__main__':
    main()
