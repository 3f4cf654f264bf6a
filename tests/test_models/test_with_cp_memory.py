# Copyright (c) OpenMMLab. All rights reserved.
"""``with_cp=True`` cuts the activation memory of a training step on top of
the frugal default (counted tensor by tensor, so the figure is exact and
the same on any machine): by at least 40% for L2ViT, FLatten-PVT,
FLatten-PVTv2 and FLatten-Swin.

FLatten-CSWin's test model reaches less (the real FLatten-CSWin-T at 512²
reaches about 70%), and its bound says what it reaches today. With the
frugal default a block keeps about as much for its backward pass as the
peak of one block's backward needs transiently (both branches' focusing
functions rerun together), and a checkpoint can only remove the former:
with two blocks a stage the checkpointed peak is at least half the default
one's. PVT's and PVTv2's 8x wide MLPs had the same limit until their
backward pass took the hidden channels a chunk at a time
(``channelwise_mlp``)."""
import pytest
import torch
from conftest import SMALL_ARCHS

import mmplugin_l2vit
from mmplugin_l2vit.analysis import peak_activation_memory

# Two blocks a stage, as in the Tiny models: what a checkpoint keeps (the
# input of each block) against what a block saves for backward.
ARCHS = {
    name: dict(arch, depths=[2, 2, 2, 2])
    for name, arch in SMALL_ARCHS.items()
}


def training_step_memory(type_name, with_cp, image):
    torch.manual_seed(0)
    model = getattr(mmplugin_l2vit, type_name)(
        ARCHS[type_name], with_cp=with_cp)
    model.train()

    def step():
        sum(o.square().mean() for o in model(image)).backward()

    step()  # gradients allocated once, kept: activations alone remain
    return peak_activation_memory(model, step)


# The most a checkpointed step may keep, as a share of the default's.
MAX_CHECKPOINTED_SHARE = {
    'L2ViT': 0.6,
    'FLattenPVT': 0.6,
    'FLattenSwin': 0.6,
    'FLattenPVTv2': 0.6,
    'FLattenCSWin': 0.63,
}


@pytest.mark.parametrize('type_name', sorted(ARCHS))
def test_with_cp_cuts_activation_memory(type_name):
    image = torch.randn(1, 3, 256, 256)
    plain = training_step_memory(type_name, False, image)
    checkpointed = training_step_memory(type_name, True, image)
    # Stage 1 alone holds 64 x 64 tokens of 32 channels per saved tensor.
    assert plain > 40 * 64 * 64 * 32 * 4
    assert checkpointed <= MAX_CHECKPOINTED_SHARE[type_name] * plain
