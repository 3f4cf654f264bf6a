# Copyright (c) OpenMMLab. All rights reserved.
"""An independent functional FLatten-PVT / FLatten-PVTv2 written from the
FLatten spec (attention: section 1; blocks: 2.2; keys: 3.3, 3.4).

It reads an *official-format* state dict directly (no key conversion, no
plugin code) and computes the attention in its closed form

    A_i = sum_j (phi(q_i) . phi(k_j)) v_j / (sum_j phi(q_i) . phi(k_j)
          + n * 1e-6)

per head, plus the head-shared 5x5 depthwise conv written as a C-channel
depthwise conv with the kernels tiled over the heads (spec 3.6, rule 3).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F

PVT_DIMS = [64, 128, 320, 512]
HEADS = [1, 2, 5, 8]
MLP_RATIOS = [8, 8, 4, 4]
# Per arch: depths (and dims), the official parameter count (1000-class
# head included) as measured on the official code, and as the spec's table
# 2.3 rounds it, in millions (it gives 3.60 for b0's 3,594,824).
PVT_ARCHS = {
    'tiny': ([2, 2, 2, 2], 12150504, 12.15),
    'small': ([3, 4, 6, 3], 21670248, 21.67),
    'medium': ([3, 4, 18, 3], 37242216, 37.24),
    'large': ([3, 8, 27, 3], 50649192, 50.65),
}
PVT_V2_ARCHS = {
    'b0': ([32, 64, 160, 256], [2, 2, 2, 2], 3594824, 3.60),
    'b1': (PVT_DIMS, [2, 2, 2, 2], 12931240, 12.93),
    'b2': (PVT_DIMS, [3, 4, 6, 3], 22548264, 22.55),
    'b3': (PVT_DIMS, [3, 4, 18, 3], 38273832, 38.27),
    'b4': (PVT_DIMS, [3, 8, 27, 3], 51836968, 51.84),
}
# Token grids of the 224x224 training size.
GRIDS = [56, 28, 14, 7]


def official_shapes(v2,
                    dims,
                    depths,
                    heads,
                    mlp_ratios=MLP_RATIOS,
                    num_classes=1000):
    """The official state dict's keys and shapes, in its order."""
    shapes = OrderedDict()
    if not v2:
        for s in range(4):
            shapes[f'pos_embed{s + 1}'] = (1, GRIDS[s]**2, dims[s])
    for s in range(4):
        c, hidden = dims[s], dims[s] * mlp_ratios[s]
        c_in = 3 if s == 0 else dims[s - 1]
        if v2:
            k = 7 if s == 0 else 3
        else:
            k = 4 if s == 0 else 2
        p = f'patch_embed{s + 1}.'
        shapes[p + 'proj.weight'] = (c, c_in, k, k)
        shapes[p + 'proj.bias'] = (c, )
        shapes[p + 'norm.weight'] = shapes[p + 'norm.bias'] = (c, )
        for j in range(depths[s]):
            p = f'block{s + 1}.{j}.'
            d = c // heads[s]
            shapes[p + 'norm1.weight'] = shapes[p + 'norm1.bias'] = (c, )
            shapes[p + 'attn.scale'] = (1, 1, c)
            shapes[p + 'attn.positional_encoding'] = (1, GRIDS[s]**2, c)
            for name, rows in (('q', c), ('kv', 2 * c), ('proj', c)):
                shapes[p + f'attn.{name}.weight'] = (rows, c)
                shapes[p + f'attn.{name}.bias'] = (rows, )
            shapes[p + 'attn.dwc.weight'] = (d, 1, 5, 5)
            shapes[p + 'attn.dwc.bias'] = (d, )
            shapes[p + 'norm2.weight'] = shapes[p + 'norm2.bias'] = (c, )
            shapes[p + 'mlp.fc1.weight'] = (hidden, c)
            shapes[p + 'mlp.fc1.bias'] = (hidden, )
            if v2:
                shapes[p + 'mlp.dwconv.dwconv.weight'] = (hidden, 1, 3, 3)
                shapes[p + 'mlp.dwconv.dwconv.bias'] = (hidden, )
            shapes[p + 'mlp.fc2.weight'] = (c, hidden)
            shapes[p + 'mlp.fc2.bias'] = (c, )
        if v2:
            shapes[f'norm{s + 1}.weight'] = (c, )
            shapes[f'norm{s + 1}.bias'] = (c, )
    if not v2:
        shapes['norm.weight'] = shapes['norm.bias'] = (dims[3], )
    shapes['head.weight'] = (num_classes, dims[3])
    shapes['head.bias'] = (num_classes, )
    return shapes


def official_state_dict(v2,
                        dims,
                        depths,
                        heads,
                        mlp_ratios=MLP_RATIOS,
                        num_classes=10,
                        seed=0):
    """Random official-format weights, with non-trivial temperatures,
    positional encodings and norms."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()
    for key, shape in official_shapes(v2, dims, depths, heads, mlp_ratios,
                                      num_classes).items():
        r = torch.randn(shape, generator=g)
        if key.endswith('attn.scale'):
            sd[key] = r * 0.5
        elif 'pos' in key:
            sd[key] = r * 0.2
        elif 'norm' in key and key.endswith('weight'):
            sd[key] = 1 + 0.1 * r
        elif key.endswith('bias'):
            sd[key] = 0.05 * r
        else:
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            sd[key] = r * fan_in**-0.5
    return sd


def _ln(sd, p, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[p + 'weight'], sd[p + 'bias'], eps)


def _linear(sd, p, x):
    return F.linear(x, sd[p + 'weight'], sd[p + 'bias'])


def _resize(table, side, hw, mode):
    if (side, side) == tuple(hw):
        return table
    grid = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=hw, mode=mode, align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def _phi(x, theta, p=3):
    x = (F.relu(x) + 1e-6) / F.softplus(theta)
    powered = x**p
    ratio = x.norm(dim=-1, keepdim=True) / powered.norm(dim=-1, keepdim=True)
    return powered * ratio


def _attention(sd, p, x, hw, heads, side, mode):
    b, n, c = x.shape
    d = c // heads
    kv = _linear(sd, p + 'kv.', x)
    k = kv[..., :c] + _resize(sd[p + 'positional_encoding'], side, hw, mode)
    v = kv[..., c:]
    q = _phi(_linear(sd, p + 'q.', x), sd[p + 'scale'])
    q = q.reshape(b, n, heads, d)
    k = _phi(k, sd[p + 'scale']).reshape(b, n, heads, d)
    vh = v.reshape(b, n, heads, d)
    numerator = torch.einsum('bihd,bhde->bihe', q,
                             torch.einsum('bjhd,bjhe->bhde', k, vh))
    denominator = torch.einsum('bihd,bhd->bih', q, k.sum(1)) + n * 1e-6
    out = (numerator / denominator[..., None]).reshape(b, n, c)
    v_map = v.transpose(1, 2).reshape(b, c, *hw)
    dwc = F.conv2d(
        v_map,
        sd[p + 'dwc.weight'].repeat(heads, 1, 1, 1),
        sd[p + 'dwc.bias'].repeat(heads),
        padding=2,
        groups=c)
    out = out + dwc.flatten(2).transpose(1, 2)
    return _linear(sd, p + 'proj.', out)


def _mlp(sd, p, x, hw, v2):
    x = _linear(sd, p + 'fc1.', x)
    if v2:
        b, n, c = x.shape
        m = x.transpose(1, 2).reshape(b, c, *hw)
        m = F.conv2d(
            m,
            sd[p + 'dwconv.dwconv.weight'],
            sd[p + 'dwconv.dwconv.bias'],
            padding=1,
            groups=c)
        x = m.flatten(2).transpose(1, 2)
    return _linear(sd, p + 'fc2.', F.gelu(x))


def _patch_embed(sd, s, m, v2, pad, mode):
    p = f'patch_embed{s + 1}.'
    w = sd[p + 'proj.weight']
    k = w.shape[-1]
    if v2:
        m = F.conv2d(
            m,
            w,
            sd[p + 'proj.bias'],
            stride=4 if s == 0 else 2,
            padding=k // 2)
    else:
        if pad:
            m = F.pad(m, (0, -m.shape[-1] % k, 0, -m.shape[-2] % k))
        m = F.conv2d(m, w, sd[p + 'proj.bias'], stride=k)
    hw = tuple(m.shape[-2:])
    x = _ln(sd, p + 'norm.', m.flatten(2).transpose(1, 2), 1e-5)
    if not v2:
        x = x + _resize(sd[f'pos_embed{s + 1}'], GRIDS[s], hw, mode)
    return x, hw


def reference_forward(sd, x, v2, depths, heads, pad=True, mode='bilinear'):
    """Return the stage taps and the logits.

    The taps are what each stage hands on, as ``(tokens, (H, W))``: the
    blocks' output for PVT v1, the output of ``norm{s}`` for PVTv2.
    ``pad`` zero-pads PVT v1's patch-embedding inputs on the bottom and
    right to a multiple of the patch size; ``mode`` resizes the position
    tables to other grids.
    """
    taps = []
    m = x
    for s in range(4):
        x, hw = _patch_embed(sd, s, m, v2, pad, mode)
        for j in range(depths[s]):
            p = f'block{s + 1}.{j}.'
            x = x + _attention(sd, p + 'attn.', _ln(sd, p + 'norm1.', x, 1e-6),
                               hw, heads[s], GRIDS[s], mode)
            x = x + _mlp(sd, p + 'mlp.', _ln(sd, p + 'norm2.', x, 1e-6), hw,
                         v2)
        if v2:
            x = _ln(sd, f'norm{s + 1}.', x, 1e-6)
        taps.append((x, hw))
        m = x.transpose(1, 2).reshape(x.shape[0], -1, *hw)
    # PVT v1's head skips its final norm (spec 2.2).
    logits = _linear(sd, 'head.', x.mean(1))
    return taps, logits
