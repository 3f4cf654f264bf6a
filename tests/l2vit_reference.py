# Copyright (c) OpenMMLab. All rights reserved.
"""An independent functional L²ViT written from the official key layout.

It reads an *official-format* state dict directly (no key conversion, no
plugin code), so comparing it with :class:`mmplugin_l2vit.L2ViT` loaded
through the converter checks the conversion and every numerical quirk:
the stem's BN-then-LN, the linear attention's denominator floor of 100,
right/bottom zero padding and unmasked window padding.
"""
import torch
import torch.nn.functional as F

ARCHS = dict(
    tiny=dict(dims=[96, 192, 384, 768], depths=[2, 2, 6, 2],
              heads=[3, 6, 12, 24], window=7),
    small=dict(dims=[96, 192, 384, 768], depths=[2, 2, 18, 2],
               heads=[3, 6, 12, 24], window=7),
    base=dict(dims=[128, 256, 512, 1024], depths=[2, 2, 18, 2],
              heads=[4, 8, 16, 32], window=7),
)


def official_state_dict(dims, depths, heads, num_classes=10, seed=0):
    """A random state dict with the official classification keys/shapes,
    including random BatchNorm statistics and temperatures."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    def pos(*shape):
        return torch.rand(*shape, generator=g) + 0.5

    sd = {}

    def bn(prefix, c):
        sd[prefix + 'weight'] = pos(c)
        sd[prefix + 'bias'] = rnd(c, scale=0.1)
        sd[prefix + 'running_mean'] = rnd(c, scale=0.1)
        sd[prefix + 'running_var'] = pos(c)
        sd[prefix + 'num_batches_tracked'] = torch.tensor(7)

    def ln(prefix, c):
        sd[prefix + 'weight'] = pos(c)
        sd[prefix + 'bias'] = rnd(c, scale=0.1)

    def lin(prefix, cout, cin, scale=None):
        sd[prefix + 'weight'] = rnd(cout, cin, scale=scale or cin**-0.5)
        sd[prefix + 'bias'] = rnd(cout, scale=0.1)

    def conv(prefix, cout, cin, k):
        sd[prefix + 'weight'] = rnd(cout, cin, k, k, scale=(cin * k * k)**-.5)
        sd[prefix + 'bias'] = rnd(cout, scale=0.1)

    c0 = dims[0]
    conv('downsample_layers.0.proj.proj.0.', c0 // 2, 3, 3)
    bn('downsample_layers.0.proj.proj.1.', c0 // 2)
    conv('downsample_layers.0.proj.proj.3.', c0, c0 // 2, 3)
    bn('downsample_layers.0.proj.proj.4.', c0)
    ln('downsample_layers.0.norm.', c0)
    for i in range(1, 4):
        conv(f'downsample_layers.{i}.proj.', dims[i], dims[i - 1], 2)
        ln(f'downsample_layers.{i}.norm.', dims[i - 1])
    for i, (c, depth, h) in enumerate(zip(dims, depths, heads)):
        for j in range(depth):
            p = f'stages.{i}.{j}.'
            conv(p + 'cpe.0.proj.', c, 1, 3)
            if j % 2 == 0:
                conv(p + 'cpe.1.proj.', c, 1, 3)
            ln(p + 'norm1.', c)
            if j % 2 == 1:
                sd[p + 'attn.temperature'] = pos(h, 1, 1) * 0.3
            lin(p + 'attn.qkv.', 3 * c, c)
            lin(p + 'attn.proj.', c, c)
            ln(p + 'norm2.', c)
            lin(p + 'mlp.fc1.', 4 * c, c)
            lin(p + 'mlp.fc2.', c, 4 * c)
            if j % 2 == 1:
                ln(p + 'norm3.', c)
                conv(p + 'local_mp.conv1.', c, 1, 7)
                bn(p + 'local_mp.bn.', c)
                conv(p + 'local_mp.conv2.', c, 1, 7)
    ln('norm.', dims[-1])
    lin('head.', num_classes, dims[-1])
    return sd


def _cpe(sd, p, x, hw):
    b, n, c = x.shape
    m = x.transpose(1, 2).reshape(b, c, *hw)
    m = F.conv2d(m, sd[p + 'weight'], sd[p + 'bias'], padding=1, groups=c)
    return x + m.flatten(2).transpose(1, 2)


def _ln(sd, p, x):
    return F.layer_norm(x, x.shape[-1:], sd[p + 'weight'], sd[p + 'bias'])


def _bn(sd, p, x):
    return F.batch_norm(x, sd[p + 'running_mean'], sd[p + 'running_var'],
                        sd[p + 'weight'], sd[p + 'bias'], False, 0., 1e-5)


def _mlp(sd, p, x):
    x = F.gelu(F.linear(x, sd[p + 'fc1.weight'], sd[p + 'fc1.bias']))
    return F.linear(x, sd[p + 'fc2.weight'], sd[p + 'fc2.bias'])


def _qkv(sd, p, x, heads):
    b, n, c = x.shape
    qkv = F.linear(x, sd[p + 'qkv.weight'], sd[p + 'qkv.bias'])
    qkv = qkv.reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def _window_attention(sd, p, x, hw, heads, ws):
    b, n, c = x.shape
    h, w = hw
    x = x.reshape(b, h, w, c)
    ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
    x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    win = x.reshape(b, hp // ws, ws, wp // ws, ws, c).permute(
        0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
    q, k, v = _qkv(sd, p, win, heads)
    attn = ((q * (c // heads)**-0.5) @ k.transpose(-2, -1)).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(-1, ws * ws, c)
    out = F.linear(out, sd[p + 'proj.weight'], sd[p + 'proj.bias'])
    out = out.reshape(b, hp // ws, wp // ws, ws, ws, c).permute(
        0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    return out[:, :h, :w].reshape(b, h * w, c)


def _linear_attention(sd, p, x, heads):
    b, n, c = x.shape
    q, k, v = _qkv(sd, p, x, heads)
    q, k = q.relu(), k.relu()
    # Written from the formula, sum over keys of (q.k) v / max(q.sum k, 100)
    den = torch.clamp(torch.einsum('bhnd,bhd->bhn', q, k.sum(2)), min=100.)
    kv = torch.einsum('bhnd,bhne->bhde', k, v) * sd[p + 'temperature']
    out = torch.einsum('bhnd,bhde->bhne', q, kv) / den[..., None]
    out = out.transpose(1, 2).reshape(b, n, c)
    return F.linear(out, sd[p + 'proj.weight'], sd[p + 'proj.bias'])


def _lcm(sd, p, x, hw):
    b, n, c = x.shape
    m = x.transpose(1, 2).reshape(b, c, *hw)
    m = F.conv2d(m, sd[p + 'conv1.weight'], sd[p + 'conv1.bias'], padding=3,
                 groups=c)
    m = _bn(sd, p + 'bn.', F.gelu(m))
    m = F.conv2d(m, sd[p + 'conv2.weight'], sd[p + 'conv2.bias'], padding=3,
                 groups=c)
    return m.flatten(2).transpose(1, 2)


def reference_forward(sd, x, depths, heads, window):
    """Return (stage tokens before any output norm, logits)."""
    p = 'downsample_layers.0.'
    x = F.pad(x, (0, -x.shape[-1] % 4, 0, -x.shape[-2] % 4))
    x = F.conv2d(x, sd[p + 'proj.proj.0.weight'], sd[p + 'proj.proj.0.bias'],
                 stride=2, padding=1)
    x = _bn(sd, p + 'proj.proj.1.', x).relu()
    x = F.conv2d(x, sd[p + 'proj.proj.3.weight'], sd[p + 'proj.proj.3.bias'],
                 stride=2, padding=1)
    x = _bn(sd, p + 'proj.proj.4.', x)
    hw = tuple(x.shape[-2:])
    x = _ln(sd, p + 'norm.', x.flatten(2).transpose(1, 2))
    stages = []
    for i in range(4):
        if i:
            p = f'downsample_layers.{i}.'
            b, n, c = x.shape
            m = _ln(sd, p + 'norm.', x).transpose(1, 2).reshape(b, c, *hw)
            m = F.pad(m, (0, hw[1] % 2, 0, hw[0] % 2))
            m = F.conv2d(m, sd[p + 'proj.weight'], sd[p + 'proj.bias'],
                         stride=2)
            hw = tuple(m.shape[-2:])
            x = m.flatten(2).transpose(1, 2)
        for j in range(depths[i]):
            p = f'stages.{i}.{j}.'
            x = _cpe(sd, p + 'cpe.0.proj.', x, hw)
            if j % 2 == 0:
                x = x + _window_attention(sd, p + 'attn.',
                                          _ln(sd, p + 'norm1.', x), hw,
                                          heads[i], window)
                x = _cpe(sd, p + 'cpe.1.proj.', x, hw)
            else:
                x = x + _linear_attention(sd, p + 'attn.',
                                          _ln(sd, p + 'norm1.', x), heads[i])
                x = x + _lcm(sd, p + 'local_mp.', _ln(sd, p + 'norm3.', x),
                             hw)
            x = x + _mlp(sd, p + 'mlp.', _ln(sd, p + 'norm2.', x))
        stages.append((x, hw))
    pooled = _ln(sd, 'norm.', x).mean(1)
    logits = F.linear(pooled, sd['head.weight'], sd['head.bias'])
    return stages, logits
