# Copyright (c) OpenMMLab. All rights reserved.
"""ONNX export (tools/deployment/pytorch2onnx.py): every backbone and the
demo segmentor run in onnxruntime and match PyTorch at the export size and,
with dynamic axes, at other sizes; the eager in-place inference paths are
never taken while tracing, exporting or compiling."""
import os.path as osp
from importlib.util import module_from_spec, spec_from_file_location

import onnx
import pytest
import torch
import torch.nn as nn
from conftest import SMALL_ARCHS as ARCHS

import mmplugin_l2vit
from mmplugin_l2vit import deployment
from mmplugin_l2vit.models.backbones import base
from mmplugin_l2vit.models.layers import cpu_inference

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG_DEMO = osp.join(REPO, 'configs', 'demo', 'upernet_l2vit-demo_shapes.py')
TOOL = osp.join(REPO, 'tools', 'deployment', 'pytorch2onnx.py')
TOLERANCE = 1e-4
# The export size; a size that is not a multiple of the windows (7) or of
# the total stride (32); one whose last stages fit in one window (Swin).
SIZES = [(224, 224), (200, 264), (96, 160)]


def small_backbone(type_name):
    model = getattr(mmplugin_l2vit, type_name)(ARCHS[type_name])
    # Weights far from the initialisation, so that every branch counts.
    for param in model.parameters():
        nn.init.normal_(param, std=0.1)
    return model.eval()


def input_dims(path):
    dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    return [dim.dim_param or dim.dim_value for dim in dims]


@pytest.mark.parametrize('type_name', sorted(ARCHS))
def test_backbone_matches_pytorch_at_other_sizes(type_name, tmp_path):
    model = small_backbone(type_name)
    path = str(tmp_path / 'backbone.onnx')
    names = deployment.export_onnx(model, SIZES[0], path, dynamic=True)
    assert names == ['output0', 'output1', 'output2', 'output3']
    assert input_dims(path) == ['batch', 3, 'input_height', 'input_width']
    session = deployment.onnxruntime_session(path)
    errors = deployment.relative_errors(model, session, SIZES)
    assert max(errors) <= TOLERANCE, dict(zip(SIZES, errors))


def load_tool():
    spec = spec_from_file_location('pytorch2onnx', TOOL)
    tool = module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_demo_segmentor_exports_whole(tmp_path, capsys):
    model, kind = deployment.build_exportable(SEG_DEMO)
    assert kind == 'segmentor'
    assert isinstance(model.segmentor.backbone, mmplugin_l2vit.L2ViT)
    checkpoint = str(tmp_path / 'segmentor.pth')
    torch.save(dict(state_dict=model.segmentor.state_dict()), checkpoint)
    path = str(tmp_path / 'segmentor.onnx')
    # A size no multiple of the windows or strides, and another.
    load_tool().main([
        SEG_DEMO, '--checkpoint', checkpoint, '--shape', '128', '--dynamic',
        '--verify', '100', '132', '--verify', '96', '160', '--out', path
    ])
    printed = capsys.readouterr().out
    assert f'wrote {path}: segmentor' in printed
    for size in ('128x128', '100x132', '96x160'):
        assert f'at {size}: largest difference' in printed
    assert printed.count('(ok)') == 3
    # Two images at once: seg logits at the input size.
    session = deployment.onnxruntime_session(path)
    inputs = torch.randn(2, 3, 100, 132)
    (logits, ) = session.run(None, {'input': inputs.numpy()})
    assert logits.shape == (2, 4, 100, 132)
    with torch.no_grad():
        expected = model(inputs)
    assert (torch.from_numpy(logits) - expected).abs().max() <= \
        TOLERANCE * expected.abs().max()


def test_segmentor_backbone_only(tmp_path):
    model, kind = deployment.build_exportable(SEG_DEMO, backbone_only=True)
    assert kind == 'backbone'
    assert isinstance(model, mmplugin_l2vit.L2ViT)


@pytest.mark.parametrize('hw', [(6, 6), (7, 11), (13, 9), (24, 40)])
@pytest.mark.parametrize('output_size', [1, 2, 3, 6])
def test_traceable_adaptive_pooling(hw, output_size):
    x = torch.randn(2, 5, *hw)
    pool = deployment.TraceableAdaptiveAvgPool2d(output_size)
    torch.testing.assert_close(
        pool(x), nn.AdaptiveAvgPool2d(output_size)(x), rtol=1e-6, atol=1e-6)


def test_cli_rejects_other_sizes_of_a_static_graph(capsys):
    with pytest.raises(SystemExit):
        load_tool().parse_args(['L2ViT:tiny', '--verify', '200', '264'])
    assert 'needs --dynamic' in capsys.readouterr().err


# --------------------------------------------------------------------------
# The eager in-place inference paths stay out of traced graphs.
# --------------------------------------------------------------------------


@pytest.fixture
def in_place_calls(monkeypatch):
    """Record, for every block run by the in-place inference
    (``forward_in_place``, as the stages call it), whether a trace or an
    export was under way."""
    calls = []

    def spy(*args, **kwargs):
        calls.append(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export())
        return cpu_inference.forward_in_place(*args, **kwargs)

    monkeypatch.setattr(base, 'forward_in_place', spy)
    return calls


@pytest.mark.parametrize('type_name', ['L2ViT', 'FLattenSwin'])
def test_no_in_place_path_while_exporting(type_name, in_place_calls, tmp_path):
    model = small_backbone(type_name)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    assert in_place_calls and not any(in_place_calls)  # eager inference
    in_place_calls.clear()
    path = str(tmp_path / 'static.onnx')
    deployment.export_onnx(model, (64, 96), path)
    assert not any(in_place_calls)
    # Without --dynamic the graph is fixed to the traced size.
    assert input_dims(path) == [1, 3, 64, 96]
    session = deployment.onnxruntime_session(path)
    assert deployment.relative_errors(model, session,
                                      [(64, 96)])[0] <= TOLERANCE


def test_no_in_place_path_while_tracing(in_place_calls):
    model = small_backbone('FLattenPVT')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        assert not any(in_place_calls)
        for out, ref in zip(traced(x), model(x)):
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert in_place_calls  # the eager reference took it


@pytest.mark.parametrize(
    'namespace, flag', [(torch.jit, 'is_tracing'),
                        (torch.onnx, 'is_in_onnx_export'),
                        (torch.compiler, 'is_compiling')],
    ids=['tracing', 'exporting', 'compiling'])
def test_in_place_gate(namespace, flag, monkeypatch):
    x = torch.randn(1, 10, 8)
    with torch.no_grad():
        assert cpu_inference.is_cpu_inference(x)
        monkeypatch.setattr(namespace, flag, lambda: True)
        assert not cpu_inference.is_cpu_inference(x)
