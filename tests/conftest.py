# Copyright (c) OpenMMLab. All rights reserved.
import os
import os.path as osp
import sys

import pytest
import torch

# Test this checkout's package (pytest-xdist workers do not put the working
# directory on sys.path); the reference models and helpers live next to the
# tests.
TESTS = osp.dirname(osp.abspath(__file__))
sys.path[:0] = [osp.dirname(TESTS), TESTS]

# pytest-xdist workers share the cores: one thread pool each, sized so
# they do not oversubscribe the machine (which slows everything badly).
_workers = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))

# Small archs of every backbone type for fast tests: the real head dim
# (32), one block a stage where one block shows every kind, two where
# blocks alternate (L²ViT's local and global blocks; FLatten-Swin's shifted
# windows in stages 3 and 4).
SMALL_DIMS = [32, 64, 128, 256]
SMALL_HEADS = [1, 2, 4, 8]
SMALL_ARCHS = {
    'L2ViT':
    dict(
        embed_dims=SMALL_DIMS,
        depths=[2, 2, 2, 2],
        num_heads=SMALL_HEADS,
        window_size=7),
    'FLattenPVT':
    dict(embed_dims=SMALL_DIMS, depths=[1, 1, 1, 1], num_heads=SMALL_HEADS),
    'FLattenPVTv2':
    dict(embed_dims=SMALL_DIMS, depths=[1, 1, 1, 1], num_heads=SMALL_HEADS),
    'FLattenSwin':
    dict(embed_dims=SMALL_DIMS, depths=[1, 1, 2, 2], num_heads=SMALL_HEADS),
    'FLattenCSWin':
    dict(embed_dims=SMALL_DIMS, depths=[1, 1, 1, 1], num_heads=SMALL_HEADS),
}
# The small L²ViT, the backbone of the runtime and analysis tests.
SMALL_ARCH = SMALL_ARCHS['L2ViT']


def ceil_quarter(size):
    """A stem of stride 4 that pads the input to a multiple of 4."""
    return -(-size // 4)


def overlapping_quarter(size):
    """A 7x7 stem convolution of stride 4 and padding 2 (FLatten-CSWin's)."""
    return (size - 3) // 4 + 1


def stage_sizes(height, width, stem=ceil_quarter):
    """The map sizes of the four stages: ``stem`` gives the first from the
    input's, each downsampling halves them, rounding up."""
    sizes = [(stem(height), stem(width))]
    for _ in range(3):
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    return sizes


def randomise_zero_init(model):
    """Draw every parameter that starts at zero (biases, FLatten's
    ``scale`` and positional encodings) from N(0, 1), so that it counts in
    a test."""
    with torch.no_grad():
        for param in model.parameters():
            if not param.any():
                param.normal_()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
