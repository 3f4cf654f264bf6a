# Copyright (c) OpenMMLab. All rights reserved.
"""A tiny classifier on our backbone, trained by an mmengine Runner; shared
by the runtime tests and runnable as a script under torchrun."""
import json
import os.path as osp
import sys

import torch
import torch.nn as nn
from conftest import SMALL_ARCH
from mmengine.dist import get_rank
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

    def __init__(self, length=4):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        generator = torch.Generator().manual_seed(index)
        return dict(
            inputs=torch.randn(3, 32, 32, generator=generator),
            labels=torch.tensor(index % 2))


class Accuracy(BaseMetric):

    def process(self, data_batch, data_samples):
        self.results.extend(int(p == t) for p, t in data_samples)

    def compute_metrics(self, results):
        return dict(accuracy=sum(results) / len(results),
                    num_samples=len(results))


class RecordStart(Hook):

    def __init__(self):
        self.start_iter = None

    def before_train(self, runner):
        self.start_iter = runner.iter


def build_runner(work_dir, max_iters, num_images=4, **kwargs):
    loader = dict(
        dataset=RandomImages(num_images),
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


if __name__ == '__main__':
    # torchrun tests/toy_runner.py WORK_DIR: train 2 iterations, validate.
    runner = build_runner(sys.argv[1], 2, num_images=5, name='dist',
                          launcher='pytorch')
    runner.train()
    metrics = runner.val()
    # One file per rank: lines printed by two processes into one pipe can
    # interleave.
    with open(osp.join(sys.argv[1], f'metrics_rank{get_rank()}.json'),
              'w') as f:
        json.dump(metrics, f)
