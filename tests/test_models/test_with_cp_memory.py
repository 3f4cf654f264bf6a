# Copyright (c) OpenMMLab. All rights reserved.
"""``with_cp=True`` cuts the activation memory of a training step by at
least 40% on every backbone (counted tensor by tensor, so the figure is
exact and the same on any machine)."""
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


@pytest.mark.parametrize('type_name', sorted(ARCHS))
def test_with_cp_cuts_activation_memory_by_40_percent(type_name):
    image = torch.randn(1, 3, 256, 256)
    plain = training_step_memory(type_name, False, image)
    checkpointed = training_step_memory(type_name, True, image)
    # Stage 1 alone holds 64 x 64 tokens of 32 channels per saved tensor.
    assert plain > 50 * 64 * 64 * 32 * 4
    assert checkpointed <= 0.6 * plain
