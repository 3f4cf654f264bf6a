# Copyright (c) OpenMMLab. All rights reserved.
import os.path as osp
import sys

import pytest
import torch

# The reference model and helpers live next to the tests.
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

# A small L²ViT (head dim 32 as in the real ones) for fast tests.
SMALL_ARCH = dict(
    embed_dims=[32, 64, 128, 256],
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 4, 8],
    window_size=7)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
