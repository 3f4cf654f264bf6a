# Copyright (c) OpenMMLab. All rights reserved.
"""An independent functional FLatten-CSwin written from the spec.

It reads an *official-format* state dict directly (no key conversion, no
plugin code), so comparing it with :class:`mmplugin_l2vit.FLattenCSWin`
loaded through the converter checks the conversion and the arithmetic:
the focused linear attention in its closed (sum) form, the DWC with its
head-shared kernel tiled over all channels, the LePE convs, the stripes
cut one by one from the zero-padded map, and the stem and merge grids.
"""
import torch
import torch.nn.functional as F

ARCHS = dict(
    tiny=dict(
        dims=[64, 128, 256, 512],
        depths=[2, 4, 18, 1],
        heads=[2, 4, 8, 16],
        split=7,
        img=224),
    small=dict(
        dims=[64, 128, 256, 512],
        depths=[2, 4, 32, 2],
        heads=[2, 4, 8, 16],
        split=7,
        img=224),
    base=dict(
        dims=[96, 192, 384, 768],
        depths=[3, 6, 29, 2],
        heads=[4, 8, 16, 32],
        split=7,
        img=224),
)
ARCHS['base-384'] = dict(ARCHS['base'], split=12, img=384)


def official_state_dict(dims, depths, heads, img=224, num_classes=10, seed=0):
    """A random state dict with the official keys and shapes (spec 3.5),
    with non-trivial temperatures and positional encodings."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    sd = {}

    def ln(prefix, c):
        sd[prefix + 'weight'] = torch.rand(c, generator=g) + 0.5
        sd[prefix + 'bias'] = rnd(c, scale=0.1)

    def lin(prefix, cout, cin):
        sd[prefix + 'weight'] = rnd(cout, cin, scale=cin**-0.5)
        sd[prefix + 'bias'] = rnd(cout, scale=0.1)

    def conv(prefix, cout, cin_per_group, k):
        sd[prefix + 'weight'] = rnd(
            cout, cin_per_group, k, k, scale=(cin_per_group * k * k)**-0.5)
        sd[prefix + 'bias'] = rnd(cout, scale=0.1)

    conv('stage1_conv_embed.0.', dims[0], 3, 7)
    ln('stage1_conv_embed.2.', dims[0])
    for s in range(1, 5):
        c, h = dims[s - 1], heads[s - 1]
        for j in range(depths[s - 1]):
            p = f'stage{s}.{j}.'
            lin(p + 'qkv.', 3 * c, c)
            ln(p + 'norm1.', c)
            if s <= 2:
                side = img // 2**(s + 1)
                sd[p + 'attns.0.scale'] = rnd(1, 1, c, scale=0.5)
                sd[p + 'attns.0.positional_encoding'] = rnd(
                    1, side * side, c, scale=0.5)
                conv(p + 'attns.0.get_v.', c, 1, 3)
                conv(p + 'attns.0.dwc.', c // h, 1, 5)
            elif s == 3:
                conv(p + 'attns.0.get_v.', c // 2, 1, 3)
                conv(p + 'attns.1.get_v.', c // 2, 1, 3)
            else:
                conv(p + 'attns.0.get_v.', c, 1, 3)
            lin(p + 'proj.', c, c)
            lin(p + 'mlp.fc1.', 4 * c, c)
            lin(p + 'mlp.fc2.', c, 4 * c)
            ln(p + 'norm2.', c)
        if s < 4:
            conv(f'merge{s}.conv.', 2 * c, c, 3)
            ln(f'merge{s}.norm.', 2 * c)
    ln('norm.', dims[3])
    lin('head.', num_classes, dims[3])
    return sd


def _ln(sd, p, x):
    return F.layer_norm(x, x.shape[-1:], sd[p + 'weight'], sd[p + 'bias'])


def _depthwise(sd, p, m):
    """A depthwise conv on a (B, C, H, W) map, 'same' zero padding."""
    w = sd[p + 'weight']
    return F.conv2d(
        m, w, sd[p + 'bias'], padding=w.shape[-1] // 2, groups=m.shape[1])


def _phi(x, scale):
    x = (F.relu(x) + 1e-6) / F.softplus(scale)
    cube = x**3
    cube_norm = cube.norm(dim=-1, keepdim=True)
    return cube / cube_norm * x.norm(dim=-1, keepdim=True)


def _focused_attention(sd, p, q, k, v, heads, pos_mode):
    """(B, H, W, C) maps -> (B, H, W, C)."""
    b, h, w, c = q.shape
    pos = sd[p + 'positional_encoding']
    side = int(round(pos.shape[1]**0.5))
    pos = pos.reshape(1, side, side, c).permute(0, 3, 1, 2)
    if (side, side) != (h, w):
        pos = F.interpolate(
            pos, size=(h, w), mode=pos_mode, align_corners=False)
    k = k + pos.permute(0, 2, 3, 1)
    q = _phi(q.reshape(b, h * w, c), sd[p + 'scale'])
    k = _phi(k.reshape(b, h * w, c), sd[p + 'scale'])
    vt = v.reshape(b, h * w, c)
    d = c // heads
    # Closed form per head: sum_j (q.k_j) v_j / (sum_j q.k_j + n * 1e-6).
    qh, kh, vh = (t.reshape(b, h * w, heads, d) for t in (q, k, vt))
    num = torch.einsum('bnhd,bhde->bnhe', qh,
                       torch.einsum('bmhd,bmhe->bhde', kh, vh))
    den = torch.einsum('bnhd,bhd->bnh', qh, kh.sum(1)) + h * w * 1e-6
    out = (num / den[..., None]).reshape(b, h, w, c)
    v_map = v.permute(0, 3, 1, 2)
    # The DWC kernel is shared by the heads: tile it over all C channels.
    tiled = {
        'weight': sd[p + 'dwc.weight'].repeat(heads, 1, 1, 1),
        'bias': sd[p + 'dwc.bias'].repeat(heads)
    }
    out = out + _depthwise(tiled, '', v_map).permute(0, 2, 3, 1)
    return out + _depthwise(sd, p + 'get_v.', v_map).permute(0, 2, 3, 1)


def _stripe_attention(sd, p, q, k, v, heads, win_h, win_w):
    """Softmax attention + LePE in (win_h, win_w) windows of (B, H, W, C)
    maps, cut one by one after zero-padding on the right and bottom."""
    b, h, w, c = q.shape
    pad = (0, 0, 0, -w % win_w, 0, -h % win_h)
    q, k, v = (F.pad(t, pad) for t in (q, k, v))
    out = torch.zeros_like(q)
    d = c // heads
    for top in range(0, q.shape[1], win_h):
        for left in range(0, q.shape[2], win_w):
            rows, cols = slice(top, top + win_h), slice(left, left + win_w)
            qw, kw, vw = (
                t[:, rows, cols].reshape(b, -1, heads, d) for t in (q, k, v))
            logits = torch.einsum('bnhd,bmhd->bhnm', qw, kw) * d**-0.5
            att = torch.einsum('bhnm,bmhd->bnhd', logits.softmax(-1), vw)
            v_window = v[:, rows, cols].permute(0, 3, 1, 2)
            lepe = _depthwise(sd, p + 'get_v.', v_window)
            out[:, rows, cols] = att.reshape(b, win_h, win_w, c) + \
                lepe.permute(0, 2, 3, 1)
    return out[:, :h, :w]


def _block(sd, p, x, stage, heads, split, pos_mode):
    _, h, w, c = x.shape
    y = _ln(sd, p + 'norm1.', x)
    qkv = F.linear(y, sd[p + 'qkv.weight'], sd[p + 'qkv.bias'])
    q, k, v = qkv.split(c, dim=-1)
    if stage < 2:
        out = _focused_attention(sd, p + 'attns.0.', q, k, v, heads, pos_mode)
    elif stage == 2:
        # Vertical stripes on the first half of the channels, horizontal
        # ones on the second.
        first, second = slice(None, c // 2), slice(c // 2, None)
        branches = [(first, h, split), (second, split, w)]
        outs = [
            _stripe_attention(sd, f'{p}attns.{i}.', q[..., part], k[..., part],
                              v[..., part], heads // 2, *window)
            for i, (part, *window) in enumerate(branches)
        ]
        out = torch.cat(outs, dim=-1)
    else:
        out = _stripe_attention(sd, p + 'attns.0.', q, k, v, heads, h, w)
    x = x + F.linear(out, sd[p + 'proj.weight'], sd[p + 'proj.bias'])
    y = _ln(sd, p + 'norm2.', x)
    y = F.gelu(F.linear(y, sd[p + 'mlp.fc1.weight'], sd[p + 'mlp.fc1.bias']))
    return x + F.linear(y, sd[p + 'mlp.fc2.weight'], sd[p + 'mlp.fc2.bias'])


def reference_forward(sd, x, depths, heads, split=7, pos_mode='bilinear'):
    """Return (per stage the (B, H*W, C) tokens before any output norm and
    their (H, W), logits)."""
    stem = 'stage1_conv_embed.'
    m = F.conv2d(
        x, sd[stem + '0.weight'], sd[stem + '0.bias'], stride=4, padding=2)
    x = _ln(sd, stem + '2.', m.permute(0, 2, 3, 1))
    stages = []
    for i in range(4):
        if i:
            p = f'merge{i}.'
            m = F.conv2d(
                x.permute(0, 3, 1, 2),
                sd[p + 'conv.weight'],
                sd[p + 'conv.bias'],
                stride=2,
                padding=1)
            x = _ln(sd, p + 'norm.', m.permute(0, 2, 3, 1))
        for j in range(depths[i]):
            x = _block(sd, f'stage{i + 1}.{j}.', x, i, heads[i], split,
                       pos_mode)
        b, h, w, c = x.shape
        stages.append((x.reshape(b, h * w, c), (h, w)))
    pooled = _ln(sd, 'norm.', x).mean((1, 2))
    logits = F.linear(pooled, sd['head.weight'], sd['head.bias'])
    return stages, logits
