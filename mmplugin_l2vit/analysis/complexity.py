# Copyright (c) OpenMMLab. All rights reserved.
"""Count multiply-accumulates, attention matmuls included.

Module-hook counters (mmcv's, mmengine's) see only convolutions and linear
layers, so they miss the matmuls that make up linear attention. This uses
PyTorch's dispatcher-level ``FlopCounterMode``, which sees every matmul,
bmm, einsum, convolution and linear, and adds the CPU flash kernel of
``scaled_dot_product_attention`` that it does not know by itself.
"""
from collections import Counter
from typing import Callable, Dict

import torch
from torch.utils.flop_counter import (FlopCounterMode,
                                      sdpa_backward_flop_count,
                                      sdpa_flop_count)

_aten = torch.ops.aten


# FlopCounterMode hands custom formulas the shapes of the arguments.
def _cpu_flash_attention_flops(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_attention_backward_flops(grad_out, query, key, value, *args,
                                        **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


_EXTRA_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu:
    _cpu_flash_attention_flops,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward:
    _cpu_flash_attention_backward_flops,
}


def count_macs_of(fn: Callable[[], object]) -> Dict[str, int]:
    """Run ``fn()`` once and count the MACs of everything it computes
    (backward passes included) by operator.

    Returns:
        dict: ``{'total': MACs, '<aten op>': MACs, ...}``; a MAC is one
        multiply plus one add (half the FLOPs).
    """
    with FlopCounterMode(display=False,
                         custom_mapping=_EXTRA_FORMULAS) as counter:
        fn()
    by_op = Counter()
    for op, flops in counter.get_flop_counts()['Global'].items():
        by_op[str(op)] += flops // 2
    return dict(total=sum(by_op.values()), **by_op)


@torch.no_grad()
def count_macs(model: torch.nn.Module, *inputs, **kwargs) -> Dict[str, int]:
    """The MACs of one inference call ``model(*inputs, **kwargs)``; see
    :func:`count_macs_of`."""
    return count_macs_of(lambda: model(*inputs, **kwargs))
