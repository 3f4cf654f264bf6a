# Copyright (c) OpenMMLab. All rights reserved.
"""``token_product`` (layers/tokens.py): the linear attentions' ``kᵀv``,
whose gradients come back token-major in eager training."""
import pytest
import torch

from mmplugin_l2vit.models.layers import split_heads
from mmplugin_l2vit.models.layers.tokens import token_product


def _heads(tokens=11, channels=6, heads=2, dtype=torch.float64, batch=2):
    """Head views of token-major ``(B, N, C)`` leaves, as the attentions
    pass them."""
    torch.manual_seed(0)
    leaves = [
        torch.randn(batch, tokens, channels, dtype=dtype, requires_grad=True)
        for _ in range(2)
    ]
    return leaves, [split_heads(t, heads) for t in leaves]


def test_forward_is_the_plain_product_bit_for_bit():
    _, (a, b) = _heads(tokens=97, channels=64, heads=2, dtype=torch.float32)
    product = token_product(a, b)
    assert product.shape == (2, 2, 32, 32)
    assert torch.equal(product, a.transpose(-2, -1) @ b)


def test_gradcheck_float64():
    torch.manual_seed(0)
    leaves = [
        torch.randn(2, 11, channels, dtype=torch.float64, requires_grad=True)
        for channels in (6, 8)
    ]
    assert torch.autograd.gradcheck(
        lambda x, y: token_product(split_heads(x, 2), split_heads(y, 2)),
        leaves)


def _token_gradients(product, batch):
    """The gradients that reach the (non-leaf) token tensors of ``a`` and
    ``b`` through ``product`` of their head views."""
    leaves, _ = _heads(batch=batch)
    tokens = [leaf * 1 for leaf in leaves]
    a, b = (split_heads(t, 2) for t in tokens)
    weight = torch.arange(18, dtype=torch.float64).view(2, 1, 3, 3)
    return torch.autograd.grad((product(a, b) * weight).sum(), tokens)


@pytest.mark.parametrize('batch', [1, 2])
def test_gradients_reach_the_tokens_token_major(batch):
    """The gradient of each token tensor has its channels innermost, as
    the tokens do; autograd's own product hands ``a`` the transpose of a
    ``(d, N)`` product, channel-major."""
    ours = _token_gradients(token_product, batch)
    plain = _token_gradients(lambda a, b: a.transpose(-2, -1) @ b, batch)
    assert [g.stride(-1) for g in ours] == [1, 1]
    assert plain[0].stride(-1) != 1
    for got, expected in zip(ours, plain):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_plain_product_where_not_measured_or_not_recorded():
    leaves, (a, b) = _heads()
    assert 'TokenProduct' in type(token_product(a, b).grad_fn).__name__
    with torch.no_grad():
        assert token_product(a, b).grad_fn is None
    detached = [t.detach() for t in (a, b)]
    assert token_product(*detached).grad_fn is None
    on_another_device = [
        t.detach().to('meta').requires_grad_() for t in leaves
    ]
    a, b = (split_heads(t, 2) for t in on_another_device)
    assert 'TokenProduct' not in type(token_product(a, b).grad_fn).__name__
