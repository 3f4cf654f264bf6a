# Copyright (c) OpenMMLab. All rights reserved.
"""Write checkpoints atomically.

mmengine's local file backend writes a checkpoint in place, so a job killed
while saving leaves a truncated ``iter_N.pth`` (and ``--resume`` then
fails on it). The patched ``put``/``put_text`` write a temporary file in the
same directory and rename it over the target, which either keeps the old
file or gives the whole new one.
"""
import functools
import os
import os.path as osp
import tempfile

import mmengine
from mmengine.fileio.backends import LocalBackend


def _atomic_write(filepath, data, mode):
    directory = osp.dirname(osp.abspath(filepath))
    mmengine.mkdir_or_exist(directory)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix=f'.{osp.basename(filepath)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def make_local_writes_atomic() -> None:
    """Patch ``LocalBackend.put``/``put_text``; safe to call twice."""
    if getattr(LocalBackend.put, '_l2vit_atomic', False):
        return

    @functools.wraps(LocalBackend.put)
    def put(self, obj, filepath):
        _atomic_write(str(filepath), obj, 'wb')

    @functools.wraps(LocalBackend.put_text)
    def put_text(self, obj, filepath, encoding='utf-8'):
        _atomic_write(str(filepath), obj.encode(encoding), 'wb')

    put._l2vit_atomic = True
    LocalBackend.put = put
    LocalBackend.put_text = put_text
