# Copyright (c) OpenMMLab. All rights reserved.
"""Peak activation memory, counted tensor by tensor on any device."""
from typing import Callable

import torch.nn as nn


def peak_activation_memory(model: nn.Module, fn: Callable[[], object]) -> int:
    """Run ``fn()`` once and return, in bytes, the peak memory of the
    tensors it creates: activations, saved tensors and temporaries, not the
    parameters, buffers, gradients or optimizer states of ``model``.

    Counted with PyTorch's ``MemTracker`` as tensors are created and freed,
    so neither an allocator's cache nor other processes distort it (on the
    CPU, resident-set sizes do). Gradients created by ``fn`` count as
    gradients, so for activation memory alone call it once before, and keep
    the gradients (``zero_grad(set_to_none=False)``).
    """
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType
    tracker = MemTracker()
    tracker.track_external(model)
    with tracker:
        fn()
    owned = (_MemRefType.PARAM, _MemRefType.BUFFER, _MemRefType.GRAD,
             _MemRefType.OPT)
    return sum(stats['Total'] - sum(stats.get(kind, 0) for kind in owned)
               for stats in tracker.get_tracker_snapshot('peak').values())
