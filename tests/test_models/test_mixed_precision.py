# Copyright (c) OpenMMLab. All rights reserved.
"""Every backbone under bfloat16 autocast gives finite outputs and
gradients, close to float32's; the linear attention kernels sum over
tokens in float32."""
import pytest
import torch
from conftest import SMALL_ARCHS, randomise_zero_init

import mmplugin_l2vit
from mmplugin_l2vit.models.layers import (focused_linear_attention,
                                          relu_linear_attention)


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_bf16_autocast_close_to_float32(type_name):
    model = getattr(mmplugin_l2vit, type_name)(SMALL_ARCHS[type_name])
    model.init_weights()
    randomise_zero_init(model)
    model.train()
    x = torch.randn(2, 3, 256, 256)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
        loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    assert all(torch.isfinite(o).all() for o in outs)
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    with torch.no_grad():
        reference = model(x)
    for out, ref in zip(outs, reference):
        assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_bf16_autocast_at_1024(type_name):
    model = getattr(mmplugin_l2vit, type_name)(SMALL_ARCHS[type_name])
    model.init_weights()
    model.train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(torch.randn(1, 3, 1024, 1024))
    assert [tuple(o.shape[-2:]) for o in outs] == [(256, 256), (128, 128),
                                                   (64, 64), (32, 32)]
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.float().square().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert len(grads) > 10
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize('kernel,extra', [
    (relu_linear_attention, (torch.full((2, 1, 1), 0.2), 100.)),
    (focused_linear_attention, ()),
])
def test_kernels_sum_in_float32_under_autocast(kernel, extra):
    # 60k tokens: sums over them overflow bfloat16's precision badly.
    q, k, v = (torch.rand(1, 2, 60000, 32).bfloat16() for _ in range(3))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = kernel(q, k, v, *extra)
    assert out.dtype == torch.bfloat16
    expected = kernel(q.float(), k.float(), v.float(), *extra)
    torch.testing.assert_close(out, expected.bfloat16(), rtol=0, atol=0)
