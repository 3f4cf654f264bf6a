# Copyright (c) OpenMMLab. All rights reserved.
"""Memory-frugal training (layers/frugal_autograd.py): every recomputed
step's gradients equal autograd's, whole backbones train as on the plain
path (gradients, BatchNorm statistics, with_cp, mixed precision, compile),
and a block keeps far fewer bytes for its backward pass."""
import importlib

import pytest
import torch
import torch._dynamo
import torch.nn as nn
import torch.nn.functional as F
from conftest import SMALL_ARCHS, randomise_zero_init

import mmplugin_l2vit
from mmplugin_l2vit.analysis import count_macs_of, peak_activation_memory
from mmplugin_l2vit.models.backbones.flatten_cswin import CSwinBlock
from mmplugin_l2vit.models.backbones.flatten_pvt import (ConvMlp,
                                                         PVTFocusedAttention)
from mmplugin_l2vit.models.backbones.flatten_swin import SwinFocusedAttention
from mmplugin_l2vit.models.backbones.l2vit import (LinearGlobalBlock,
                                                   LocalWindowBlock)
from mmplugin_l2vit.models.layers import (
    LePEAttention, LePEFocusedLinearAttention, LocalConcentrationModule, Mlp,
    ReLULinearAttention, ShiftedWindowAttention, UnmaskedWindowAttention)
from mmplugin_l2vit.models.layers.frugal_autograd import (
    channelwise_mlp, frugal_autograd_applies, normed_linear, plain_autograd,
    recompute, recompute_then_linear)

# Not a multiple of any window, patch or stripe size: stage maps of 25x33,
# 13x17, 7x9 and 4x5, so windows are padded and shifted masks built.
IMAGE_HW = (100, 132)
# A token map of 5x7 for the steps' gradchecks.
HW = (5, 7)


def _double(module):
    torch.manual_seed(0)
    module = module.double()
    for param in module.parameters():
        nn.init.normal_(param, std=0.3)
    return module


def _tokens(channels, hw=HW, batch=2):
    return torch.randn(
        batch,
        hw[0] * hw[1],
        channels,
        dtype=torch.float64,
        requires_grad=True)


def _step_cases():
    norm = _double(nn.LayerNorm(8))
    linear = _double(nn.Linear(8, 6))
    unbiased = _double(nn.Linear(8, 6, bias=False))
    scale = nn.Parameter(torch.rand(8, dtype=torch.float64) + 0.5)
    # 10 hidden channels in chunks of 3: the last chunk is narrower.
    wide = _double(nn.Linear(8, 10))
    narrow = _double(nn.Linear(10, 6, bias=False))
    scale10 = nn.Parameter(torch.rand(10, dtype=torch.float64) + 0.5)
    mlp = _double(Mlp(8, 16))
    conv_mlp = _double(ConvMlp(8, 16))
    lcm = _double(LocalConcentrationModule(8, kernel_size=3))
    relu = _double(ReLULinearAttention(8, 2, denominator_floor=0.1))
    swin_fla = _double(SwinFocusedAttention(8, 2, HW, 'bilinear'))
    pvt_fla = _double(PVTFocusedAttention(8, 2, (3, 3), 'bicubic'))
    lepe_fla = _double(LePEFocusedLinearAttention(8, 2, HW, 'bilinear'))
    window = _double(UnmaskedWindowAttention(8, 2, window_size=3))
    shifted = _double(ShiftedWindowAttention(8, 2, 3, shift_size=1))
    cswin = _double(
        CSwinBlock(
            8,
            [LePEAttention(4, 1, (None, 2)),
             LePEAttention(4, 1, (2, None))], 2., 0.))
    return {
        'recompute':
        lambda x: recompute(
            lambda t: torch.tanh(t) * scale, x, owners=(scale, )),
        'recompute_then_linear':
        lambda x: recompute_then_linear(
            lambda t: torch.sigmoid(t) * scale,
            x,
            linear=linear,
            owners=(scale, )),
        'recompute_then_linear_no_bias':
        lambda x: recompute_then_linear(torch.sin, x, linear=unbiased),
        'normed_linear':
        lambda x: normed_linear(x, linear, norm),
        'mlp':
        lambda x: mlp(x, norm=norm),
        'conv_mlp':
        lambda x: conv_mlp(x, HW, norm=norm),
        'conv_mlp_no_norm':
        lambda x: conv_mlp(x, HW),
        'channelwise_mlp':
        lambda x: channelwise_mlp(
            x,
            wide,
            lambda hidden, channels: torch.tanh(hidden) * scale10[channels or
                                                                  slice(None)],
            narrow,
            norm,
            owners=(scale10, ),
            chunks=4),
        'lcm':
        lambda x: lcm(x, HW, norm=norm),
        'relu_linear_attention':
        lambda x: relu(x, norm=norm),
        'swin_focused_attention':
        lambda x: swin_fla(x, HW, norm=norm),
        'pvt_focused_attention':
        lambda x: pvt_fla(x, HW, norm=norm),
        'lepe_focused_attention':
        lambda x: lepe_fla(x, x * 2, x.tanh(), HW),
        'window_attention':
        lambda x: window(x, HW, norm=norm),
        'shifted_window_attention':
        lambda x: shifted(x, HW, norm=norm),
        'cswin_branches':
        lambda x: cswin.attention(x, HW, norm=norm),
    }


STEPS = sorted(_step_cases())


@pytest.mark.parametrize('case', STEPS)
def test_step_gradcheck(case):
    """Each wired step's custom backward (recompute, then differentiate)
    is autograd's, checked numerically in float64: inputs and every
    parameter the step reads."""
    function = _step_cases()[case]
    x = _tokens(8)
    # Frugal on the analytic side (grad mode on, parameters requiring
    # grad): the gradients checked are those of the recomputation.
    assert torch.autograd.gradcheck(
        function, (x, ), nondet_tol=1e-12, fast_mode=True)


@pytest.mark.parametrize('case', STEPS)
def test_step_matches_plain_autograd(case):
    """Output, input gradient and parameter gradients of each step equal
    the plain path's."""
    cases = _step_cases()
    function = cases[case]
    params = sorted({id(p): p for p in _all_params(function)}.values(), key=id)

    def run():
        torch.manual_seed(1)
        x = _tokens(8)
        out = function(x)
        weights = torch.randn_like(out)
        grads = torch.autograd.grad(
            (out * weights).sum(), [x, *params], allow_unused=True)
        return out.detach(), grads

    out, grads = run()
    with plain_autograd():
        plain_out, plain_grads = run()
    torch.testing.assert_close(out, plain_out, rtol=1e-12, atol=1e-12)
    for grad, plain_grad in zip(grads, plain_grads):
        assert (grad is None) == (plain_grad is None)
        if grad is not None:
            torch.testing.assert_close(
                grad, plain_grad, rtol=1e-10, atol=1e-12)


def _all_params(function):
    """The parameters reachable from a case's closure."""
    params = []
    for cell in function.__closure__ or ():
        value = cell.cell_contents
        if isinstance(value, nn.Module):
            params += list(value.parameters())
        elif isinstance(value, nn.Parameter):
            params.append(value)
    return params


def _backbone(type_name, dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    model = getattr(mmplugin_l2vit, type_name)(SMALL_ARCHS[type_name],
                                               **kwargs)
    model.init_weights()
    randomise_zero_init(model)
    return model.to(dtype).train()


def _training_step(model, x, context=None):
    """Outputs, parameter gradients and input gradient of one step whose
    loss weighs every output element differently."""
    model.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    with context or torch.autocast('cpu', enabled=False):
        outs = model(x)
        loss = sum((o.float() *
                    torch.linspace(-1, 1, o.numel(), dtype=torch.float32).to(
                        o.device).view_as(o)).sum() for o in outs)
    loss.backward()
    grads = {
        # A compiled model's names start with '_orig_mod.'.
        name.replace('_orig_mod.', ''):
        p.grad.clone()
        for name, p in model.named_parameters() if p.grad is not None
    }
    return [o.detach() for o in outs], grads, x.grad


def _assert_steps_match(ours, plain, rtol, atol):
    outs, grads, x_grad = ours
    plain_outs, plain_grads, plain_x_grad = plain
    assert grads.keys() == plain_grads.keys()
    for out, plain_out in zip(outs, plain_outs):
        torch.testing.assert_close(out, plain_out, rtol=rtol, atol=atol)
    for name, grad in grads.items():
        reference = plain_grads[name]
        error = (grad - reference).norm() / reference.norm().clamp_min(1e-30)
        assert error <= rtol, f'{name}: relative error {error}'
    error = (x_grad - plain_x_grad).norm() / plain_x_grad.norm()
    assert error <= rtol, f'input gradient: relative error {error}'


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_backbone_gradients_match_plain_float64(type_name):
    """Every parameter's gradient and the input's gradient equal the plain
    path's to 1e-10 (relative, float64) at a map size that is not a
    multiple of the windows."""
    model = _backbone(type_name)
    x = torch.randn(2, 3, *IMAGE_HW, dtype=torch.float64)
    ours = _training_step(model, x)
    with plain_autograd():
        plain = _training_step(model, x)
    assert len(ours[1]) == sum(p.requires_grad for p in model.parameters())
    _assert_steps_match(ours, plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_backbone_gradients_match_plain_float32_and_bf16(type_name):
    """float32: the plain path's gradients within float32 rounding; bf16
    autocast: finite, and close to the plain path under autocast."""
    model = _backbone(type_name, torch.float32)
    x = torch.randn(1, 3, *IMAGE_HW)
    ours = _training_step(model, x)
    with plain_autograd():
        plain = _training_step(model, x)
    # Sums run in other orders (PVT's MLPs sum their input's gradient over
    # chunks of hidden channels); the focusing temperature's gradient, a
    # sum over all tokens that largely cancels, amplifies that rounding to
    # ~1.5e-4 (float64 agrees to 1e-10).
    _assert_steps_match(ours, plain, rtol=5e-4, atol=1e-5)

    def autocast():
        return torch.autocast('cpu', dtype=torch.bfloat16)

    ours = _training_step(model, x, autocast())
    with plain_autograd():
        plain = _training_step(model, x, autocast())
    for grad in ours[1].values():
        assert torch.isfinite(grad).all()
    _assert_steps_match(ours, plain, rtol=5e-2, atol=5e-2)


def test_linear_attention_sums_stay_float32_under_bf16_autocast(monkeypatch):
    """The recomputation restores autocast, and the attention's sums run
    in float32 in it as in the forward pass."""
    module = importlib.import_module(
        'mmplugin_l2vit.models.layers.relu_linear_attention')
    summary = module.relu_key_value_summary
    seen = []

    def spy(k, v, kv_scale):
        seen.append((torch.is_grad_enabled(), k.dtype, v.dtype))
        return summary(k, v, kv_scale)

    monkeypatch.setattr(module, 'relu_key_value_summary', spy)
    attn = ReLULinearAttention(16, 2)
    x = torch.randn(1, 49, 16, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(x.grad).all()
    # The forward (not recorded) and the recomputation (recorded).
    assert seen == [(False, torch.float32, torch.float32),
                    (True, torch.float32, torch.float32)]


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_batchnorm_statistics_counted_once(type_name):
    """A frugal training step leaves every buffer (BatchNorm running
    statistics and batch counts) as the plain step does."""
    x = torch.randn(2, 3, *IMAGE_HW, dtype=torch.float64)
    ours = _backbone(type_name)
    plain = _backbone(type_name)
    _training_step(ours, x)
    with plain_autograd():
        _training_step(plain, x)
    for (name, buffer), reference in zip(ours.named_buffers(),
                                         plain.buffers()):
        torch.testing.assert_close(
            buffer, reference, rtol=1e-12, atol=0, msg=name)


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_with_cp_on_top_gives_the_same_gradients(type_name):
    """Gradient checkpointing over the frugal steps: the plain path's
    gradients (float64)."""
    x = torch.randn(1, 3, *IMAGE_HW, dtype=torch.float64)
    ours = _training_step(_backbone(type_name, with_cp=True), x)
    with plain_autograd():
        plain = _training_step(_backbone(type_name), x)
    _assert_steps_match(ours, plain, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_memory_and_flop_counters_follow_the_recomputation(type_name, with_cp):
    """The benchmark's train mode counts a step under MemTracker and
    FlopCounterMode, whose module trackers hook the inputs of every module
    call, the recomputed ones included (they failed on leaf inputs)."""
    model = _backbone(type_name, torch.float32, with_cp=with_cp)
    x = torch.randn(1, 3, 64, 64)

    def step():
        sum(o.mean() for o in model(x)).backward()
        model.zero_grad(set_to_none=False)

    assert count_macs_of(step)['total'] > 0
    assert peak_activation_memory(model, step) > 0


def _saved_bytes(fn):
    """Bytes of the distinct storages autograd keeps for the backward pass
    of ``fn()``, parameters left out."""
    storages = {}

    def pack(tensor):
        if not isinstance(tensor, nn.Parameter):
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def _block_cases(channels):
    from mmplugin_l2vit.models.backbones.flatten_pvt import FLattenPVTBlock
    from mmplugin_l2vit.models.backbones.flatten_swin import FLattenSwinBlock
    hw = (14, 14)
    return {
        # (block, hw, channel maps kept per token at most)
        'l2vit_global': (LinearGlobalBlock(channels, 2, 4., 0., 100.), hw, 11),
        'l2vit_local': (LocalWindowBlock(channels, 2, 7, 4., 0.), hw, 10),
        'flatten_pvt': (FLattenPVTBlock(channels, 2, 8., hw, 0., False,
                                        'bilinear'), hw, 13),
        'flatten_pvtv2': (FLattenPVTBlock(channels, 2, 8., hw, 0., True,
                                          'bilinear'), hw, 13),
        'flatten_swin':
        (FLattenSwinBlock(channels,
                          SwinFocusedAttention(channels, 2, hw, 'bilinear'),
                          4., 0.), hw, 9),
    }


@pytest.mark.parametrize('case', [
    'l2vit_global', 'l2vit_local', 'flatten_pvt', 'flatten_pvtv2',
    'flatten_swin'
])
def test_block_keeps_few_maps_for_backward(case):
    """What a training block keeps for backward, counted with
    saved_tensors_hooks, is at most its inputs and projections: ``x`` per
    branch, ``qkv`` (3C) and the MLP's hidden layer (e.g. 11 maps of C
    channels for L²ViT's global block: the CPE's input, the attention's,
    LCM's and MLP's ``x``, qkv, hidden), under the plain path's."""
    channels = 32
    block, hw, maps = _block_cases(channels)[case]
    block.train()
    x = torch.randn(2, hw[0] * hw[1], channels, requires_grad=True)
    map_bytes = x.numel() * x.element_size()
    _, saved = _saved_bytes(lambda: block(x, hw))
    with plain_autograd():
        _, plain = _saved_bytes(lambda: block(x, hw))
    # Per-token statistics (norms, normalisers) are well under one map.
    assert saved <= (maps + 1) * map_bytes
    assert saved < 0.6 * plain


@pytest.fixture
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_compiled_training_is_one_graph_on_the_plain_path(
        type_name, _fresh_dynamo):
    """Under torch.compile the steps run plainly (the compiler plans its
    own memory): one graph for the training forward, no graph break, and
    the eager frugal step's gradients."""
    model = _backbone(type_name, torch.float32)
    x = torch.randn(1, 3, *IMAGE_HW)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    eager = _training_step(model, x)
    ours = _training_step(compiled, x)
    # float32 sums in another order: FLatten's scalar ``scale`` gathers
    # its gradient over every token (2e-4 relative seen; float64 matches
    # to 1e-10 above).
    _assert_steps_match(ours, eager, rtol=1e-3, atol=1e-5)


def test_frugal_only_where_autograd_records():
    x = torch.randn(3, requires_grad=True)
    assert frugal_autograd_applies(x)
    assert not frugal_autograd_applies(x.detach())
    with torch.no_grad():
        assert not frugal_autograd_applies(x)
    with plain_autograd():
        assert not frugal_autograd_applies(x)
    assert frugal_autograd_applies(None, x)
    lcm = LocalConcentrationModule(4, 3)
    tokens = torch.randn(1, 9, 4, requires_grad=True)
    assert 'Recompute' in type(lcm(tokens, (3, 3)).grad_fn).__name__
    with plain_autograd():
        assert 'Recompute' not in type(lcm(tokens, (3, 3)).grad_fn).__name__


@pytest.mark.parametrize('backward_chunks', [1, 4])
def test_hooks_on_the_linear_layer_see_every_training_call(backward_chunks):
    mlp = Mlp(4, 8, backward_chunks)
    tokens = torch.randn(2, 9, 4, requires_grad=True)
    expected = mlp.fc2(mlp.act(mlp.fc1(tokens)))
    seen = []
    handle = mlp.fc2.register_forward_hook(
        lambda module, args, output: seen.append(output))
    out = mlp(tokens)
    handle.remove()
    assert len(seen) == 1 and seen[0] is out
    torch.testing.assert_close(out, expected)
    frugal = ('Recompute', 'ChannelwiseMlp')[backward_chunks > 1]
    assert frugal not in type(out.grad_fn).__name__
    assert frugal in type(mlp(tokens).grad_fn).__name__


def test_channelwise_mlp_backward_holds_a_chunk_of_the_hidden_layer():
    """The backward pass's transient (the step's maps and gradients) is a
    chunk's, and no hidden-sized gradient is held whole: with 4 chunks of
    a 16x wide hidden layer the step's peak falls by more than a quarter
    (what stays: the kept hidden layer, the forward's GELU output and a
    chunk's maps)."""
    torch.manual_seed(0)
    layers = nn.ModuleDict(
        dict(
            norm=nn.LayerNorm(8),
            first=nn.Linear(8, 128),
            second=nn.Linear(128, 8)))
    x = torch.randn(2, 196, 8, requires_grad=True)

    def peak(chunks):

        def step():
            out = channelwise_mlp(
                x,
                layers['first'],
                lambda hidden, channels: F.gelu(hidden),
                layers['second'],
                layers['norm'],
                chunks=chunks)
            out.square().sum().backward()

        step()
        return peak_activation_memory(layers, step)

    hidden_bytes = 2 * 196 * 128 * 4
    whole, chunked = peak(1), peak(4)
    assert whole > 3 * hidden_bytes
    assert chunked < 0.75 * whole
