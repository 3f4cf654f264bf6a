# Copyright (c) OpenMMLab. All rights reserved.
"""An independent functional FLatten-Swin written from the official key
layout and the engineering spec.

It reads an *official-format* state dict directly (no key conversion, no
plugin code), so comparing it with :class:`mmplugin_l2vit.FLattenSwin`
loaded through the converter checks the conversion, the official numerics
at the training size and the documented rules at other sizes:

- linear attention over the whole stage map in its closed form
  ``sum_j (q.k_j) v_j / (sum_j q.k_j + n * 1e-6)``, the head-shared DWC
  applied as a tiled C-channel depthwise conv, the positional encoding
  bilinearly resized to the live grid;
- softmax attention written densely over the (padded, rolled) map: a token
  attends to the tokens of its window, with the relative position bias
  from coordinate offsets and -100 between the window's strips; a map that
  fits in one window is that window, unpadded and unshifted.
"""
import functools

import torch
import torch.nn.functional as F

ARCHS = dict(
    tiny=dict(dims=[96, 192, 384, 768], depths=[2, 2, 6, 2],
              heads=[3, 6, 12, 24], window=7, img=224),
    small=dict(dims=[96, 192, 384, 768], depths=[2, 2, 18, 2],
               heads=[3, 6, 12, 24], window=7, img=224),
    base=dict(dims=[128, 256, 512, 1024], depths=[2, 2, 18, 2],
              heads=[4, 8, 16, 32], window=7, img=224),
    base384=dict(dims=[128, 256, 512, 1024], depths=[2, 2, 18, 2],
                 heads=[4, 8, 16, 32], window=12, img=384),
)


@functools.lru_cache()
def bias_index(window):
    """The official (window², window²) relative position index, by loops."""
    index = torch.empty(window**2, window**2, dtype=torch.long)
    for i in range(window**2):
        for j in range(window**2):
            dy = i // window - j // window + window - 1
            dx = i % window - j % window + window - 1
            index[i, j] = dy * (2 * window - 1) + dx
    return index


@functools.lru_cache()
def official_shift_mask(res, window):
    """The official attn_mask buffer of a shifted block on a res x res map,
    built token by token from the strips of the rolled map."""
    shift = window // 2

    def strip(p):
        return int(p >= res - window) + int(p >= res - shift)

    n_side = res // window
    mask = torch.zeros(n_side * n_side, window**2, window**2)
    for w in range(n_side * n_side):
        tokens = [((w // n_side) * window + t // window,
                   (w % n_side) * window + t % window)
                  for t in range(window**2)]
        for i, (yi, xi) in enumerate(tokens):
            for j, (yj, xj) in enumerate(tokens):
                if (strip(yi), strip(xi)) != (strip(yj), strip(xj)):
                    mask[w, i, j] = -100.
    return mask


def official_state_dict(dims, depths, heads, window=7, img=224,
                        num_classes=10, seed=0):
    """A random state dict with the official keys and shapes (spec 3.2),
    buffers included, and values that exercise every term: random
    temperatures, positional encodings and bias tables."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    sd = {}

    def ln(prefix, c):
        sd[prefix + 'weight'] = torch.rand(c, generator=g) + 0.5
        sd[prefix + 'bias'] = rnd(c, scale=0.1)

    def lin(prefix, cout, cin, bias=True):
        sd[prefix + 'weight'] = rnd(cout, cin, scale=cin**-0.5)
        if bias:
            sd[prefix + 'bias'] = rnd(cout, scale=0.1)

    sd['patch_embed.proj.weight'] = rnd(dims[0], 3, 4, 4, scale=48**-0.5)
    sd['patch_embed.proj.bias'] = rnd(dims[0], scale=0.1)
    ln('patch_embed.norm.', dims[0])
    res = img // 4
    for i, (c, depth, h) in enumerate(zip(dims, depths, heads)):
        for j in range(depth):
            p = f'layers.{i}.blocks.{j}.'
            ln(p + 'norm1.', c)
            lin(p + 'attn.qkv.', 3 * c, c)
            lin(p + 'attn.proj.', c, c)
            if i < 2:
                d = c // h
                sd[p + 'attn.scale'] = rnd(1, 1, c, scale=1.)
                sd[p + 'attn.positional_encoding'] = rnd(1, res * res, c,
                                                         scale=0.5)
                sd[p + 'attn.dwc.weight'] = rnd(d, 1, 5, 5, scale=0.2)
                sd[p + 'attn.dwc.bias'] = rnd(d, scale=0.1)
            else:
                # Official stage 4 maps equal the window, so the window
                # never shrinks below ``window``.
                sd[p + 'attn.relative_position_bias_table'] = rnd(
                    (2 * window - 1)**2, h, scale=0.5)
                sd[p + 'attn.relative_position_index'] = bias_index(window)
                if j % 2 and res > window:
                    sd[p + 'attn_mask'] = official_shift_mask(res, window)
            ln(p + 'norm2.', c)
            lin(p + 'mlp.fc1.', 4 * c, c)
            lin(p + 'mlp.fc2.', c, 4 * c)
        if i < 3:
            ln(f'layers.{i}.downsample.norm.', 4 * c)
            lin(f'layers.{i}.downsample.reduction.', dims[i + 1], 4 * c,
                bias=False)
        res //= 2
    ln('norm.', dims[-1])
    lin('head.', num_classes, dims[-1])
    return sd


def _ln(sd, p, x):
    return F.layer_norm(x, x.shape[-1:], sd[p + 'weight'], sd[p + 'bias'])


def _mlp(sd, p, x):
    x = F.gelu(F.linear(x, sd[p + 'fc1.weight'], sd[p + 'fc1.bias']))
    return F.linear(x, sd[p + 'fc2.weight'], sd[p + 'fc2.bias'])


def _heads(x, heads):
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def _focus(x, theta):
    x = (x.relu() + 1e-6) / F.softplus(theta)
    cubed = x**3
    return cubed * (x.norm(dim=-1, keepdim=True) /
                    cubed.norm(dim=-1, keepdim=True))


def _linear_attention(sd, p, x, hw, heads, native):
    b, n, c = x.shape
    q, k, v = F.linear(x, sd[p + 'qkv.weight'], sd[p + 'qkv.bias']).split(
        c, dim=-1)
    pos = sd[p + 'positional_encoding']
    if tuple(hw) != (native, native):
        pos = pos.reshape(1, native, native, c).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=hw, mode='bilinear',
                            align_corners=False).flatten(2).transpose(1, 2)
    q = _heads(_focus(q, sd[p + 'scale']), heads)
    k = _heads(_focus(k + pos, sd[p + 'scale']), heads)
    vh = _heads(v, heads)
    # Closed form (spec 1.3): sums over the keys, eps n * 1e-6.
    kv = torch.einsum('bhmd,bhme->bhde', k, vh)
    num = torch.einsum('bhnd,bhde->bhne', q, kv)
    den = torch.einsum('bhnd,bhd->bhn', q, k.sum(2)) + n * 1e-6
    out = (num / den[..., None]).transpose(1, 2).reshape(b, n, c)
    # The head-shared DWC as a C-channel depthwise conv with tiled kernels.
    v_map = v.transpose(1, 2).reshape(b, c, *hw)
    out = out + F.conv2d(v_map, sd[p + 'dwc.weight'].repeat(heads, 1, 1, 1),
                         sd[p + 'dwc.bias'].repeat(heads), padding=2,
                         groups=c).flatten(2).transpose(1, 2)
    return F.linear(out, sd[p + 'proj.weight'], sd[p + 'proj.bias'])


def _window_attention(sd, p, x, hw, heads, window, shifted):
    b, n, c = x.shape
    h, w = hw
    fits = h <= window and w <= window
    shift = window // 2 if shifted and not fits else 0
    hp = h if fits else -(-h // window) * window
    wp = w if fits else -(-w // window) * window
    grid = F.pad(x.reshape(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
    grid = torch.roll(grid, (-shift, -shift), dims=(1, 2))
    # Coordinates in the rolled map, token by token.
    ys = torch.arange(hp).repeat_interleave(wp)
    xs = torch.arange(wp).repeat(hp)
    same_window = ((ys[:, None] // window == ys[None] // window)
                   & (xs[:, None] // window == xs[None] // window))
    table_side = 2 * window - 1
    index = ((ys[:, None] - ys[None] + window - 1) * table_side +
             xs[:, None] - xs[None] + window - 1)
    index = index.clamp(0, table_side**2 - 1)  # pairs across windows
    bias = sd[p + 'relative_position_bias_table'][index].permute(2, 0, 1)

    def strip(coord, length):
        return ((coord >= length - window).long() +
                (coord >= length - shift).long())

    if shift:
        label = strip(ys, hp) * 3 + strip(xs, wp)
        bias = bias - 100. * (label[:, None] != label[None])
    tokens = grid.reshape(b, hp * wp, c)
    q, k, v = F.linear(tokens, sd[p + 'qkv.weight'],
                       sd[p + 'qkv.bias']).split(c, dim=-1)
    q, k, v = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    logits = (q * (c // heads)**-0.5) @ k.transpose(-2, -1) + bias
    logits = logits.masked_fill(~same_window, float('-inf'))
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, hp, wp, c)
    out = F.linear(out, sd[p + 'proj.weight'], sd[p + 'proj.bias'])
    out = torch.roll(out, (shift, shift), dims=(1, 2))[:, :h, :w]
    return out.reshape(b, n, c)


def _merge(sd, p, x, hw):
    b, n, c = x.shape
    m = x.reshape(b, *hw, c)
    m = F.pad(m, (0, 0, 0, hw[1] % 2, 0, hw[0] % 2))
    m = torch.cat([m[:, 0::2, 0::2], m[:, 1::2, 0::2], m[:, 0::2, 1::2],
                   m[:, 1::2, 1::2]], -1)
    hw = tuple(m.shape[1:3])
    m = _ln(sd, p + 'norm.', m.reshape(b, -1, 4 * c))
    return F.linear(m, sd[p + 'reduction.weight']), hw


def reference_forward(sd, x, depths, heads, window=7, img=224):
    """Return (stage tokens and grids before any output norm, logits)."""
    x = F.pad(x, (0, -x.shape[-1] % 4, 0, -x.shape[-2] % 4))
    x = F.conv2d(x, sd['patch_embed.proj.weight'],
                 sd['patch_embed.proj.bias'], stride=4)
    hw = tuple(x.shape[-2:])
    x = _ln(sd, 'patch_embed.norm.', x.flatten(2).transpose(1, 2))
    stages = []
    for i in range(4):
        if i:
            x, hw = _merge(sd, f'layers.{i - 1}.downsample.', x, hw)
        for j in range(depths[i]):
            p = f'layers.{i}.blocks.{j}.'
            y = _ln(sd, p + 'norm1.', x)
            if i < 2:
                y = _linear_attention(sd, p + 'attn.', y, hw, heads[i],
                                      img // 4 >> i)
            else:
                y = _window_attention(sd, p + 'attn.', y, hw, heads[i],
                                      window, shifted=j % 2 == 1)
            x = x + y
            x = x + _mlp(sd, p + 'mlp.', _ln(sd, p + 'norm2.', x))
        stages.append((x, hw))
    pooled = _ln(sd, 'norm.', x).mean(1)
    logits = F.linear(pooled, sd['head.weight'], sd['head.bias'])
    return stages, logits
