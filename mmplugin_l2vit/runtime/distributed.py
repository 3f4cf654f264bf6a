# Copyright (c) OpenMMLab. All rights reserved.
"""Let mmengine 0.10.7 train distributed on CPU-only hosts (gloo).

``--launcher pytorch`` fails there twice: ``_init_dist_pytorch`` calls
``torch.cuda.set_device`` unconditionally, and the Runner wraps the model
in ``DistributedDataParallel`` with ``device_ids=[LOCAL_RANK]``, which DDP
rejects for a CPU module. Without CUDA the patched initialiser uses gloo
(an ``nccl`` request is switched, with a warning) and skips the device
call; DDP gets no ``device_ids`` for CPU modules.

On every host, the process group is also destroyed at exit: torch 2.13
otherwise tears gloo's worker threads down during interpreter shutdown,
which now and then aborts a finished rank (``terminate called without an
active exception``, exit code -6) and fails the whole launch. With torch
2.14.1 a rank destroying its gloo group while a peer is still finishing
aborts the same way (2 launches in 6 on a loaded machine), so gloo ranks
first meet at a barrier (0 in 8 since).
"""
import atexit
import datetime
import functools
import logging
import os

import torch
import torch.distributed as torch_dist
from mmengine.logging import print_log

_EXIT_BARRIER_TIMEOUT = datetime.timedelta(seconds=60)


def _destroy_process_group():
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    if torch_dist.get_backend() == 'gloo':
        # Every rank reaches exit before any closes its connections: a
        # rank still finishing while a peer tears gloo down aborts
        # (torch 2.14.1, seen under load). A peer that died makes the
        # barrier fail (or time out) instead of hanging the exit.
        try:
            torch_dist.monitored_barrier(timeout=_EXIT_BARRIER_TIMEOUT)
        except RuntimeError:
            pass
    torch_dist.destroy_process_group()


def _patch_init_dist():
    from mmengine.dist import utils as dist_utils
    original = dist_utils._init_dist_pytorch
    if getattr(original, '_l2vit_cpu_fix', False):
        return

    @functools.wraps(original)
    def init_dist_pytorch(backend, init_backend='torch', **kwargs):
        atexit.register(_destroy_process_group)
        if torch.cuda.is_available() or init_backend != 'torch':
            return original(backend, init_backend, **kwargs)
        if backend == 'nccl':
            print_log('no CUDA device: using the gloo backend instead of '
                      'nccl', logger='current', level=logging.WARNING)
            backend = 'gloo'
        torch_dist.init_process_group(
            backend=backend,
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **kwargs)

    init_dist_pytorch._l2vit_cpu_fix = True
    dist_utils._init_dist_pytorch = init_dist_pytorch


def _patch_ddp_device_ids():
    from mmengine.model.wrappers import MMDistributedDataParallel
    original = MMDistributedDataParallel.__init__
    if getattr(original, '_l2vit_cpu_fix', False):
        return

    @functools.wraps(original)
    def __init__(self, module, detect_anomalous_params=False, **kwargs):
        on_cpu = all(not p.is_cuda for p in module.parameters())
        if on_cpu and kwargs.get('device_ids') is not None:
            kwargs['device_ids'] = None
        original(self, module, detect_anomalous_params, **kwargs)

    __init__._l2vit_cpu_fix = True
    MMDistributedDataParallel.__init__ = __init__


def allow_cpu_distributed() -> None:
    """Apply the fixes; safe to call more than once."""
    _patch_init_dist()
    _patch_ddp_device_ids()
