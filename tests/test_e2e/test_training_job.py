# Copyright (c) OpenMMLab. All rights reserved.
"""The demo detection config trained and evaluated like a production job,
through the real command-line tools: SIGKILL mid-run then ``--resume``,
``tools/test.py`` reproducing the last validation, and 2-process
``dist_train.sh`` / ``dist_test.sh`` on CPU with gloo."""
import glob
import json
import os.path as osp
import signal
import socket
import subprocess
import sys
import time

import pytest
from repo_scripts import DEMO_CONFIG as CONFIG
from repo_scripts import REPO
from repo_scripts import SCRIPT_ENV as ENV

from mmplugin_l2vit.datasets import generate_demo_data
from mmplugin_l2vit.runtime import load_checkpoint_file


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo_data')
    generate_demo_data(str(root), num_train=16, num_val=8, size=96)
    return osp.join(str(root), 'coco') + osp.sep


def options(data_root, max_iters, checkpoint_interval=2):
    ann = osp.join(data_root, 'annotations', 'instances_val.json')
    opts = [
        'model.backbone.arch.depths=[1,1,1,1]',
        f'train_cfg.max_iters={max_iters}',
        f'train_cfg.val_interval={max_iters}',
        f'default_hooks.checkpoint.interval={checkpoint_interval}',
        'default_hooks.checkpoint.max_keep_ckpts=10',
        'default_hooks.logger.interval=1',
        'param_scheduler.0.end=2',
        'param_scheduler.1.begin=2',
        f'param_scheduler.1.end={max_iters}',
        'train_dataloader.batch_size=2',
    ]
    for split in ('train', 'val', 'test'):
        opts.append(f'{split}_dataloader.dataset.data_root={data_root}')
    opts += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    return ['--cfg-options', *opts]


def tool(name, *args):
    return [sys.executable, osp.join(REPO, 'tools', f'{name}.py'), *args]


def run(cmd, timeout=600):
    result = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[
        -3000:]
    return result.stdout + result.stderr


def last_metrics(work_dir):
    """The metrics of the last validation/test in a work dir's logs."""
    found = {}
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                          'scalars.json')) +
                       glob.glob(osp.join(work_dir, '*', '*.json'))):
        with open(path) as f:
            for line in f:
                record = json.loads(line)
                if 'coco/bbox_mAP' in record:
                    found = record
    return {k: v for k, v in found.items() if k.startswith('coco/')}


def test_sigkill_then_resume_continues_exactly(data_root, tmp_path):
    work_dir = str(tmp_path / 'job')
    cmd = tool('train', CONFIG, '--work-dir', work_dir,
               *options(data_root, max_iters=8))
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not osp.exists(osp.join(work_dir, 'iter_4.pth')):
        assert proc.poll() is None, 'training ended before iteration 4'
        assert time.time() < deadline, 'no checkpoint within 5 minutes'
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not osp.exists(osp.join(work_dir, 'iter_8.pth'))
    # Every checkpoint on disk is whole; no temporary file is left.
    saved = sorted(glob.glob(osp.join(work_dir, 'iter_*.pth')))
    assert saved and not glob.glob(osp.join(work_dir, '.*.tmp'))
    last_saved = max(int(osp.basename(p)[5:-4]) for p in saved)
    for path in saved:
        load_checkpoint_file(path, map_location='cpu')

    log = run(tool('train', CONFIG, '--work-dir', work_dir, '--resume',
                   *options(data_root, max_iters=8)))
    assert f'resumed epoch: 0, iter: {last_saved}' in log
    final = load_checkpoint_file(
        osp.join(work_dir, 'iter_8.pth'), map_location='cpu')
    assert final['meta']['iter'] == 8
    # The optimizer and scheduler states came back: AdamW counted every
    # step, and the cosine schedule ended where a full run ends.
    steps = {int(s['step']) for s in final['optimizer']['state'].values()}
    assert steps == {8}
    assert final['param_schedulers'][1]['_global_step'] == 8

    # tools/test.py on the final checkpoint gives the last validation.
    trained = last_metrics(work_dir)
    assert trained, 'no validation metrics were logged'
    test_dir = str(tmp_path / 'test')
    run(tool('test', CONFIG, osp.join(work_dir, 'iter_8.pth'), '--work-dir',
             test_dir, *options(data_root, max_iters=8)))
    assert last_metrics(test_dir) == trained


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def test_two_process_train_and_test(data_root, tmp_path):
    work_dir = str(tmp_path / 'dist')
    env = dict(ENV, PORT=free_port())
    subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), CONFIG, '2',
         '--work-dir', work_dir, *options(data_root, 4, 4)],
        cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    ckpt = osp.join(work_dir, 'iter_4.pth')
    assert osp.exists(ckpt)

    dist_dir = str(tmp_path / 'dist_test')
    env['PORT'] = free_port()
    result = subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'dist_test.sh'), CONFIG, ckpt, '2',
         '--work-dir', dist_dir, *options(data_root, 4, 4)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    single_dir = str(tmp_path / 'single_test')
    run(tool('test', CONFIG, ckpt, '--work-dir', single_dir,
             *options(data_root, 4, 4)))
    # Gathered across both ranks, each val image counted once: the same
    # metrics as one process over the whole split.
    assert last_metrics(dist_dir) == last_metrics(single_dir) != {}
