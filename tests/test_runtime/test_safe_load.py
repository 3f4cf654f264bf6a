# Copyright (c) OpenMMLab. All rights reserved.
"""Weights-only ``torch.load`` stays on and still loads OpenMMLab and
official checkpoints."""
import argparse
import io
import os
import sys
import types

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner.checkpoint import _load_checkpoint, save_checkpoint
from mmengine.utils import digit_version

import mmplugin_l2vit  # noqa: F401


class _NotAllowed:
    pass


def test_weights_only_is_the_default():
    assert digit_version(torch.__version__) >= digit_version('2.6')
    buffer = io.BytesIO()
    torch.save({'x': _NotAllowed()}, buffer)
    buffer.seek(0)
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(buffer)


def test_mmengine_checkpoint_with_message_hub_loads(tmp_path):
    hub = MessageHub.get_instance('test_safe_load')
    hub.update_scalar('train/loss', 0.5)
    hub.update_scalar('train/lr', np.float64(0.01))
    hub.update_info('iter', 12)
    path = str(tmp_path / 'epoch_1.pth')
    save_checkpoint(
        dict(
            meta=dict(epoch=1, iter=12, seed=np.int64(3)),
            state_dict={'w': torch.ones(2)},
            message_hub=hub.state_dict(),
            extra=np.arange(3, dtype=np.float32)), path)
    loaded = _load_checkpoint(path, map_location='cpu')
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer)
    assert buffer.mean() == 0.5
    assert loaded['meta']['seed'] == 3
    assert loaded['extra'].tolist() == [0., 1., 2.]


def test_official_release_layout_loads(tmp_path):
    path = str(tmp_path / 'official.pth')
    torch.save(
        dict(model={'w': torch.zeros(1)},
             args=argparse.Namespace(model='L2ViT_Tiny'), epoch='best'),
        path)
    assert torch.load(path)['args'].model == 'L2ViT_Tiny'


class _RunsCode:

    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null', ))


class _CallsGetattr:

    def __reduce__(self):
        return (getattr, (np.zeros(1), 'tofile'))


@pytest.mark.parametrize('payload', [_RunsCode(), _CallsGetattr()])
def test_pickle_that_runs_code_is_refused(tmp_path, payload):
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'x': payload}, path)
    with pytest.raises(Exception) as info:
        _load_checkpoint(path, map_location='cpu')
    message = str(info.value)
    assert 'Weights only load failed' in message or 'refusing getattr' in \
        message


def test_flatten_release_layout_with_yacs_config_loads(tmp_path, monkeypatch):
    """FLatten files pickle a yacs CfgNode; it loads (as an OrderedDict)
    whether or not yacs is installed."""
    fake_yacs = types.ModuleType('yacs')
    fake_config = types.ModuleType('yacs.config')

    class CfgNode(dict):
        pass

    CfgNode.__module__ = 'yacs.config'
    CfgNode.__qualname__ = 'CfgNode'
    fake_config.CfgNode = CfgNode
    config = CfgNode(MODEL=CfgNode(TYPE='flatten_swin'), EPOCHS=300)
    config.__dict__['__immutable__'] = True
    path = str(tmp_path / 'flatten_swin_t.pth')
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, 'yacs', fake_yacs)
        patch.setitem(sys.modules, 'yacs.config', fake_config)
        torch.save(
            dict(model={'w': torch.ones(1)}, config=config, epoch=299,
                 max_accuracy=82.1), path)
    loaded = _load_checkpoint(path, map_location='cpu')
    assert loaded['config']['MODEL']['TYPE'] == 'flatten_swin'
    assert loaded['config'].__dict__['__immutable__'] is True
    assert torch.equal(loaded['model']['w'], torch.ones(1))


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """Serve a directory on loopback; torch's download cache in tmp."""
    import functools
    import http.server
    import threading
    served = tmp_path / 'served'
    served.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()


def test_url_checkpoints_load_weights_only(http_dir):
    served, base = http_dir
    # A share link whose path has no file name, like TsinghuaCloud's.
    (served / 'f' / 'abc').mkdir(parents=True)
    torch.save(dict(model={'w': torch.ones(2)},
                    args=argparse.Namespace(epoch=3)),
               served / 'f' / 'abc' / 'index.html')
    loaded = _load_checkpoint(f'{base}/f/abc/?dl=1', map_location='cpu')
    assert torch.equal(loaded['model']['w'], torch.ones(2))

    torch.save({'state_dict': {}, 'x': _RunsCode()}, served / 'evil.pth')
    with pytest.raises(Exception, match='Weights only load failed'):
        _load_checkpoint(f'{base}/evil.pth', map_location='cpu')
