# Copyright (c) OpenMMLab. All rights reserved.
"""The depthwise convolutions' CPU training path: aten's forward and input
gradient, its own weight gradient, taken only where it was measured."""
import pytest
import torch
import torch.nn as nn
from conftest import SMALL_ARCHS

from mmplugin_l2vit.models.layers import depthwise_conv
from mmplugin_l2vit.models.layers.depthwise_conv import (
    DepthwiseConv2d, _DepthwiseConv2dFunction, depthwise_weight_grad)
from mmplugin_l2vit.registry import MODELS


def aten_weight_grad(x, grad_out, weight):
    padding = [weight.shape[-2] // 2, weight.shape[-1] // 2]
    return torch.ops.aten.convolution_backward(grad_out, x, weight, None,
                                               [1, 1], padding, [1, 1], False,
                                               [0, 0], x.shape[1],
                                               [False, True, False])[1]


@pytest.mark.parametrize('kernel_size', [3, 5, 7])
@pytest.mark.parametrize('bias', [True, False])
def test_function_gradients_are_exact(kernel_size, bias):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(
        3,
        1,
        kernel_size,
        kernel_size,
        dtype=torch.float64,
        requires_grad=True)
    bias = torch.randn(
        3, dtype=torch.float64, requires_grad=True) if bias else None
    padding = (kernel_size // 2, kernel_size // 2)
    assert torch.autograd.gradcheck(
        lambda *t: _DepthwiseConv2dFunction.apply(*t, padding),
        (x, weight, bias))


@pytest.mark.parametrize('band_elements', [1, 40, 1 << 18])
def test_weight_grad_by_bands_equals_aten(monkeypatch, band_elements):
    # One row per band, a few rows, the whole map in one band.
    monkeypatch.setattr(depthwise_conv, 'WEIGHT_GRAD_BAND_ELEMENTS',
                        band_elements)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 11, 7, dtype=torch.float64)
    grad_out = torch.randn(2, 4, 11, 7, dtype=torch.float64)
    weight = torch.empty(4, 1, 5, 5, dtype=torch.float64)
    ours = depthwise_weight_grad(x, grad_out, (5, 5), (2, 2))
    torch.testing.assert_close(
        ours, aten_weight_grad(x, grad_out, weight), rtol=1e-12, atol=1e-12)


def twins(channels=8, kernel_size=7):
    ours = DepthwiseConv2d(channels, kernel_size)
    plain = nn.Conv2d(
        channels,
        channels,
        kernel_size,
        padding=kernel_size // 2,
        groups=channels)
    plain.load_state_dict(ours.state_dict())
    return ours, plain


def test_float32_training_matches_plain_conv():
    ours, plain = twins()
    x = torch.randn(2, 8, 20, 13).contiguous(memory_format=torch.channels_last)
    assert ours.uses_cpu_weight_grad(x)
    grad_out = torch.randn(2, 8, 20, 13)
    results = []
    for conv in (ours, plain):
        inp = x.clone().requires_grad_()
        out = conv(inp)
        out.backward(grad_out)
        results.append((out, inp.grad, conv.weight.grad, conv.bias.grad))
    (out, *grads), (plain_out, *plain_grads) = results
    assert torch.equal(out, plain_out)
    # Sums of hundreds of float32 products, in another order.
    for grad, plain_grad in zip(grads, plain_grads):
        torch.testing.assert_close(
            grad, plain_grad, rtol=1e-5, atol=1e-6 * plain_grad.abs().max())


def _channels_last_input(channels, dtype):
    x = torch.randn(2, channels, 9, 7, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last).requires_grad_()


def _assert_same_gradients(out, reference, tensors, dtype):
    """``out`` equals ``reference`` and so do their gradients with respect
    to ``tensors``; returns ours."""
    assert torch.equal(out, reference)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, tensors, grad_out)
    expected = torch.autograd.grad(reference, tensors, grad_out)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for grad, reference_grad in zip(grads, expected):
        torch.testing.assert_close(
            grad, reference_grad, rtol=tolerance, atol=tolerance)
    return grads


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_filters_shared_by_groups_of_channels(dtype):
    # FLatten's DWC: 3 heads of 4 channels, one set of 4 filters for all.
    torch.manual_seed(0)
    conv = DepthwiseConv2d(4, 5).to(dtype)
    x = _channels_last_input(12, dtype)
    assert conv.uses_cpu_weight_grad(x) == (dtype == torch.float32)
    per_group = torch.cat([
        nn.functional.conv2d(
            x[:, 4 * g:4 * (g + 1)],
            conv.weight,
            conv.bias,
            padding=2,
            groups=4) for g in range(3)
    ], 1)
    _assert_same_gradients(
        conv(x, shared_by=3), per_group, (x, conv.weight, conv.bias), dtype)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_a_slice_of_the_channels(dtype):
    # PVTv2's MLP recomputes its hidden map a chunk of channels at a time.
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 3).to(dtype)
    x = _channels_last_input(3, dtype)
    reference = nn.functional.conv2d(
        x, conv.weight[2:5], conv.bias[2:5], padding=1, groups=3)
    _, weight_grad, bias_grad = _assert_same_gradients(
        conv(x, channels=slice(2, 5)), reference, (x, conv.weight, conv.bias),
        dtype)
    # The other filters get no gradient.
    assert not weight_grad[[0, 1, 5]].any() and not bias_grad[[0, 1, 5]].any()


@pytest.mark.parametrize('context', [
    'no_grad', 'float64', 'frozen_weight', 'autocast', 'tracing', 'onnx',
    'compiling'
])
def test_plain_conv_outside_measured_training(monkeypatch, context):
    conv = DepthwiseConv2d(4, 3)
    x = torch.randn(1, 4, 5, 5)
    if context == 'no_grad':
        with torch.no_grad():
            assert not conv.uses_cpu_weight_grad(x)
        return
    if context == 'float64':
        assert not conv.double().uses_cpu_weight_grad(x.double())
        return
    if context == 'frozen_weight':
        conv.requires_grad_(False)
        assert not conv.uses_cpu_weight_grad(x)
        return
    if context == 'autocast':
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not conv.uses_cpu_weight_grad(x)
        return
    predicate = dict(
        tracing='torch.jit.is_tracing',
        onnx='torch.onnx.is_in_onnx_export',
        compiling='torch.compiler.is_compiling')[context]
    assert conv.uses_cpu_weight_grad(x)
    monkeypatch.setattr(predicate, lambda: True)
    assert not conv.uses_cpu_weight_grad(x)


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match='odd kernel_size, got 4'):
        DepthwiseConv2d(8, 4)


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_every_local_branch_trains_through_it(type_name, monkeypatch):
    """Each family's depthwise convolutions take the path in training, and
    the backbone's gradients match plain convolutions'."""
    backbone = MODELS.build(dict(type=type_name, arch=SMALL_ARCHS[type_name]))
    backbone.init_weights()
    backbone.train()
    convs = [m for m in backbone.modules() if isinstance(m, DepthwiseConv2d)]
    assert convs
    x = torch.randn(1, 3, 72, 56)

    def grads():
        backbone.zero_grad()
        sum(out.square().mean() for out in backbone(x)).backward()
        return {n: p.grad.clone() for n, p in backbone.named_parameters()}

    # Calls that autograd records (a frugal step's forward is not recorded,
    # its recomputation in the backward pass is).
    taken = {}

    def record(conv, inputs, out):
        if torch.is_grad_enabled():
            taken.setdefault(conv,
                             []).append(conv.uses_cpu_weight_grad(inputs[0]))

    for conv in convs:
        conv.register_forward_hook(record)
    # BatchNorm in training normalises by the batch: reruns are equal.
    ours = grads()
    assert len(taken) == len(convs)
    assert all(all(calls) for calls in taken.values())
    # aten's convolution and its autograd formulas instead.
    monkeypatch.setattr(DepthwiseConv2d, 'uses_cpu_weight_grad',
                        lambda conv, x: False)
    plain = grads()
    for name, grad in ours.items():
        torch.testing.assert_close(
            grad, plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_weight_grad_path_is_not_a_plain_conv_call(monkeypatch):
    """The backward pass computes the weight gradient by bands, not by
    aten's depthwise weight gradient."""
    calls = []
    monkeypatch.setattr(
        depthwise_conv, 'depthwise_weight_grad',
        lambda *args: calls.append(args[2]) or depthwise_weight_grad(*args))
    conv = DepthwiseConv2d(4, 5)
    conv(torch.randn(1, 4, 9, 9)).sum().backward()
    assert calls == [torch.Size([5, 5])]
