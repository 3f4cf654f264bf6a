# Copyright (c) OpenMMLab. All rights reserved.
"""Distributed training on a CPU-only host and atomic checkpoint writes."""
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
from mmengine.fileio.backends import LocalBackend

import mmplugin_l2vit  # noqa: F401

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
REPO = osp.dirname(TESTS)


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_two_process_gloo_training_on_cpu(tmp_path):
    # No GPU visible: the config's nccl backend must fall back to gloo.
    env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get(
                   'PYTHONPATH', '')]))
    result = subprocess.run(
        [
            sys.executable, '-m', 'torch.distributed.run',
            '--nproc_per_node=2', f'--master_port={free_port()}',
            osp.join(TESTS, 'toy_runner.py'),
            str(tmp_path)
        ],
        capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = [
        json.loads((tmp_path / f'metrics_rank{rank}.json').read_text())
        for rank in range(2)
    ]
    # Gathered over both ranks: 5 images once each, the padding dropped.
    assert all(m['num_samples'] == 5 for m in metrics)
    assert osp.exists(tmp_path / 'iter_2.pth')


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / 'iter_4.pth'
    backend = LocalBackend()
    backend.put(b'complete old checkpoint', path)

    def crash(fd):
        raise KeyboardInterrupt('killed while saving')

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'new checkpoint, half written', path)
    assert path.read_bytes() == b'complete old checkpoint'
    assert os.listdir(tmp_path) == ['iter_4.pth']
    monkeypatch.undo()
    backend.put_text('iter_8.pth', tmp_path / 'last_checkpoint')
    assert (tmp_path / 'last_checkpoint').read_text() == 'iter_8.pth'


def test_process_group_is_destroyed_at_exit(tmp_path):
    # Gloo's threads must not outlive the interpreter (torch 2.13 aborts
    # now and then otherwise). An atexit handler registered before the
    # group exists runs after the plugin's, and sees the group gone.
    script = tmp_path / 'rank.py'
    script.write_text(
        'import atexit\n'
        'import torch.distributed as dist\n'
        'import mmplugin_l2vit  # noqa: F401\n'
        'from mmengine.dist import init_dist\n'
        'atexit.register(lambda: print("AT EXIT", dist.is_initialized()))\n'
        'init_dist("pytorch", backend="gloo")\n'
        'print("INITIALISED", dist.is_initialized())\n')
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', RANK='0', LOCAL_RANK='0',
               WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(free_port()),
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get(
                   'PYTHONPATH', '')]))
    result = subprocess.run([sys.executable, str(script)],
                            capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == ['INITIALISED True', 'AT EXIT False']
