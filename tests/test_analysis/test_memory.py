# Copyright (c) OpenMMLab. All rights reserved.
"""peak_activation_memory counts the tensors a call creates, exactly."""
import torch
import torch.nn as nn

from mmplugin_l2vit.analysis import peak_activation_memory


def test_counts_intermediate_tensors_not_parameters():
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8))
    x = torch.randn(100, 64)
    with torch.no_grad():
        peak = peak_activation_memory(model, lambda: model(x))
    # At most the hidden layer's input and output of the ReLU are alive
    # together (100 x 256 floats each); the weights (~70 kB) are not counted.
    hidden = 100 * 256 * 4
    assert hidden <= peak <= 2 * hidden + 100 * 8 * 4


def test_saved_activations_count_in_training():
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8))
    x = torch.randn(100, 64)
    with torch.no_grad():
        inference = peak_activation_memory(model, lambda: model(x))
    training = peak_activation_memory(model, lambda: model(x).sum().backward())
    # Training keeps the hidden activations for backward: more memory.
    assert training >= inference + 100 * 256 * 4
