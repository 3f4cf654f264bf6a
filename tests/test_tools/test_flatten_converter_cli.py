# Copyright (c) OpenMMLab. All rights reserved.
"""tools/model_converters/flatten2mmdet.py on generated official files of
every family, and refusal of a file of the wrong family."""
import os
import os.path as osp
import subprocess
import sys

import flatten_cswin_reference as cswin_ref
import flatten_pvt_reference as pvt_ref
import flatten_swin_reference as swin_ref
import pytest
import torch
from http_serving import serve_directory

from mmplugin_l2vit import FLattenCSWin, FLattenPVT, FLattenPVTv2, FLattenSwin
from mmplugin_l2vit.models.converters import FLATTEN_SWIN_CONVERTER

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'model_converters', 'flatten2mmdet.py')
DIMS, HEADS = [32, 64, 128, 256], [1, 2, 4, 8]
DEPTHS = [1, 1, 2, 1]
ARCH = dict(embed_dims=DIMS, depths=DEPTHS, num_heads=HEADS)
FAMILIES = {
    'pvt': (FLattenPVT, lambda: pvt_ref.official_state_dict(
        False, DIMS, DEPTHS, HEADS)),
    'pvt_v2': (FLattenPVTv2, lambda: pvt_ref.official_state_dict(
        True, DIMS, DEPTHS, HEADS)),
    'swin': (FLattenSwin, lambda: swin_ref.official_state_dict(
        DIMS, DEPTHS, HEADS)),
    'cswin': (FLattenCSWin, lambda: cswin_ref.official_state_dict(
        DIMS, DEPTHS, HEADS)),
}


def convert(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env=env)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_convert_and_load(tmp_path, family):
    backbone_type, official = FAMILIES[family]
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.pth'
    torch.save(dict(model=official(), epoch=299, max_accuracy=80.), src)
    result = convert('--family', family, src, dst)
    assert result.returncode == 0, result.stderr[-2000:]
    written = torch.load(dst)
    assert f'wrote {len(written)} tensors' in result.stdout
    model = backbone_type(
        ARCH, out_indices=(3, ),
        init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    for key, value in written.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not any(k.startswith('head.') for k in written)


def test_wrong_family_refused(tmp_path):
    src, dst = tmp_path / 'swin.pth', tmp_path / 'out.pth'
    torch.save(dict(model=FAMILIES['swin'][1]()), src)
    result = convert('--family', 'pvt', src, dst)
    assert result.returncode != 0
    assert 'FLattenPVT' in result.stderr
    assert not dst.exists()


def test_url_source_is_downloaded_and_converted(tmp_path):
    served, dst = tmp_path / 'served', tmp_path / 'converted.pth'
    served.mkdir()
    official = FAMILIES['swin'][1]()
    torch.save(dict(model=official), served / 'flatten_swin_t.pth')
    hub = tmp_path / 'torch_home'
    with serve_directory(served) as base_url:
        result = convert('--family', 'swin', f'{base_url}/flatten_swin_t.pth',
                         dst, env=dict(os.environ, TORCH_HOME=str(hub)))
    assert result.returncode == 0, result.stderr[-2000:]
    assert (hub / 'hub' / 'checkpoints' / 'flatten_swin_t.pth').is_file()
    expected = FLATTEN_SWIN_CONVERTER.convert(official)
    written = torch.load(dst)
    assert written.keys() == expected.keys()
    for key in expected:
        assert torch.equal(written[key], expected[key]), key
