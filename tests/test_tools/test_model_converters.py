# Copyright (c) OpenMMLab. All rights reserved.
"""tools/model_converters/l2vit2mmdet.py on generated official files."""
import argparse
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from http_serving import serve_directory
from l2vit_reference import official_state_dict

from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.models.converters import L2VIT_CONVERTER

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'model_converters', 'l2vit2mmdet.py')
DIMS, DEPTHS, HEADS = [32, 64, 128, 256], [2, 2, 2, 2], [1, 2, 4, 8]
ARCH = dict(embed_dims=DIMS, depths=DEPTHS, num_heads=HEADS, window_size=7)


def convert(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.fixture
def release_file(tmp_path):
    raw = official_state_dict(DIMS, DEPTHS, HEADS, seed=0)
    ema = official_state_dict(DIMS, DEPTHS, HEADS, seed=1)
    path = tmp_path / 'L2ViT-checkpoint-best-ema.pth'
    torch.save(
        dict(model=raw, model_ema=ema, epoch='best-ema',
             args=argparse.Namespace(model='L2ViT_Tiny')), path)
    return path, raw, ema


@pytest.mark.parametrize('use_ema', [False, True])
def test_round_trip_through_pretrained_init(tmp_path, release_file, use_ema):
    src, raw, ema = release_file
    dst = tmp_path / 'out' / 'l2vit.pth'
    result = convert(src, dst, *(['--ema'] if use_ema else []))
    assert result.returncode == 0, result.stderr
    expected = L2VIT_CONVERTER.convert(ema if use_ema else raw)
    assert len(expected) == len(raw) - 2  # the classifier is dropped
    assert f'wrote {len(expected)} tensors' in result.stdout
    written = torch.load(dst)
    assert written.keys() == expected.keys()
    for key in expected:
        assert torch.equal(written[key], expected[key]), key

    model = L2ViT(ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    for key, value in expected.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_mmpretrain_layout(tmp_path, release_file):
    src, raw, _ = release_file
    dst = tmp_path / 'cls.pth'
    assert convert(src, dst, '--mmpretrain').returncode == 0
    written = torch.load(dst)
    assert torch.equal(written['head.fc.weight'], raw['head.weight'])
    assert torch.equal(written['backbone.norm3.bias'], raw['norm.bias'])
    assert all(k.startswith(('backbone.', 'head.fc.')) for k in written)


def test_foreign_file_refused_and_nothing_written(tmp_path):
    src = tmp_path / 'swin.pth'
    torch.save({'patch_embed.projection.weight': torch.zeros(1)}, src)
    dst = tmp_path / 'out.pth'
    result = convert(src, dst)
    assert result.returncode != 0
    assert 'not an official L2ViT checkpoint' in result.stderr
    assert not dst.exists()


def test_source_is_never_overwritten(release_file):
    src, _, _ = release_file
    before = src.read_bytes()
    result = convert(src, src)
    assert result.returncode != 0
    assert 'refusing to overwrite' in result.stderr
    assert src.read_bytes() == before


def test_url_source_is_downloaded_and_converted(tmp_path, release_file):
    src, raw, _ = release_file
    dst = tmp_path / 'converted.pth'
    hub = tmp_path / 'torch_home'
    with serve_directory(src.parent) as base_url:
        result = convert(f'{base_url}/{src.name}', dst,
                         env=dict(os.environ, TORCH_HOME=str(hub)))
    assert result.returncode == 0, result.stderr
    # Downloaded once into torch's hub cache, under the URL's file name.
    cached = hub / 'hub' / 'checkpoints' / src.name
    assert cached.read_bytes() == src.read_bytes()
    expected = L2VIT_CONVERTER.convert(raw)
    written = torch.load(dst)
    assert written.keys() == expected.keys()
    for key in expected:
        assert torch.equal(written[key], expected[key]), key
