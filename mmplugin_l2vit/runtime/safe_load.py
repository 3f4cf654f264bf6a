# Copyright (c) OpenMMLab. All rights reserved.
"""Keep ``torch.load(weights_only=True)`` working for OpenMMLab checkpoints.

Since torch 2.6 ``torch.load`` only unpickles allow-listed globals, while
mmengine 0.10.7 calls it without ``weights_only``. Checkpoints written by an
mmengine Runner hold a ``MessageHub`` (``HistoryBuffer`` objects and numpy
scalars and arrays), and the official L²ViT/FLatten release files hold an
``argparse.Namespace`` (L²ViT) or a yacs ``CfgNode`` (FLatten). Rather
than turning weights-only loading off, this module allow-lists exactly
those classes, so a pickle that would run any other code is still refused.
"""
import argparse
import importlib
from collections import OrderedDict

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
