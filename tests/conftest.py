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

# A small L²ViT (head dim 32 as in the real ones) for fast tests.
SMALL_ARCH = dict(
    embed_dims=[32, 64, 128, 256],
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 4, 8],
    window_size=7)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
