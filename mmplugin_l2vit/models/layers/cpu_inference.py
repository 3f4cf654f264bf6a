# Copyright (c) OpenMMLab. All rights reserved.
"""The CPU's fast inference: residual branches added into the tokens in
place, a chunk of tokens (or a band of windows) at a time, with the linear
layers through oneDNN.

Same steps as the modules' forward passes (imported from their modules,
never written again here), same results up to float rounding; the
whole-map temporaries (hundreds of MB at 2048x2048, mapped fresh and zeroed
page by page in every block) become chunks that stay in the caches.

Where it runs: :func:`is_cpu_inference` (the CPU, eager, autograd off; never
while tracing, scripting, exporting or compiling) and, for a block,
:func:`runs_in_place`. The chunk sizes were measured on a 2-core CPU's
caches only: on a GPU they would mean dozens of small kernel launches per
block where one would do, so other devices run the plain forward (a GPU
measurement would decide whether chunks the size of its L2 or of its free
memory pay there). A compiled graph plans its own memory, and tracing or
export would record this module's private oneDNN op and data-dependent
loops.

:class:`Stage <..backbones.base.Stage>` dispatches here: a block whose
class lists its ``forward_steps`` runs :func:`forward_in_place`.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .embeddings import Mlp
from .focused_linear_attention import (FocusedLinearAttention, focused_attend,
                                       focused_key_value_summary,
                                       focused_normaliser, rank_restoration)
from .relu_linear_attention import (ReLULinearAttention, relu_attend,
                                    relu_features, relu_key_value_summary,
                                    relu_normaliser)
from .tokens import (HW, is_building_graph, merge_heads, split_heads,
                     tokens_to_nchw)
from .window_attention import (ShiftedWindowAttention, UnmaskedWindowAttention,
                               fits_one_window, padded_size,
                               shifted_window_mask)

# Elements of the largest temporary of one chunk. Sizes measured on a
# 2-core EPYC (1 MB L2 per core, 32 MB L3), interleaved runs at 224 to 2048
# pixels:
# - the MLP's hidden layer, 2 MB in fp32: it stays in the caches between
#   fc1, GELU and fc2 (FLatten-PVT-T at 224: ~15% faster than 8 MB); but
#   at least 1024 tokens, below which the wide late-stage GEMMs slow down;
MLP_CHUNK_ELEMENTS = 1 << 19
MLP_MIN_CHUNK_TOKENS = 1024
# - L²ViT's keys and values, 8 MB: smaller chunks only slow its GEMMs;
LINEAR_ATTENTION_CHUNK_ELEMENTS = 1 << 21
# - FLatten's keys and values, 4 MB: the focusing function makes eight
#   element-wise passes over each chunk.
FOCUSED_ATTENTION_CHUNK_ELEMENTS = 1 << 20
# Tokens -> NCHW outputs: transposed a 512 KB band at a time (fits the L2).
TRANSPOSE_CHUNK_ELEMENTS = 1 << 17


def is_cpu_inference(x: torch.Tensor) -> bool:
    """Whether ``x`` is in eager inference on the CPU: autograd off, and
    not being compiled, traced, scripted or exported."""
    return not (x.device.type != 'cpu' or torch.is_grad_enabled()
                or is_building_graph())


def _hooked(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks
               for m in module.modules())


def runs_in_place(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``block(x, hw)`` may run as :func:`forward_in_place`: in
    :func:`is_cpu_inference`, for a block with ``forward_steps`` in eval
    mode (stochastic depth off), on a contiguous ``x`` the caller owns,
    with no forward hook (hooks expect the whole-map calls)."""
    return (is_cpu_inference(x) and hasattr(block, 'forward_steps')
            and not block.training and x.is_contiguous()
            and not (nn.modules.module._global_forward_hooks
                     or nn.modules.module._global_forward_pre_hooks
                     or _hooked(block)))


def forward_in_place(block: nn.Module, x: torch.Tensor, hw: HW):
    """``block(x, hw)`` with every residual branch added into ``x``.

    ``block.forward_steps`` lists the block's forward: a name ``'cpe'`` is
    the step ``x = block.cpe(x, hw)``, a pair ``('norm', 'attn')`` the
    residual ``x = x + drop_path(block.attn(block.norm(x), hw))`` (stochastic
    depth is off in eval mode).
    """
    for step in block.forward_steps:
        if isinstance(step, str):
            x = getattr(block, step)(x, hw)
        else:
            norm, branch = (getattr(block, name) for name in step)
            add_branch_in_place(x, hw, norm, branch)
    return x


def add_branch_in_place(x: torch.Tensor, hw: HW, norm: nn.Module, branch):
    """``x += branch(norm(x), hw)``, chunk by chunk for the branches this
    module knows (under autocast the MLP only)."""
    if type(branch) is Mlp:
        add_mlp(x, norm, branch)
    elif torch.is_autocast_enabled(x.device.type):
        x += branch(norm(x), hw)
    elif isinstance(branch, ReLULinearAttention):
        add_relu_linear_attention(x, norm, branch)
    elif isinstance(branch, FocusedLinearAttention):
        add_focused_linear_attention(x, hw, norm, branch)
    elif isinstance(branch, UnmaskedWindowAttention):
        add_window_attention(x, hw, norm, branch)
    else:
        x += branch(norm(x), hw)


def even_chunk_size(total: int, largest: int) -> int:
    """The smallest step that cuts ``total`` items into as few chunks of at
    most ``largest`` items as possible: the chunks are equal but for the
    last, short by fewer items than there are chunks. No small leftover
    chunk whose matrix products run far below the GEMM rate. At least 1,
    so that an empty input still gives a valid step."""
    count = max(1, -(-total // max(1, largest)))
    return max(1, -(-total // count))


def _onednn_linear_available() -> bool:
    try:
        return (torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._linear_pointwise is not None)
    except (AttributeError, RuntimeError):
        return False


ONEDNN_LINEAR = _onednn_linear_available()


# Never traced: only eager in-place paths call it, but after a graph break
# dynamo compiles the frames that run next, and inductor cannot lower
# oneDNN's linear with weights that are graph inputs.
@torch.compiler.disable
def inference_linear(x: torch.Tensor,
                     weight: torch.Tensor,
                     bias: Optional[torch.Tensor] = None,
                     gelu: bool = False) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, then the exact GELU with ``gelu``, for
    the in-place inference only (no autograd or hooks to respect).

    On the CPU in float32, or in bfloat16 under autocast, it is one oneDNN
    call with the bias and the GELU in the GEMM's epilogue (the kernel
    inductor uses): aten's ``addmm`` first copies the bias into the
    output, and the GELU is another pass over it (a slow one in bfloat16
    on CPUs without bfloat16 element-wise units). Same arithmetic up to
    rounding (float32: whole backbones agree to ~1e-6 relative); 10-30%
    faster GEMMs for the backbones' shapes.
    """
    dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    if (ONEDNN_LINEAR and x.device.type == 'cpu'
            and dtype in (torch.float32, torch.bfloat16)
            and x.dtype == weight.dtype == torch.float32):
        return torch.ops.mkldnn._linear_pointwise(
            x.to(dtype), weight.to(dtype),
            None if bias is None else bias.to(dtype),
            'gelu' if gelu else 'none', [], 'none' if gelu else '')
    out = F.linear(x, weight, bias)
    return F.gelu(out) if gelu else out


def inference_layer(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` through :func:`inference_linear`."""
    return inference_linear(x, layer.weight, layer.bias)


def split_qkv_projection(weight, bias) -> Tuple[tuple, tuple]:
    """``((q_weight, q_bias), (kv_weight, kv_bias))``: views of a fused
    ``C -> 3C`` projection, for passes that need the queries apart from the
    keys and values."""
    channels = weight.shape[1]
    q_weight, kv_weight = weight.split([channels, 2 * channels])
    q_bias, kv_bias = bias.split([channels, 2 * channels])
    return (q_weight, q_bias), (kv_weight, kv_bias)


def to_nchw(x: torch.Tensor, hw: HW) -> torch.Tensor:
    """:func:`~.tokens.tokens_to_nchw`; in :func:`is_cpu_inference` the
    transpose is copied a band of tokens at a time: aten's one transposing
    copy of a large map strides through memory far beyond the caches (3-4x
    slower for a 64-channel map of 256x256 or more). Same values."""
    batch, num_tokens, channels = x.shape
    band = max(1, TRANSPOSE_CHUNK_ELEMENTS // channels)
    if num_tokens <= band or not is_cpu_inference(x):
        return tokens_to_nchw(x, hw)
    out = x.new_empty(batch, channels, num_tokens)
    for start in range(0, num_tokens, band):
        out[:, :, start:start + band] = x[:,
                                          start:start + band].transpose(1, 2)
    return out.view(batch, channels, *hw)


def add_mlp(x: torch.Tensor, norm: nn.Module, mlp: Mlp):
    """``x += mlp(norm(x))`` a chunk of tokens at a time: the wide hidden
    layer never exists for the whole map. Also under autocast, where the
    chunks' products run in its dtype as they would on the whole map."""
    tokens = x.view(-1, x.shape[-1])
    chunk = even_chunk_size(
        tokens.shape[0],
        max(MLP_MIN_CHUNK_TOKENS, MLP_CHUNK_ELEMENTS // mlp.fc1.out_features))
    for part in tokens.split(chunk):
        hidden = inference_linear(
            norm(part), mlp.fc1.weight, mlp.fc1.bias, gelu=True)
        part += inference_linear(hidden, mlp.fc2.weight, mlp.fc2.bias)


def add_relu_linear_attention(x: torch.Tensor, norm: nn.Module,
                              attn: ReLULinearAttention):
    """``x += attn(norm(x))`` in two passes over chunks of tokens: the first
    sums the chunks' key-value summaries from the key and value
    projections, the second projects the queries and attends. No whole-map
    ``qkv`` or per-head copy exists."""
    heads = attn.num_heads
    q_projection, kv_projection = split_qkv_projection(attn.qkv.weight,
                                                       attn.qkv.bias)

    def summary(part):
        k, v = inference_linear(norm(part), *kv_projection).chunk(2, dim=-1)
        return relu_key_value_summary(
            relu_features(split_heads(k, heads)), split_heads(v, heads),
            attn.temperature)

    chunk = even_chunk_size(
        x.shape[1], LINEAR_ATTENTION_CHUNK_ELEMENTS // (2 * x.shape[-1]))
    for tokens in x:  # one image at a time
        parts = tokens.split(chunk)
        kv, key_sum = (sum(sums) for sums in zip(*map(summary, parts)))
        for part in parts:
            q = relu_features(
                split_heads(
                    inference_linear(norm(part), *q_projection), heads))
            out = relu_attend(
                q, kv, relu_normaliser(q, key_sum, attn.denominator_floor))
            part += inference_linear(
                merge_heads(out), attn.proj.weight, attn.proj.bias)


def add_focused_linear_attention(x: torch.Tensor, hw: HW, norm: nn.Module,
                                 attn: FocusedLinearAttention):
    """``x += attn(norm(x), hw)`` for a host attending over the whole
    ``hw`` map with its ``qkv_projection`` and ``proj``.

    Two passes over chunks of tokens: the first sums the chunks' key-value
    summaries and keeps the values for the depthwise convolution, the
    second focuses the queries and attends (a map of one chunk projects its
    queries in the first pass too, in one product with the keys and
    values). Only the values and their convolution exist for the whole
    map; the focusing function works in the projections' outputs, and the
    per-head products read and write token-major memory through strided
    views (no head split or merge copies).
    """
    num_tokens, channels = x.shape[1:]
    heads = attn.num_heads

    def focused_heads(features):  # (n, C) -> focused (heads, n, d) view
        return split_heads(attn.focus(features[None], inplace=True)[0], heads)

    pos = attn.key_position(hw)[0]
    qkv_projection = attn.qkv_projection()
    one_chunk = num_tokens * 3 * channels <= FOCUSED_ATTENTION_CHUNK_ELEMENTS
    if one_chunk:
        chunk, kv_projection = num_tokens, qkv_projection
    else:
        chunk = even_chunk_size(
            num_tokens, FOCUSED_ATTENTION_CHUNK_ELEMENTS // (2 * channels))
        q_projection, kv_projection = split_qkv_projection(*qkv_projection)
    attended = x.new_empty(chunk, channels)
    for tokens in x:  # one image at a time
        kv = key_mean = 0
        values = x.new_empty(num_tokens, channels)
        for start in range(0, num_tokens, chunk):
            projected = inference_linear(
                norm(tokens[start:start + chunk]), *kv_projection)
            if one_chunk:
                q, k, v = projected.chunk(3, dim=-1)
                q = focused_heads(q)
            else:
                k, v = projected.chunk(2, dim=-1)
            k = focused_heads(k.add_(pos[start:start + chunk]))
            values[start:start + chunk] = v
            part_kv, part_key_mean = focused_key_value_summary(
                k, split_heads(v, heads), num_tokens)
            kv, key_mean = kv + part_kv, key_mean + part_key_mean
        local = rank_restoration(attn.dwc, values[None], hw, heads)[0]
        for start in range(0, num_tokens, chunk):
            part = tokens[start:start + chunk]
            if not one_chunk:
                q = focused_heads(inference_linear(norm(part), *q_projection))
            out = attended[:len(part)]
            out_heads = split_heads(out, heads)
            focused_attend(
                q, kv, focused_normaliser(q, key_mean), out=out_heads)
            out.add_(local[start:start + chunk])
            part += inference_linear(out, attn.proj.weight, attn.proj.bias)


def add_window_attention(x: torch.Tensor, hw: HW, norm: nn.Module,
                         attn: UnmaskedWindowAttention):
    """``x += attn(norm(x), hw)`` one band of a window row at a time (a map
    that fits in one window of a Swin attention is one band): windows do
    not interact, so the padded, projected and per-head copies of the map
    are never whole."""
    size = attn.window_size
    if not isinstance(attn, ShiftedWindowAttention):
        _add_window_bands(x, hw, norm, attn)
    elif fits_one_window(hw, size):
        x += attn(norm(x), hw, linear=inference_layer)
    elif not attn.shift_size:
        _add_window_bands(x, hw, norm, attn,
                          attn.relative_position_bias((size, size))[None])
    else:
        _add_shifted_window_bands(x, hw, norm, attn)


def _add_window_bands(x,
                      hw: HW,
                      norm: nn.Module,
                      attn: UnmaskedWindowAttention,
                      attn_mask=None):
    """Unshifted windows, ``attn_mask`` for every window."""
    batch, _, channels = x.shape
    height, width = hw
    size = attn.window_size
    grid = x.view(batch, height, width, channels)
    for top in range(0, height, size):
        band = grid[:, top:top + size]
        rows = band.shape[1]
        normed = norm(band).view(batch, rows * width, channels)
        band += attn.attend_in_windows(
            normed, (rows, width), (size, size),
            attn_mask=attn_mask,
            linear=inference_layer).view(band.shape)


def _add_shifted_window_bands(x, hw: HW, norm: nn.Module,
                              attn: ShiftedWindowAttention):
    """Shifted windows. Window row ``r`` of the padded map rolled up and
    left by the shift holds rows ``r * window_size + shift + i`` (modulo
    the padded height) of the padded map: each such band is gathered,
    rolled left, attended with its windows' masks, rolled back and added to
    the rows it came from (padding rows are zeros, dropped)."""
    batch, _, channels = x.shape
    height, width = hw
    size, shift = attn.window_size, attn.shift_size
    bias = attn.relative_position_bias((size, size))
    padded_hw = padded_size(hw, (size, size))
    columns = padded_hw[1] // size
    shift_mask = shifted_window_mask(padded_hw, size, shift, bias.dtype,
                                     x.device)
    grid = x.view(batch, height, width, channels)
    band = x.new_empty(batch, size, padded_hw[1], channels)
    for top in range(0, padded_hw[0], size):
        rows = (torch.arange(top, top + size, device=x.device) +
                shift) % padded_hw[0]
        in_map = (rows < height).nonzero().squeeze(1)
        rows = rows[in_map]
        band.zero_()
        band[:, in_map, :width] = norm(grid[:, rows])
        windows = slice(top // size * columns, (top // size + 1) * columns)
        attn_mask = (shift_mask[windows].unsqueeze(1) + bias).repeat(
            batch, 1, 1, 1)
        out = attn.attend_in_windows(
            torch.roll(band, -shift, dims=2).view(batch, -1, channels),
            (size, padded_hw[1]), (size, size),
            attn_mask=attn_mask,
            linear=inference_layer)
        out = torch.roll(
            out.view(band.shape), shift, dims=2)[:, in_map, :width]
        grid.index_add_(1, rows, out)
