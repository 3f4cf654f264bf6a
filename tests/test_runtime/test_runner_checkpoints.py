# Copyright (c) OpenMMLab. All rights reserved.
"""Checkpoints written by an mmengine Runner load back (resume, load_from)
with torch's weights-only loading left on."""
import os.path as osp
import subprocess
import sys

import torch
from toy_runner import RecordStart, build_runner


def test_resume_and_load_from(tmp_path):
    runner = build_runner(tmp_path, 4, name='first')
    runner.train()
    ckpt = osp.join(str(tmp_path), 'iter_4.pth')
    assert osp.exists(ckpt)
    trained = {k: v.clone() for k, v in runner.model.state_dict().items()}

    # Without the plugin, torch >= 2.6 refuses this checkpoint.
    result = subprocess.run(
        [sys.executable, '-c', f'import torch; torch.load({ckpt!r})'],
        capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert 'Weights only load failed' in result.stderr

    record = RecordStart()
    resumed = build_runner(tmp_path, 6, name='resumed', resume=True,
                           load_from=ckpt, custom_hooks=[record])
    resumed.train()
    assert record.start_iter == 4
    assert resumed.iter == 6
    # The scheduler state came back: the lr was decayed at iter 3.
    lr = resumed.optim_wrapper.get_lr()['lr'][0]
    assert abs(lr - 1e-4) < 1e-12

    loaded = build_runner(tmp_path / 'eval', 4, name='eval', load_from=ckpt)
    metrics = loaded.val()
    assert 'accuracy' in metrics
    for key, value in trained.items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
