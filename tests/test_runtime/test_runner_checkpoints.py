# Copyright (c) OpenMMLab. All rights reserved.
"""Checkpoints written by an mmengine Runner load back (resume, load_from)
with torch's weights-only loading left on."""
import os.path as osp
import subprocess
import sys

import torch
import torch.nn as nn
from conftest import SMALL_ARCH
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner

from mmplugin_l2vit import L2ViT

TINY_ARCH = dict(SMALL_ARCH, depths=[1, 1, 1, 1])


class TinyClassifier(BaseModel):

    def __init__(self):
        super().__init__()
        self.backbone = L2ViT(TINY_ARCH, out_indices=(3, ))
        self.head = nn.Linear(TINY_ARCH['embed_dims'][-1], 2)

    def forward(self, inputs, labels, mode='tensor'):
        inputs = torch.stack(inputs)
        logits = self.head(self.backbone(inputs)[0].mean((2, 3)))
        if mode == 'loss':
            return dict(loss=nn.functional.cross_entropy(
                logits, torch.stack(labels)))
        return [(logit.argmax(), label)
                for logit, label in zip(logits, labels)]


class RandomImages(torch.utils.data.Dataset):

    def __len__(self):
        return 4

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return dict(
            inputs=torch.randn(3, 32, 32, generator=generator),
            labels=torch.tensor(index % 2))


class Accuracy(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(int(p == t) for p, t in data_samples)

    def compute_metrics(self, results):
        return dict(accuracy=sum(results) / len(results))


class RecordStart(Hook):

    def __init__(self):
        self.start_iter = None

    def before_train(self, runner):
        self.start_iter = runner.iter


def build_runner(work_dir, max_iters, **kwargs):
    loader = dict(
        dataset=RandomImages(),
        sampler=dict(type='DefaultSampler', shuffle=False),
        batch_size=2,
        num_workers=0)
    return Runner(
        model=TinyClassifier(),
        work_dir=str(work_dir),
        train_dataloader=loader,
        val_dataloader=loader,
        val_evaluator=[Accuracy()],
        val_cfg=dict(),
        train_cfg=dict(by_epoch=False, max_iters=max_iters,
                       val_interval=100),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        param_scheduler=dict(type='MultiStepLR', by_epoch=False,
                             milestones=[3], gamma=0.1),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=kwargs.pop('custom_hooks', None),
        experiment_name=kwargs.pop('name'),
        **kwargs)


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
