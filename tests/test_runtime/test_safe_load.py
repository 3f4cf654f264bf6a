# Copyright (c) OpenMMLab. All rights reserved.
"""Weights-only ``torch.load`` stays on and still loads OpenMMLab and
official checkpoints."""
import argparse
import io
import json
import os
import os.path as osp
import pickle
import sys
import types
import urllib.request

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import checkpoint
from mmengine.runner.checkpoint import _load_checkpoint, save_checkpoint
from mmengine.utils import digit_version

from mmplugin_l2vit.runtime import CheckpointFileError, load_checkpoint_file


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
    assert _load_checkpoint(path)['args'].model == 'L2ViT_Tiny'
    assert load_checkpoint_file(path)['args'].model == 'L2ViT_Tiny'
    # The allow-list holds for checkpoint loads only.
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(path)


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


class _CreatesFile:
    """Unpickled without weights-only, it creates a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def _url_table(urls):
    return lambda: dict(urls)


class _FakePaviModel:

    def __init__(self, url):
        self.url = url
        self.name = osp.basename(url)

    def download(self, path):
        with urllib.request.urlopen(self.url) as response, \
                open(path, 'wb') as f:
            f.write(response.read())


class _FakeS3Backend:

    def __init__(self, base):
        self.base = base

    def get(self, filepath):
        name = filepath.rsplit('/', 1)[-1]
        with urllib.request.urlopen(f'{self.base}/{name}') as response:
            return response.read()


def map_scheme(scheme, name, base, tmp_path, monkeypatch):
    """Return a checkpoint path of ``scheme`` that resolves to the file
    ``name`` served at ``base``, mapping the scheme's tables to it."""
    url = f'{base}/{name}'
    if scheme in ('http', 'local'):
        if scheme == 'http':
            return url
        path = tmp_path / name
        urllib.request.urlretrieve(url, path)
        return str(path)
    if scheme in ('torchvision', 'modelzoo'):
        monkeypatch.setattr(checkpoint, 'get_torchvision_models',
                            _url_table({'resnet50': url}))
        return f'{scheme}://resnet50'
    if scheme in ('open-mmlab', 'openmmlab'):
        # mmengine's own mechanism for extra open-mmlab:// names.
        home = tmp_path / 'mmengine_home'
        home.mkdir(exist_ok=True)
        (home / 'open_mmlab.json').write_text(json.dumps({'resnet50': url}))
        monkeypatch.setenv('MMENGINE_HOME', str(home))
        return f'{scheme}://resnet50'
    if scheme == 'mmcls':
        monkeypatch.setattr(checkpoint, 'get_mmcls_models',
                            _url_table({'resnet50': url}))
        return 'mmcls://resnet50'
    if scheme == 'pavi':
        pavi = types.ModuleType('pavi')
        pavi.modelcloud = types.SimpleNamespace(
            get=lambda path: _FakePaviModel(f'{base}/{path}'))
        monkeypatch.setitem(sys.modules, 'pavi', pavi)
        return f'pavi://{name}'
    assert scheme == 's3'
    monkeypatch.setattr(checkpoint, 'get_file_backend',
                        lambda *args, **kwargs: _FakeS3Backend(base))
    return f's3://bucket/{name}'


SCHEMES = [
    'local', 'http', 'torchvision', 'modelzoo', 'open-mmlab', 'openmmlab',
    'mmcls', 'pavi', 's3'
]


@pytest.mark.parametrize('scheme', SCHEMES)
def test_every_scheme_refuses_code(http_dir, tmp_path, monkeypatch, scheme):
    served, base = http_dir
    marker = tmp_path / 'pwned'
    torch.save({'state_dict': {'backbone.w': torch.ones(1)},
                'x': _CreatesFile(str(marker))}, served / 'evil.pth')
    path = map_scheme(scheme, 'evil.pth', base, tmp_path, monkeypatch)
    with pytest.raises(pickle.UnpicklingError) as info:
        _load_checkpoint(path, map_location='cpu')
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith(f'refusing to load {path}: Weights only load '
                              'failed'), message
    assert 'GLOBAL io.open' in message


@pytest.mark.parametrize('scheme', SCHEMES)
def test_every_scheme_loads_runner_checkpoints(http_dir, tmp_path,
                                               monkeypatch, scheme):
    served, base = http_dir
    hub = MessageHub.get_instance(f'test_scheme_{scheme}')
    hub.update_scalar('train/loss', 0.25)
    save_checkpoint(
        dict(meta=dict(iter=8, seed=np.int64(3)),
             state_dict={'backbone.w': torch.ones(2)},
             message_hub=hub.state_dict()), str(served / 'runner.pth'))
    path = map_scheme(scheme, 'runner.pth', base, tmp_path, monkeypatch)
    loaded = _load_checkpoint(path, map_location='cpu')
    if scheme == 'mmcls':  # mmengine keeps the backbone weights only
        assert list(loaded) == ['state_dict']
        assert torch.equal(loaded['state_dict']['w'], torch.ones(2))
    else:
        assert loaded['meta']['iter'] == 8
        buffer = loaded['message_hub']['log_scalars']['train/loss']
        assert buffer.mean() == 0.25


def test_empty_checkpoint_is_named(tmp_path):
    path = tmp_path / 'iter_8.pth'
    path.write_bytes(b'')
    with pytest.raises(CheckpointFileError,
                       match=f'checkpoint {path} is empty'):
        _load_checkpoint(str(path), map_location='cpu')
    with pytest.raises(CheckpointFileError, match='is empty'):
        load_checkpoint_file(str(path))


@pytest.mark.parametrize('keep', [0.5, 0.99, 0.01])
def test_truncated_checkpoint_is_named(tmp_path, keep):
    whole = tmp_path / 'whole.pth'
    torch.save({'w': torch.ones(1000)}, whole)
    data = whole.read_bytes()
    path = tmp_path / 'iter_8.pth'
    path.write_bytes(data[:int(len(data) * keep)])
    size = path.stat().st_size
    with pytest.raises(
            CheckpointFileError,
            match=f'checkpoint {path} \\({size} bytes\\) is truncated'):
        _load_checkpoint(str(path), map_location='cpu')
