# Copyright (c) OpenMMLab. All rights reserved.
"""Weights-only checkpoint loading through mmengine.

Since torch 2.6 ``torch.load`` only unpickles allow-listed globals, while
mmengine 0.10.7 calls it without ``weights_only``. Checkpoints written by an
mmengine Runner hold a ``MessageHub`` (``HistoryBuffer`` objects and numpy
scalars and arrays), and the official L²ViT/FLatten release files hold an
``argparse.Namespace`` (L²ViT) or a yacs ``CfgNode`` (FLatten).

Rather than turning weights-only loading off, :func:`checkpoint_globals`
allow-lists exactly those classes for the loads made inside it, and
mmengine's ``CheckpointLoader`` loads every checkpoint inside it. Nothing is
registered for other ``torch.load`` calls. mmengine's URL loader, used by
``http(s)://``, ``torchvision://``, ``modelzoo://``, ``open-mmlab://`` and
``mmcls://``, unpickles with ``weights_only=False``; it is replaced by a
weights-only one.
"""
import argparse
import contextlib
import errno
import functools
import hashlib
import importlib
import os
import os.path as osp
import pickle
import threading
from collections import OrderedDict
from typing import Optional
from urllib.parse import urlparse

import numpy as np
import torch

# Where numpy's array and scalar reconstructors live, under numpy 1 and 2;
# pickles name whichever module wrote them.
_NUMPY_MULTIARRAY_PATHS = ('numpy.core.multiarray', 'numpy._core.multiarray')

# The statistics every HistoryBuffer registers for itself on creation.
_DEFAULT_STATISTICS = frozenset(('min', 'max', 'current', 'mean'))

# torch's allow-list is one process-wide set: loads inside
# checkpoint_globals() are serialised so that one thread leaving the
# context cannot take the entries away from another one still loading.
_ALLOW_LIST_LOCK = threading.RLock()


class CheckpointFileError(RuntimeError):
    """A checkpoint file is empty, truncated or not a torch file."""


def _history_buffer_getattr(obj, name):
    """The only ``getattr`` a checkpoint may call.

    mmengine pickles ``HistoryBuffer._statistics_methods`` as
    ``getattr(HistoryBuffer, 'mean')`` and so on. A general ``getattr`` in
    a pickle reaches arbitrary methods (``ndarray.tofile`` writes files), so
    only statistics methods of ``HistoryBuffer`` are served.
    """
    from mmengine.logging import HistoryBuffer
    statistics = _DEFAULT_STATISTICS.union(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in statistics:
        return getattr(obj, name)
    raise RuntimeError(
        f'refusing getattr({type(obj).__name__}, {name!r}) in a checkpoint')


class YacsConfigAsDict:
    """Unpickles a yacs ``CfgNode`` as a plain ``OrderedDict``.

    The official FLatten release files pickle their training config as a
    ``CfgNode``, a dict subclass, which the weights-only unpickler cannot
    fill (it sets items only on plain dicts), with or without yacs
    installed. Only the weights beside it are needed, so the config is
    read as an ``OrderedDict`` whose attributes hold the node's flags.
    """

    def __new__(cls, *args):
        return OrderedDict()


@functools.lru_cache(maxsize=None)
def checkpoint_safe_globals():
    """Return the fixed ``(callable, pickled path)`` pairs to allow-list."""
    from mmengine.logging import HistoryBuffer
    try:
        multiarray = importlib.import_module('numpy._core.multiarray')
    except ImportError:  # numpy < 2
        multiarray = importlib.import_module('numpy.core.multiarray')
    pairs = [
        (HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
        (_history_buffer_getattr, 'builtins.getattr'),
        (argparse.Namespace, 'argparse.Namespace'),
        (YacsConfigAsDict, 'yacs.config.CfgNode'),
        (np.ndarray, 'numpy.ndarray'),
        (np.dtype, 'numpy.dtype'),
    ]
    for path in _NUMPY_MULTIARRAY_PATHS:
        pairs.append((multiarray._reconstruct, f'{path}._reconstruct'))
        pairs.append((multiarray.scalar, f'{path}.scalar'))
    # numpy >= 1.25 pickles a dtype as its class, e.g. numpy.dtypes.
    # Float64DType.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                pairs.append((cls, f'numpy.dtypes.{name}'))
    return tuple(pairs)


def _pickled_path(entry):
    if isinstance(entry, tuple):
        return entry[1]
    return f'{entry.__module__}.{entry.__qualname__}'


def _replace_safe_globals(entries):
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(list(entries))


@contextlib.contextmanager
def checkpoint_globals():
    """Allow-list :func:`checkpoint_safe_globals` for the loads inside.

    What other code registered stays allowed, except entries under a path
    of ours (a plain ``builtins.getattr``, say), which are set aside inside
    the context, so ours apply whatever the set order. On exit the
    registrations are as they were (plus any added meanwhile by others).
    """
    ours = checkpoint_safe_globals()
    our_paths = {path for _, path in ours}
    with _ALLOW_LIST_LOCK:
        before = torch.serialization.get_safe_globals()
        set_aside = [
            entry for entry in before
            if _pickled_path(entry) in our_paths and entry not in ours
        ]
        added = [entry for entry in ours if entry not in before]
        _replace_safe_globals(
            [entry for entry in before if entry not in set_aside] + added)
        try:
            yield
        finally:
            now = torch.serialization.get_safe_globals()
            _replace_safe_globals(
                [entry for entry in now if entry not in added] + set_aside)


def _is_damage(error) -> bool:
    """Whether ``torch.load`` failed on the bytes of the file (an empty or
    cut-off file, or one that is no torch checkpoint)."""
    if isinstance(error, pickle.UnpicklingError):
        return 'Weights only load failed' not in str(error)
    return (isinstance(error, EOFError)
            or (isinstance(error, RuntimeError)
                and 'PytorchStreamReader' in str(error))
            or (isinstance(error, OSError) and error.errno == errno.EINVAL))


def _damage_message(filename, error) -> Optional[str]:
    """Say what is wrong with a checkpoint file that failed to load, or
    return None where the error is not about the file's bytes."""
    size = os.path.getsize(filename) if osp.isfile(filename) else None
    if size == 0:
        return (f'checkpoint {filename} is empty (0 bytes): it was probably '
                'cut off while being written; use another checkpoint')
    if not _is_damage(error):
        return None
    where = filename if size is None else f'{filename} ({size} bytes)'
    reason = str(error).split('\n')[0] or type(error).__name__
    return (f'checkpoint {where} is truncated or is not a torch '
            f'checkpoint: {reason}')


@contextlib.contextmanager
def _errors_naming(filename):
    """Re-raise a failed load naming the file and, where the file is
    damaged, saying so."""
    try:
        yield
    except (EOFError, OSError, RuntimeError, pickle.UnpicklingError) as error:
        damage = _damage_message(filename, error)
        if damage is not None:
            raise CheckpointFileError(damage) from error
        if (isinstance(error, pickle.UnpicklingError)
                and 'Weights only load failed' in str(error)):
            raise pickle.UnpicklingError(
                f'refusing to load {filename}: {error}') from None
        raise


def load_checkpoint_file(filename, map_location=None):
    """``torch.load`` a local file weights-only, as mmengine's loader does
    with the plugin imported (for tools that read official files).

    Raises:
        CheckpointFileError: The file is empty or truncated.
        pickle.UnpicklingError: The file holds objects beyond the
            checkpoint allow-list.
    """
    with checkpoint_globals(), _errors_naming(filename):
        return torch.load(
            filename, map_location=map_location, weights_only=True)


def scope_checkpoint_globals_to_mmengine() -> None:
    """Load every checkpoint mmengine's ``CheckpointLoader`` loads (local
    files, every URL scheme, ``--resume``, ``load_from``, ``init_cfg``)
    inside :func:`checkpoint_globals`, with errors naming the file."""
    from mmengine.runner import CheckpointLoader
    if getattr(CheckpointLoader.load_checkpoint, '_l2vit_fix', False):
        return
    original = CheckpointLoader.load_checkpoint.__func__

    @functools.wraps(original)
    def load_checkpoint(cls, filename, map_location=None, logger='current'):
        with checkpoint_globals(), _errors_naming(filename):
            return original(cls, filename, map_location, logger)

    load_checkpoint._l2vit_fix = True
    CheckpointLoader.load_checkpoint = classmethod(load_checkpoint)


def _cache_file_name(url: str) -> str:
    """The URL's last path component, or for share links whose path has no
    file name (``https://cloud.tsinghua.edu.cn/f/<id>/?dl=1``) a name with
    a hash of the URL."""
    name = osp.basename(urlparse(url).path.rstrip('/'))
    if name.endswith(('.pth', '.pt', '.ckpt', '.bin')):
        return name
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f'{name or "checkpoint"}-{digest}.pth'


def load_url_weights_only(url,
                          model_dir=None,
                          map_location=None,
                          progress=True,
                          check_hash=False,
                          file_name=None):
    """mmengine's ``load_url``, but weights-only.

    mmengine's ``load_from_http`` (which the ``torchvision://``,
    ``modelzoo://``, ``open-mmlab://`` and ``mmcls://`` loaders call too)
    loads through ``torch.hub.load_state_dict_from_url``, whose
    ``weights_only`` defaults to False. Downloads go to torch's hub cache
    as before.
    """
    with checkpoint_globals():
        return torch.hub.load_state_dict_from_url(
            url,
            model_dir=model_dir,
            map_location=map_location,
            progress=progress,
            check_hash=check_hash,
            file_name=file_name or _cache_file_name(url),
            weights_only=True)


def load_urls_weights_only() -> None:
    """Make mmengine's URL loader :func:`load_url_weights_only`."""
    from mmengine.runner import checkpoint
    checkpoint.load_url = load_url_weights_only
