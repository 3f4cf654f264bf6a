# Copyright (c) OpenMMLab. All rights reserved.
"""Atomic writes for mmengine's local file backend.

mmengine's ``LocalBackend.put``/``put_text`` (checkpoints, ``fileio.dump``,
``tools/test.py --out``) write in place, so a job killed while saving
leaves a truncated file. The patched methods write a temporary file beside
the target and rename it over the target: a reader sees either the old
file or the whole new one. Otherwise they behave as a plain write: a new
file gets the umask's permissions, a replaced file keeps its mode (and its
owner and group where the OS allows), and a write to a symlink goes to the
link's target.

The temporary file is named ``.<name>.l2vit-<pid>-<host>-<random>.tmp``. A
killed process leaves it behind; the first write of a later process into
the same directory removes those whose process is gone.
"""
import contextlib
import functools
import os
import os.path as osp
import re
import secrets
import socket
import stat

import mmengine
from mmengine.fileio.backends import LocalBackend

_TEMPORARY = re.compile(
    r'^\..+\.l2vit-(?P<pid>\d+)-(?P<host>.+)-[0-9a-f]{8}\.tmp$')

# Directories whose stale temporary files this process has removed.
_swept = set()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(directory: str) -> list:
    """Remove the temporary files that processes of this host which no
    longer run left in ``directory``; return their paths."""
    host = socket.gethostname()
    removed = []
    for name in os.listdir(directory):
        match = _TEMPORARY.match(name)
        if (match is None or match['host'] != host
                or _process_alive(int(match['pid']))):
            continue
        path = osp.join(directory, name)
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
            removed.append(path)
    return removed


def _keep_mode_and_owner(fd: int, existing: os.stat_result) -> None:
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))
    # A plain write keeps the owner and group; a non-root user may only
    # set a group they belong to.
    for uid, gid in ((existing.st_uid, existing.st_gid),
                     (-1, existing.st_gid)):
        try:
            os.fchown(fd, uid, gid)
            return
        except PermissionError:
            continue


def _sync_directory(directory: str) -> None:
    # Makes the rename durable; not every file system can sync a directory.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(filepath, data: bytes) -> None:
    """Write ``data`` to ``filepath`` through a renamed temporary file."""
    target = osp.realpath(filepath)
    directory = osp.dirname(target)
    mmengine.mkdir_or_exist(directory)
    if directory not in _swept:
        remove_stale_temporaries(directory)
        _swept.add(directory)
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        existing = None
    temporary = osp.join(
        directory, f'.{osp.basename(target)}.l2vit-{os.getpid()}-'
        f'{socket.gethostname()}-{secrets.token_hex(4)}.tmp')
    # Created as open() creates a file: mode 0o666 less the umask.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, 'wb') as f:
            if existing is not None:
                _keep_mode_and_owner(f.fileno(), existing)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise
    _sync_directory(directory)


def make_local_writes_atomic() -> None:
    """Patch ``LocalBackend.put``/``put_text``; safe to call twice."""
    if getattr(LocalBackend.put, '_l2vit_fix', False):
        return

    @functools.wraps(LocalBackend.put)
    def put(self, obj, filepath):
        atomic_write(str(filepath), obj)

    @functools.wraps(LocalBackend.put_text)
    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write(str(filepath), obj.encode(encoding))

    put._l2vit_fix = True
    LocalBackend.put = put
    LocalBackend.put_text = put_text
