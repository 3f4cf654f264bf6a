# Copyright (c) OpenMMLab. All rights reserved.
"""Keep ``torch.load(weights_only=True)`` working for OpenMMLab checkpoints.

Since torch 2.6 ``torch.load`` only unpickles allow-listed globals, while
mmengine 0.10.7 calls it without ``weights_only``. Checkpoints written by an
mmengine Runner hold a ``MessageHub`` (``HistoryBuffer`` objects and numpy
scalars and arrays), and the official L²ViT/FLatten release files hold an
``argparse.Namespace`` (L²ViT) or a yacs ``CfgNode`` (FLatten). Rather
than turning weights-only loading off, this module allow-lists exactly
those classes, so a pickle that would run any other code is still refused.
Checkpoints given as URLs (``init_cfg=dict(type='Pretrained',
checkpoint='https://...')``) are loaded the same way.
"""
import argparse
import hashlib
import importlib
import os
import os.path as osp
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


def checkpoint_safe_globals():
    """Return the ``(callable, pickled path)`` pairs to allow-list."""
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
    return pairs


def allow_checkpoint_globals() -> None:
    """Allow-list :func:`checkpoint_safe_globals` for weights-only loads.

    Does nothing on torch versions without ``add_safe_globals`` (< 2.4),
    which load without the restriction anyway.
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals(checkpoint_safe_globals())


def _cached_download(url: str, model_dir: Optional[str] = None) -> str:
    """Download ``url`` once into torch's checkpoint cache; return the path.

    The file is named after the URL's last path component, or after a hash
    of the URL where there is none (share links such as
    ``https://cloud.tsinghua.edu.cn/f/<id>/?dl=1``).
    """
    from torch.hub import download_url_to_file, get_dir
    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    name = osp.basename(urlparse(url).path.rstrip('/'))
    if not name.endswith(('.pth', '.pt', '.ckpt', '.bin')):
        digest = hashlib.sha256(url.encode()).hexdigest()[:12]
        name = f'{name or "checkpoint"}-{digest}.pth'
    path = osp.join(model_dir, name)
    if not osp.exists(path):
        # download_url_to_file writes a temporary file and renames it.
        download_url_to_file(url, path, progress=False)
    return path


def load_from_http_weights_only(filename, map_location=None, model_dir=None):
    """mmengine's ``http(s)://`` checkpoint loader, weights-only.

    mmengine loads URLs through ``torch.hub.load_state_dict_from_url``,
    whose ``weights_only`` defaults to False: a checkpoint from the internet
    could run code. This loader downloads on local rank 0 first (the others
    wait), then loads with ``torch.load``'s weights-only default.
    """
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _cached_download(filename, model_dir)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = _cached_download(filename, model_dir)
    return torch.load(path, map_location=map_location, weights_only=True)


def load_urls_weights_only() -> None:
    """Register :func:`load_from_http_weights_only` for http(s) URLs."""
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(
        prefixes=('http://', 'https://'),
        loader=load_from_http_weights_only,
        force=True)
