# Copyright (c) OpenMMLab. All rights reserved.
"""MAC counts include the attention matmuls and match the spec's numbers."""
import importlib.util
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.analysis import count_macs, count_macs_of

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# Spec, measured on the official model (conv + linear + matmul) including
# the 1000-class head, which the backbone does not have.
HEAD_MACS = 768 * 1000


def test_l2vit_tiny_macs_match_official_count():
    macs = count_macs(L2ViT('tiny', out_indices=(3, )).eval(),
                      torch.randn(1, 3, 224, 224))
    assert macs['total'] + HEAD_MACS == pytest.approx(4.688e9, rel=2e-4)
    # The attention matmuls are in: window softmax and linear attention.
    assert macs['aten._scaled_dot_product_flash_attention_for_cpu'] > 6e7
    assert macs['aten.bmm'] > 4e7


@pytest.mark.parametrize('groups', [1, 4, 16])
@pytest.mark.parametrize('input_grad', [True, False])
def test_convolution_backward_counts_one_forward_per_gradient(
        groups, input_grad):
    conv = torch.nn.Conv2d(16, 32, 3, padding=1, groups=groups)
    x = torch.randn(2, 16, 10, 12, requires_grad=input_grad)
    forward = 2 * 32 * 10 * 12 * (16 // groups) * 9
    macs = count_macs_of(lambda: conv(x).sum().backward())
    assert macs['aten.convolution'] == forward
    # Weight gradient always, input gradient only when asked for.
    assert macs['aten.convolution_backward'] == forward * (1 + input_grad)


def padded_window_proj_macs(height, width):
    """MACs the official L2ViT-T spends projecting zero-padded window
    tokens, which the plugin skips: its ``proj`` runs after the crop."""
    total, lwa_blocks = 0, [1, 1, 3, 1]
    h, w = -(-height // 4), -(-width // 4)
    for stage, channels in enumerate([96, 192, 384, 768]):
        if stage:
            h, w = -(-h // 2), -(-w // 2)
        padded = (h + -h % 7) * (w + -w % 7)
        total += lwa_blocks[stage] * (padded - h * w) * channels**2
    return total


def test_linear_cost_at_detection_size():
    macs = count_macs(L2ViT('tiny').eval(), torch.randn(1, 3, 800, 1280))
    # Spec: 97.6 GMACs for the official backbone at 800x1280.
    assert macs['total'] + padded_window_proj_macs(800, 1280) == \
        pytest.approx(97.6e9, rel=1e-3)


def test_cli_with_config_counts_backbone_and_neck():
    result = subprocess.run(
        [sys.executable, 'tools/analysis_tools/get_flops.py',
         'configs/mask_rcnn_l2vit.py', '--shape', '512'],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    backbone = next(line for line in lines if line.startswith('backbone'))
    name, params, gmacs = backbone.split()[1:]
    assert (name, params) == ('L2ViT', '27.83M')
    # Spec: 25.5 GMACs for the official backbone at 512x512.
    official = float(gmacs) + padded_window_proj_macs(512, 512) / 1e9
    assert official == pytest.approx(25.5, rel=2e-3)
    assert any(line.startswith('neck') for line in lines)


@pytest.mark.parametrize('type_name,arch,spec_gmacs,head_in', [
    ('FLattenPVT', 'tiny', 2.04, 512),
    ('FLattenPVTv2', 'b0', 0.58, 256),
    ('FLattenSwin', 'tiny', 4.48, 768),
    ('FLattenCSWin', 'tiny', 4.32, 512),
])
def test_flatten_macs_match_spec(type_name, arch, spec_gmacs, head_in):
    import mmplugin_l2vit
    backbone = getattr(mmplugin_l2vit, type_name)(arch, out_indices=(3, ))
    macs = count_macs(backbone.eval(), torch.randn(1, 3, 224, 224))
    # The spec counts the official model with its 1000-class head.
    assert (macs['total'] + head_in * 1000) / 1e9 == pytest.approx(
        spec_gmacs, abs=0.006)


def test_cli_with_type_and_arch_counts_the_backbone(capsys):
    spec = importlib.util.spec_from_file_location(
        'get_flops_tool', osp.join(REPO, 'tools/analysis_tools/get_flops.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(['FLattenPVTv2:b0', '--shape', '64', '48'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'input shape: 1x3x64x48'
    assert [line.split()[:2] for line in lines[2:]] == [[
        'backbone', 'FLattenPVTv2'
    ]]
    with pytest.raises(SystemExit):
        tool.main(['NoSuchNet:tiny'])
    assert "cannot build 'NoSuchNet:tiny'" in capsys.readouterr().err
