# Copyright (c) OpenMMLab. All rights reserved.
"""The precision policy of the linear attentions: their sums over all tokens
run in at least float32, also under autocast, since at detection sizes they
overflow half precision."""
import functools

import torch


def sums_in_float32(kernel=None, *, keep_float32: bool = False):
    """Run ``kernel(x, ...)`` with its tensor arguments in at least float32
    and autocast off. The result comes back in the dtype of the values
    (``kernel(q, k, v, ...)``), or in the float32 it was computed in with
    ``keep_float32`` (for features that feed another such kernel)."""
    if kernel is None:
        return functools.partial(sums_in_float32, keep_float32=keep_float32)

    @functools.wraps(kernel)
    def wrapper(*args, **kwargs):
        dtype = torch.promote_types(args[0].dtype, torch.float32)
        with torch.autocast(device_type=args[0].device.type, enabled=False):
            out = kernel(
                *[
                    a.to(torch.promote_types(a.dtype, dtype)) if isinstance(
                        a, torch.Tensor) else a for a in args
                ], **kwargs)
        return out if keep_float32 else out.to(args[2].dtype)

    return wrapper
