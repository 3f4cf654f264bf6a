# Copyright (c) OpenMMLab. All rights reserved.
"""Memory-frugal training: keep a step's inputs, recompute the rest.

Autograd keeps whatever a backward formula reads, one tensor per operation
along an element-wise chain: FLatten's focusing function keeps about eight
``N x C`` maps for the queries and as many for the keys, an MLP keeps its
hidden layer before and after the GELU, a pre-norm block keeps both the
LayerNorm's input and its output. The functions below run such a step
without recording it, keep only its inputs, and in the backward pass run
the **same step function** again under autograd and differentiate it. No
formula is written twice, and the gradients are autograd's own: the
recomputation repeats the forward's operations on the same values.

- :func:`recompute` runs a step that ends in cheap operations (element-wise
  maps, depthwise convolutions, per-head products).
- :func:`recompute_then_linear` runs a step whose output feeds a linear
  layer, ``linear(step(*inputs))``: the layer's input, which autograd
  would keep, is recomputed as well; the layer's two gradient products are
  those autograd takes and the layer's forward product is never repeated.
  :func:`normed_linear` is the case of a pre-norm block: only the norm's
  input is kept.
- :func:`channelwise_mlp` runs ``second(step(first(norm(x))))`` for a step
  that treats each hidden channel alone (PVTv2's depthwise conv and
  GELU): it keeps ``x`` and the hidden layer, and its backward pass
  recomputes the step and takes both layers' gradients a chunk of hidden
  channels at a time, so that no hidden-sized gradient is ever whole.

They apply in eager training only (:func:`frugal_autograd_applies`): a
compiled graph plans its own memory, and tracing or export records the
plain operations. :func:`plain_autograd` forces the plain path (the
reference the tests compare with). Gradient checkpointing (``with_cp``)
works on top: its recomputation runs these functions again, which then
keep their inputs until their own backward.

The recomputation restores the forward's autocast state (on the inputs'
device), so a step recomputes in the precision it ran in, and BatchNorm
layers of a step's owners normalise as in the forward without updating
their running statistics a second time.
"""
import contextlib
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .tokens import records_eagerly

# What a step reads besides its inputs: modules (all their parameters and
# buffers) or single parameters.
Owner = Union[nn.Module, torch.Tensor]

_plain_forced = False


@contextlib.contextmanager
def plain_autograd() -> Iterator[None]:
    """Within this context every step is recorded by autograd as written,
    keeping all its intermediates."""
    global _plain_forced
    previous, _plain_forced = _plain_forced, True
    try:
        yield
    finally:
        _plain_forced = previous


def frugal_autograd_applies(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether a step on ``tensors`` (its inputs and the parameters it
    reads) runs frugally: autograd records it (grad mode on, some tensor
    requires grad), eagerly (not compiling, tracing or exporting), outside
    :func:`plain_autograd`."""
    return not _plain_forced and records_eagerly(*tensors)


def _owned_parameters(owners: Sequence[Owner],
                      skip: Sequence[torch.Tensor] = ()):
    """The parameters of ``owners`` that require grad, each once, but
    ``skip``."""
    seen = {id(p) for p in skip}
    params = []
    for owner in owners:
        for param in (owner.parameters()
                      if isinstance(owner, nn.Module) else [owner]):
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                params.append(param)
    return tuple(params)


@contextlib.contextmanager
def _running_statistics_frozen(owners: Sequence[Owner]) -> Iterator[None]:
    """BatchNorm layers of ``owners`` normalise as before (by the batch in
    training, by the running statistics in eval) without updating them."""
    norms = [
        module for owner in owners if isinstance(owner, nn.Module)
        for module in owner.modules()
        if isinstance(module, _BatchNorm) and module.track_running_stats
    ]
    for norm in norms:
        norm.track_running_stats = False
    try:
        yield
    finally:
        for norm in norms:
            norm.track_running_stats = True


class _Step:
    """A step and what its recomputation needs: the parameters it reads,
    its owners and the autocast state of the forward."""

    def __init__(self, step: Callable, owners: Sequence[Owner],
                 params: Tuple[torch.Tensor, ...], device_type: str):
        self.step = step
        self.owners = owners
        self.params = params
        self.device_type = device_type
        self.autocast = torch.is_autocast_enabled(device_type)
        self.autocast_dtype = torch.get_autocast_dtype(device_type)

    def rerun(self, saved: Sequence[Optional[torch.Tensor]]):
        """Run the step again under autograd: ``(inputs, output, needed)``,
        ``needed`` telling whether the output's memory is read by the
        step's backward or is an input's (else the caller may free it once
        done with its values).

        The inputs that require grad are given to the step as views of
        fresh leaves, not as the leaves themselves: hooks that follow
        modules through the backward pass (``MemTracker``,
        ``FlopCounterMode``) register gradient hooks on module inputs,
        which fail on a leaf inside ``autograd.grad``.
        """
        with torch.enable_grad(), torch.autocast(
                self.device_type, dtype=self.autocast_dtype,
                enabled=self.autocast), _running_statistics_frozen(
                    self.owners), plain_autograd():
            inputs = [
                x.detach().requires_grad_().view_as(x)
                if _requires_grad(x) else x for x in saved
            ]
            kept = {_storage(x) for x in inputs if isinstance(x, torch.Tensor)}
            with torch.autograd.graph.saved_tensors_hooks(
                    lambda t: kept.add(_storage(t)) or t, lambda t: t):
                output = self.step(*inputs)
        return inputs, output, _storage(output) in kept

    def gradients(self, inputs, output, grad_output):
        """The gradients of ``inputs`` and of the parameters (None where
        none is needed) for ``grad_output`` of ``output``."""
        targets = [*inputs, *self.params]
        wanted = [t for t in targets if _requires_grad(t)]
        grads = [None] * len(wanted)
        if wanted and output.requires_grad:
            grads = torch.autograd.grad(
                output, wanted, grad_output, allow_unused=True)
        grads = iter(grads)
        return tuple(
            next(grads) if _requires_grad(t) else None for t in targets)


def _requires_grad(x) -> bool:
    return isinstance(x, torch.Tensor) and x.requires_grad


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _save(ctx, *tensors: Optional[torch.Tensor]) -> None:
    """``ctx.save_for_backward`` of the tensors among ``tensors``; where
    the others (None) were is remembered apart."""
    ctx.absent = [t is None for t in tensors]
    ctx.save_for_backward(*(t for t in tensors if t is not None))


def _saved(ctx):
    """The ``tensors`` given to :func:`_save`, None included."""
    saved = iter(ctx.saved_tensors)
    return [None if absent else next(saved) for absent in ctx.absent]


def _without_history(tensors):
    # Inside a Function's forward, a view of an input that requires grad
    # would claim to require grad too (with no history).
    return [None if t is None else t.detach() for t in tensors]


class _Recompute(torch.autograd.Function):

    @staticmethod
    def forward(ctx, step: _Step, num_inputs: int, *tensors):
        inputs = tensors[:num_inputs]
        ctx.step = step
        _save(ctx, *inputs)
        return step.step(*_without_history(inputs))

    @staticmethod
    def backward(ctx, grad_output):
        inputs, output, _ = ctx.step.rerun(_saved(ctx))
        return (None, None, *ctx.step.gradients(inputs, output, grad_output))


class _RecomputeThenLinear(torch.autograd.Function):

    @staticmethod
    def forward(ctx, step: _Step, num_inputs: int, weight, bias, *tensors):
        inputs = tensors[:num_inputs]
        ctx.step = step
        ctx.has_bias = bias is not None
        _save(ctx, weight, *inputs)
        return F.linear(step.step(*_without_history(inputs)), weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        weight, *saved = _saved(ctx)
        inputs, features, needed = ctx.step.rerun(saved)
        grad_weight, grad_features = _through_linear(features, needed,
                                                     grad_output, weight,
                                                     ctx.needs_input_grad[2])
        grad_bias = None
        if ctx.has_bias and ctx.needs_input_grad[3]:
            grad_bias = _bias_grad(grad_output, weight.dtype)
        return (None, None, _cast(grad_weight, weight.dtype), grad_bias,
                *ctx.step.gradients(inputs, features, grad_features))


def _through_linear(features, needed: bool, grad_output, weight,
                    weight_grad: bool):
    """``(weight's gradient or None, features' gradient)`` of
    ``F.linear(features, weight)`` for ``grad_output``, in the dtype the
    layer ran in (its output's: autocast's, or the features').

    Unless ``needed`` (see :meth:`_Step.rerun`), the memory of
    ``features`` is released once the weight's gradient is taken: only
    the step's graph is needed from there on, not its output's values.
    """
    dtype = grad_output.dtype
    grad_weight = None
    if weight_grad:
        rows = grad_output.reshape(-1, grad_output.shape[-1])
        feature_rows = features.detach().to(dtype).reshape(
            -1, features.shape[-1])
        grad_weight = rows.t() @ feature_rows
        del feature_rows
    if not needed:
        features.untyped_storage().resize_(0)
    return grad_weight, (grad_output @ weight.to(dtype)).to(features.dtype)


def _bias_grad(grad_output, dtype):
    return grad_output.reshape(-1, grad_output.shape[-1]).sum(0).to(dtype)


def _cast(tensor: Optional[torch.Tensor], dtype):
    return None if tensor is None else tensor.to(dtype)


class _Mlp:
    """What :class:`_ChannelwiseMlp` recomputes: the norm (or None) and the
    channel-wise step, and the hidden channels per backward chunk."""

    def __init__(self, norm: Optional[_Step], step: _Step, chunk: int):
        self.norm = norm
        self.step = step
        self.chunk = chunk


class _ChannelwiseMlp(torch.autograd.Function):

    @staticmethod
    def forward(ctx, mlp: _Mlp, x, weight1, bias1, weight2, bias2, *params):
        ctx.mlp = mlp
        ctx.has_bias = (bias1 is not None, bias2 is not None)
        normed = x.detach()
        if mlp.norm is not None:
            normed = mlp.norm.step(normed)
        hidden = F.linear(normed, weight1, bias1)
        del normed
        ctx.save_for_backward(x, hidden, weight1, weight2)
        return F.linear(mlp.step.step(hidden, None), weight2, bias2)

    @staticmethod
    def backward(ctx, grad_output):
        mlp = ctx.mlp
        x, hidden, weight1, weight2 = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if mlp.norm is None:
            norm_inputs, normed = [x], x
        else:
            norm_inputs, normed, _ = mlp.norm.rerun([x])
        # The first layer's products in the dtype it ran in (its output's);
        # the input's gradient summed over the chunks in at least float32.
        dtype = hidden.dtype
        normed_rows = normed.detach().to(dtype).reshape(-1, normed.shape[-1])
        sum_dtype = torch.promote_types(dtype, torch.float32)
        grad_normed = normed_rows.new_zeros(normed_rows.shape, dtype=sum_dtype)
        grad_weight1 = torch.empty_like(weight1) if needs[2] else None
        grad_bias1 = (
            weight1.new_empty(weight1.shape[0])
            if ctx.has_bias[0] and needs[3] else None)
        grad_weight2 = torch.empty_like(weight2) if needs[4] else None
        grad_params = [None] * len(mlp.step.params)
        width = hidden.shape[-1]
        for start in range(0, width, mlp.chunk):
            channels = slice(start, min(start + mlp.chunk, width))
            chunk = hidden[..., channels].contiguous().requires_grad_()
            inputs, features, needed = mlp.step.rerun([chunk, channels])
            del chunk
            grad_chunk, grad_features = _through_linear(
                features, needed, grad_output, weight2[:, channels], needs[4])
            if grad_chunk is not None:
                grad_weight2[:, channels] = grad_chunk
            grad_chunk, _, *grads = mlp.step.gradients(inputs, features,
                                                       grad_features)
            del inputs, features, grad_features
            rows = grad_chunk.to(dtype).reshape(-1, grad_chunk.shape[-1])
            del grad_chunk
            if grad_weight1 is not None:
                grad_weight1[channels] = rows.t() @ normed_rows
            if grad_bias1 is not None:
                grad_bias1[channels] = rows.sum(0)
            # addmm's out= form, which the FLOP counters see (addmm_ not).
            torch.addmm(
                grad_normed,
                rows.to(sum_dtype),
                weight1[channels].to(sum_dtype),
                out=grad_normed)
            grad_params = [
                g if total is None else total if g is None else total + g
                for total, g in zip(grad_params, grads)
            ]
        grad_bias2 = None
        if ctx.has_bias[1] and needs[5]:
            grad_bias2 = _bias_grad(grad_output, weight2.dtype)
        grad_normed = grad_normed.view(normed.shape).to(normed.dtype)
        if mlp.norm is None:
            grad_x, grad_norm = grad_normed, []
        else:
            grad_x, *grad_norm = mlp.norm.gradients(norm_inputs, normed,
                                                    grad_normed)
        return (None, grad_x, grad_weight1, grad_bias1, grad_weight2,
                grad_bias2, *grad_norm, *grad_params)


def recompute(step: Callable, *inputs, owners: Sequence[Owner] = ()):
    """``step(*inputs)``, keeping only ``inputs`` for the backward pass
    where :func:`frugal_autograd_applies` (else a plain call).

    Args:
        step (Callable): Returns one tensor computed from ``inputs`` and
            the parameters of ``owners``, and from nothing else that
            changes before the backward pass.
        *inputs (Tensor | None): The step's arguments (None for an absent
            optional one); the first is a tensor.
        owners (Sequence[nn.Module | Tensor]): The modules whose
            parameters the step reads, or those parameters; gradients
            reach only these.
    """
    params = _owned_parameters(owners)
    if not frugal_autograd_applies(*inputs, *params):
        return step(*inputs)
    state = _Step(step, owners, params, inputs[0].device.type)
    return _Recompute.apply(state, len(inputs), *inputs, *params)


def recompute_then_linear(step: Callable,
                          *inputs,
                          linear: nn.Linear,
                          owners: Sequence[Owner] = ()):
    """``linear(step(*inputs))``, keeping only ``inputs`` for the backward
    pass (not the step's output, the layer's input) where
    :func:`frugal_autograd_applies` (else plain calls).

    Args:
        step (Callable): As for :func:`recompute`.
        *inputs (Tensor | None): As for :func:`recompute`.
        linear (nn.Linear): The layer applied to the step's output; its
            parameters are handled apart from those of ``owners``. With
            forward hooks registered on it, the call is plain, so that the
            hooks run.
        owners (Sequence[nn.Module | Tensor]): As for :func:`recompute`.
    """
    weight, bias = linear.weight, linear.bias
    params = _owned_parameters(owners, skip=(weight, bias))
    # The frugal path applies the layer's weights without calling the
    # layer: a user's hooks on it must see every call, so they keep it
    # plain.
    hooked = bool(linear._forward_hooks or linear._forward_pre_hooks)
    if hooked or not frugal_autograd_applies(*inputs, *params, weight, bias):
        return linear(step(*inputs))
    state = _Step(step, owners, params, inputs[0].device.type)
    return _RecomputeThenLinear.apply(state, len(inputs), weight, bias,
                                      *inputs, *params)


def normed_linear(x: torch.Tensor, linear: nn.Linear,
                  norm: Optional[nn.Module]) -> torch.Tensor:
    """``linear(norm(x))`` keeping only ``x`` in training (``norm`` is
    recomputed for the layer's gradients), or ``linear(x)`` with no norm.
    Autograd would keep both the norm's input and its output."""
    if norm is None:
        return linear(x)
    return recompute_then_linear(norm, x, linear=linear, owners=(norm, ))


def channelwise_mlp(x: torch.Tensor,
                    first: nn.Linear,
                    step: Callable,
                    second: nn.Linear,
                    norm: Optional[nn.Module] = None,
                    owners: Sequence[Owner] = (),
                    chunks: int = 4) -> torch.Tensor:
    """``second(step(first(norm(x)), None))`` (no norm if None), keeping
    only ``x`` and ``first``'s output for the backward pass where
    :func:`frugal_autograd_applies` (else plain calls).

    The backward pass recomputes the norm, then the step and both layers'
    gradients for ``chunks`` groups of hidden channels in turn: the
    transient of a wide hidden layer (the step's maps, their gradients)
    is a chunk's, and the hidden layer's gradient is never held whole.

    Args:
        x (Tensor): ``(..., C)`` tokens.
        first (nn.Linear): ``C`` -> hidden channels.
        step (Callable): ``step(hidden, channels)``: ``hidden`` holds the
            hidden channels ``channels`` (a slice; None: all of them); each
            output channel depends on its own input channel alone.
            Otherwise as for :func:`recompute`.
        second (nn.Linear): Hidden channels -> output channels. With
            forward hooks on either layer, the calls are plain, so that
            the hooks run.
        norm (nn.Module, optional): Applied to ``x`` first.
        owners (Sequence[nn.Module | Tensor]): What the step reads, as for
            :func:`recompute`.
        chunks (int): Groups of hidden channels in the backward pass.
    """
    layers = (first.weight, first.bias, second.weight, second.bias)
    norm_params = () if norm is None else _owned_parameters((norm, ))
    params = _owned_parameters(owners, skip=layers)
    hooked = any(
        layer._forward_hooks or layer._forward_pre_hooks
        for layer in (first, second))
    read = (*layers, *norm_params, *params)
    if hooked or not frugal_autograd_applies(x, *read):
        return second(step(first(x if norm is None else norm(x)), None))
    device_type = x.device.type
    norm_step = None if norm is None else _Step(norm, (norm, ), norm_params,
                                                device_type)
    width = first.out_features
    mlp = _Mlp(norm_step, _Step(step, owners, params, device_type),
               -(-width // chunks))
    return _ChannelwiseMlp.apply(mlp, x, *layers, *norm_params, *params)
