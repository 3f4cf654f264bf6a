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
from torch.utils.flop_counter import (FlopCounterMode, conv_flop_count,
                                      sdpa_backward_flop_count,
                                      sdpa_flop_count)

_aten = torch.ops.aten


# FlopCounterMode hands custom formulas the shapes of tensor arguments.
def _cpu_flash_attention_flops(query, key, value, *args, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_attention_backward_flops(grad_out, query, key, value, *args,
                                        **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _convolution_backward_flops(grad_out, x, weight, bias_sizes, stride,
                                padding, dilation, transposed,
                                output_padding, groups, output_mask, *args,
                                **kwargs) -> int:
    # Each requested gradient (input, weight) costs one forward: PyTorch's
    # own formula ignores ``groups`` and counts a depthwise convolution's
    # backward as if it were dense.
    forward = conv_flop_count(x, weight, grad_out, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


_EXTRA_FORMULAS = {
    _aten.convolution_backward: _convolution_backward_flops,
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
