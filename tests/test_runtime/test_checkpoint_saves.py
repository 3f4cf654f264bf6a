# Copyright (c) OpenMMLab. All rights reserved.
"""A failed checkpoint save loses nothing: the previous checkpoints and a
``last_checkpoint`` naming a complete one stay; temporary files of killed
processes are removed by the next one."""
import errno
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub, MMLogger
from mmengine.runner.checkpoint import _load_checkpoint

import mmplugin_l2vit  # noqa: F401  (weights-only loading of Runner files)

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
REPO = osp.dirname(TESTS)

FILE_SIZE_LIMIT = r'''
import os.path as osp, resource, signal, sys
from mmengine.hooks import CheckpointHook, Hook
from toy_runner import build_runner

work_dir = sys.argv[1]
# Without a handler SIGXFSZ kills the process; ignored, the write fails
# with EFBIG, as under `ulimit -f` in a shell that traps it.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


class LimitFileSize(Hook):

    def before_save_checkpoint(self, runner, checkpoint):
        if checkpoint['meta']['iter'] == 4:
            size = osp.getsize(osp.join(work_dir, 'iter_2.pth'))
            resource.setrlimit(resource.RLIMIT_FSIZE,
                               (size // 2, resource.RLIM_INFINITY))


runner = build_runner(work_dir, 6, name='fsize',
                      custom_hooks=[LimitFileSize()])
for hook in runner.hooks:
    if isinstance(hook, CheckpointHook):
        hook.max_keep_ckpts = 1
try:
    runner.train()
except OSError as error:
    print('save failed with errno', error.errno)
'''


def test_file_size_limit_keeps_the_last_checkpoint(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO, TESTS, os.environ.get('PYTHONPATH', '')]))
    result = subprocess.run(
        [sys.executable, '-c', FILE_SIZE_LIMIT, str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'save failed with errno {errno.EFBIG}' in result.stdout
    # The work dir also holds the run's log folder and config dump.
    kept = sorted(name for name in os.listdir(tmp_path)
                  if name.endswith('.pth') or name == 'last_checkpoint')
    assert kept == ['iter_2.pth', 'last_checkpoint']
    assert not glob.glob(str(tmp_path / '.*'))
    pointer = (tmp_path / 'last_checkpoint').read_text()
    assert pointer == str(tmp_path / 'iter_2.pth')
    assert _load_checkpoint(pointer)['meta']['iter'] == 2


class _FailingSaves:
    """A runner stand-in whose checkpoint saves fail when told to."""

    def __init__(self, work_dir, name):
        self.work_dir = str(work_dir)
        self.message_hub = MessageHub.get_instance(name)
        self.logger = MMLogger.get_instance(name)
        self.epoch, self.iter = 0, 0
        self.fail = False

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        if self.fail:
            raise OSError(errno.ENOSPC, 'No space left on device')
        torch.save({'meta': dict(iter=self.iter)},
                   osp.join(out_dir, filename))


def test_failed_best_save_keeps_the_previous_best(tmp_path):
    runner = _FailingSaves(tmp_path, 'failed_best_save')
    hook = CheckpointHook(interval=100, by_epoch=False, save_best='acc',
                          rule='greater')
    hook.before_train(runner)
    runner.iter = 2
    hook._save_best_checkpoint(runner, dict(acc=0.5))
    best = tmp_path / 'best_acc_iter_2.pth'
    assert best.exists()

    runner.iter, runner.fail = 4, True
    with pytest.raises(OSError):
        hook._save_best_checkpoint(runner, dict(acc=0.6))
    assert os.listdir(tmp_path) == ['best_acc_iter_2.pth']

    # A save that works replaces the previous best.
    runner.iter, runner.fail = 6, False
    hook._save_best_checkpoint(runner, dict(acc=0.7))
    assert os.listdir(tmp_path) == ['best_acc_iter_6.pth']


def test_failed_save_keeps_kept_checkpoints(tmp_path):
    runner = _FailingSaves(tmp_path, 'failed_save')
    hook = CheckpointHook(interval=2, by_epoch=False, max_keep_ckpts=2)
    hook.before_train(runner)
    for step in (2, 4):
        hook._save_checkpoint_with_step(runner, step, dict(iter=step))
    runner.fail = True
    with pytest.raises(OSError):
        hook._save_checkpoint_with_step(runner, 6, dict(iter=6))
    assert sorted(os.listdir(tmp_path)) == [
        'iter_2.pth', 'iter_4.pth', 'last_checkpoint'
    ]
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path /
                                                             'iter_4.pth')


def _dead_pid():
    process = subprocess.Popen([sys.executable, '-c', 'pass'])
    process.wait()
    return process.pid


def test_stale_temporary_files_are_removed_by_the_next_writer(tmp_path):
    host = os.uname().nodename
    stale = f'.iter_8.pth.l2vit-{_dead_pid()}-{host}-0123abcd.tmp'
    running = f'.iter_8.pth.l2vit-{os.getppid()}-{host}-0123abcd.tmp'
    elsewhere = f'.iter_8.pth.l2vit-{_dead_pid()}-other-host-0123abcd.tmp'
    foreign = '.iter_8.pth.tmp'
    for name in (stale, running, elsewhere, foreign):
        (tmp_path / name).write_bytes(b'partial')
    LocalBackend().put(b'whole', tmp_path / 'iter_10.pth')
    assert sorted(os.listdir(tmp_path)) == sorted(
        [running, elsewhere, foreign, 'iter_10.pth'])


def test_temporary_files_are_named_and_removed_on_failure(
        tmp_path, monkeypatch):
    names = []

    def killed(fd):
        names.extend(os.listdir(tmp_path))
        raise KeyboardInterrupt('killed while saving')

    monkeypatch.setattr(os, 'fsync', killed)
    with pytest.raises(KeyboardInterrupt):
        LocalBackend().put(b'data', tmp_path / 'iter_2.pth')
    assert len(names) == 1
    prefix = f'.iter_2.pth.l2vit-{os.getpid()}-{os.uname().nodename}-'
    assert names[0].startswith(prefix) and names[0].endswith('.tmp')
    assert os.listdir(tmp_path) == []


def test_kill_before_the_removal_is_made_good_by_the_resumed_run(
        tmp_path, monkeypatch):
    # A job killed after the new checkpoint and last_checkpoint are written
    # but before the outdated checkpoint is removed leaves one checkpoint
    # too many; the new checkpoint records it, so the resumed run removes
    # it.
    sys.path.insert(0, TESTS)
    from toy_runner import build_runner

    from mmplugin_l2vit.runtime import checkpoint_hook

    def killed(backend, path):
        raise KeyboardInterrupt(f'killed before removing {path}')

    def keep_one(runner):
        for hook in runner.hooks:
            if isinstance(hook, CheckpointHook):
                hook.max_keep_ckpts = 1
        return runner

    runner = keep_one(build_runner(tmp_path, 6, name='killed_removal'))
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_hook, '_remove_checkpoint', killed)
        with pytest.raises(KeyboardInterrupt):
            runner.train()
    saved = sorted(glob.glob(str(tmp_path / 'iter_*.pth')))
    assert saved == [str(tmp_path / f'iter_{i}.pth') for i in (2, 4)]
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path /
                                                             'iter_4.pth')

    resumed = keep_one(
        build_runner(tmp_path, 6, name='resumed_removal', resume=True))
    resumed.train()
    saved = sorted(glob.glob(str(tmp_path / 'iter_*.pth')))
    assert saved == [str(tmp_path / 'iter_6.pth')]
