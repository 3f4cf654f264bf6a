# Copyright (c) OpenMMLab. All rights reserved.
"""Remove outdated checkpoints only once the new one is in place.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest kept checkpoint
(``max_keep_ckpts``) and the previous best one (``save_best``) *before* it
writes the new one, and writes ``last_checkpoint`` in place: a save that
fails (full disk, file-size limit, a kill) can leave no checkpoint and a
``last_checkpoint`` naming a deleted or half-written file. The patched hook
writes the new checkpoint, then ``last_checkpoint`` (atomically), and only
then removes the outdated files. A job killed between the save and the
removal leaves one checkpoint more than ``max_keep_ckpts``; the new
checkpoint lists it among the kept ones, so a run resumed from it removes
it.
"""
import functools
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook

from .atomic_io import atomic_write


def _remove_checkpoint(backend, path) -> None:
    if backend.isfile(path):
        backend.remove(path)
    elif backend.isdir(path):  # deepspeed saves directories
        backend.rmtree(path)


class _DeferredRemovals:
    """Stands in for a hook's file backend during a save, keeping the
    removals asked for until :meth:`run` is called."""

    def __init__(self, backend):
        self.backend = backend
        self.paths = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def remove(self, path):
        self.paths.append(path)

    rmtree = remove

    def run(self, keep=()):
        for path in self.paths:
            if path not in keep:
                _remove_checkpoint(self.backend, path)


def _save_checkpoint_with_step(self, runner, step, meta):
    """Save checkpoint ``step``, then point ``last_checkpoint`` at it, then
    drop the checkpoint that falls out of ``max_keep_ckpts``."""
    outdated = None
    # keep_ckpt_ids exists only with max_keep_ckpts > 0.
    if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                        and self.keep_ckpt_ids[-1] == step):
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated = self.keep_ckpt_ids.popleft()
        self.keep_ckpt_ids.append(step)
        # Until it is removed, the outdated checkpoint stays on the list
        # the new checkpoint records: a job killed before the removal
        # leaves it on disk, and the run resumed from the new checkpoint
        # removes it (``before_train`` drops the ids beyond
        # ``max_keep_ckpts``).
        pending = [] if outdated is None else [outdated]
        runner.message_hub.update_info('keep_ckpt_ids',
                                       pending + list(self.keep_ckpt_ids))

    ckpt_filename = self.filename_tmpl.format(step)
    self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
    runner.message_hub.update_info('last_ckpt', self.last_ckpt)
    runner.save_checkpoint(
        self.out_dir,
        ckpt_filename,
        self.file_client_args,
        save_optimizer=self.save_optimizer,
        save_param_scheduler=self.save_param_scheduler,
        meta=meta,
        by_epoch=self.by_epoch,
        backend_args=self.backend_args,
        **self.args)
    if is_main_process():
        atomic_write(
            osp.join(runner.work_dir, 'last_checkpoint'),
            self.last_ckpt.encode())
        if outdated is not None:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(outdated))
            if path != self.last_ckpt:
                _remove_checkpoint(self.file_backend, path)
    if self.max_keep_ckpts > 0:
        runner.message_hub.update_info('keep_ckpt_ids',
                                       list(self.keep_ckpt_ids))


def _remove_previous_best_after_saving(save_best_checkpoint):

    @functools.wraps(save_best_checkpoint)
    def wrapper(self, runner, metrics):
        if not self.save_best:  # nothing saved (a val() without train())
            return save_best_checkpoint(self, runner, metrics)
        backend = self.file_backend
        deferred = _DeferredRemovals(backend)
        # What a failed save must give back, so that the next save replaces
        # the best file that is still on disk.
        best_path = getattr(self, 'best_ckpt_path', None)
        best_paths = dict(getattr(self, 'best_ckpt_path_dict', {}))
        best_info = {
            key: value
            for key, value in runner.message_hub.runtime_info.items()
            if key.startswith('best_')
        }
        self.file_backend = deferred
        try:
            save_best_checkpoint(self, runner, metrics)
        except BaseException:
            self.best_ckpt_path = best_path
            if hasattr(self, 'best_ckpt_path_dict'):
                self.best_ckpt_path_dict = best_paths
            for key, value in best_info.items():
                runner.message_hub.update_info(key, value)
            raise
        finally:
            self.file_backend = backend
        # Only one of the two exists, by the number of key indicators.
        in_use = (self.last_ckpt, getattr(self, 'best_ckpt_path', None),
                  *getattr(self, 'best_ckpt_path_dict', {}).values())
        deferred.run(keep=in_use)

    return wrapper


def keep_checkpoints_until_replaced() -> None:
    """Patch ``CheckpointHook``; safe to call twice."""
    if getattr(CheckpointHook._save_checkpoint_with_step, '_l2vit_fix',
               False):
        return
    _save_checkpoint_with_step._l2vit_fix = True
    CheckpointHook._save_checkpoint_with_step = _save_checkpoint_with_step
    CheckpointHook._save_best_checkpoint = _remove_previous_best_after_saving(
        CheckpointHook._save_best_checkpoint)
