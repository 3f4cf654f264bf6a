# Copyright (c) OpenMMLab. All rights reserved.
"""``tools/train.py --resume``: a bad ``last_checkpoint`` (missing, empty,
garbage, dangling, naming a broken file) resumes from the newest intact
checkpoint and says so; ``--resume CKPT`` of a file that is not an intact
Runner checkpoint stops with one line naming the newest intact one."""
import os
import os.path as osp

import pytest
import torch
from mmengine.runner import Runner
from repo_scripts import load_script

from mmplugin_l2vit.datasets import generate_demo_data

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(REPO, 'configs', 'demo',
                      'mask-rcnn_l2vit-demo_shapes.py')

TOOL = load_script('tools/train.py')


@pytest.fixture
def logged(monkeypatch):
    messages = []
    monkeypatch.setattr(TOOL, 'print_log',
                        lambda msg, **kwargs: messages.append(msg))
    return messages


def save_runner_checkpoint(path, iteration, mtime):
    """What a Runner writes, small; written at ``mtime``."""
    torch.save(
        dict(
            meta=dict(epoch=0, iter=iteration),
            state_dict={'w': torch.full((2, ), float(iteration))},
            message_hub=dict(log_scalars={}, runtime_info={}),
            optimizer={}), path)
    os.utime(path, (mtime, mtime))
    return str(path)


@pytest.fixture
def work_dir(tmp_path):
    """iter_1 and iter_2 intact; iter_3 truncated (newest); a best_
    checkpoint newer than all of them."""
    save_runner_checkpoint(tmp_path / 'iter_1.pth', 1, 1_000)
    save_runner_checkpoint(tmp_path / 'iter_2.pth', 2, 2_000)
    save_runner_checkpoint(tmp_path / 'iter_3.pth', 3, 3_000)
    data = (tmp_path / 'iter_3.pth').read_bytes()
    (tmp_path / 'iter_3.pth').write_bytes(data[:len(data) // 2])
    os.utime(tmp_path / 'iter_3.pth', (3_000, 3_000))
    save_runner_checkpoint(tmp_path / 'best_coco_bbox_mAP_iter_2.pth', 2,
                           4_000)
    return tmp_path


def resume_config(work_dir, *resume):
    args = TOOL.parse_args(
        [DET_CONFIG, '--work-dir',
         str(work_dir), '--resume', *resume])
    return TOOL.build_config(args)


POINTERS = {
    'missing': None,
    'empty': b'',
    'blank': b'  \n',
    'garbage': b'\xff\xfe\x00\x9c binary',
    'dangling': b'/nonexistent/iter_9.pth',
    'truncated target': 'iter_3.pth',
    'non-runner target': 'weights.pth',
}


@pytest.mark.parametrize('pointer', sorted(POINTERS))
def test_bad_pointer_resumes_from_newest_intact(work_dir, logged, pointer):
    torch.save({'w': torch.zeros(2)}, work_dir / 'weights.pth')
    os.utime(work_dir / 'weights.pth', (5_000, 5_000))
    content = POINTERS[pointer]
    if isinstance(content, str):
        content = str(work_dir / content).encode()
    if content is not None:
        (work_dir / 'last_checkpoint').write_bytes(content)
    cfg = resume_config(work_dir)
    newest_intact = str(work_dir / 'iter_2.pth')
    assert cfg.resume and cfg.load_from == newest_intact
    assert len(logged) == 1
    assert logged[0].startswith(f'--resume: {work_dir / "last_checkpoint"} ')
    assert logged[0].endswith(
        f'resuming from the newest intact checkpoint {newest_intact}')


def test_good_pointer_is_followed(work_dir, logged):
    target = str(work_dir / 'iter_1.pth')
    (work_dir / 'last_checkpoint').write_text(target + '\n')
    cfg = resume_config(work_dir)
    assert cfg.resume and cfg.load_from == target
    assert logged == []


def test_bad_pointer_and_nothing_intact_stops(tmp_path):
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'gone.pth'))
    (tmp_path / 'iter_1.pth').write_bytes(b'')
    with pytest.raises(
            SystemExit,
            match=rf'^--resume: {tmp_path}/last_checkpoint names '
            rf'{tmp_path}/gone.pth, but there is no such file, and '
            rf'{tmp_path} holds no intact checkpoint; run without --resume'):
        resume_config(tmp_path)


def test_nothing_to_resume_trains_from_scratch(tmp_path, logged):
    cfg = resume_config(tmp_path)
    assert not cfg.resume and cfg.load_from is None
    assert logged == [
        f'--resume: no checkpoint in {tmp_path}; training '
        'from scratch'
    ]


@pytest.mark.parametrize('content,problem',
                         [({
                             'model': {
                                 'w': torch.zeros(1)
                             },
                             'epoch': 299
                         }, 'it is not a Runner checkpoint'),
                          (None, 'the file is empty'),
                          (b'not a zip', r'it does not load \(')])
def test_resume_of_a_non_runner_file_names_the_intact_one(
        work_dir, tmp_path_factory, content, problem):
    path = tmp_path_factory.mktemp('elsewhere') / 'release.pth'
    if isinstance(content, dict):
        torch.save(content, path)
    else:
        path.write_bytes(content or b'')
    with pytest.raises(
            SystemExit,
            match=rf'^--resume: cannot resume from {path}: {problem}.*; the '
            rf'newest intact checkpoint in {work_dir} is '
            rf'{work_dir}/iter_2.pth$'):
        resume_config(work_dir, str(path))


def test_resume_of_a_missing_file(tmp_path):
    with pytest.raises(
            SystemExit,
            match=rf'cannot resume from {tmp_path}/no.pth: there is no such '
            rf'file; {tmp_path} holds no intact checkpoint$'):
        resume_config(tmp_path, str(tmp_path / 'no.pth'))


def test_training_resumes_past_a_garbage_pointer(tmp_path, monkeypatch):
    """A real run: train 2 iterations, spoil the pointer, resume to 3."""
    data_root = str(tmp_path / 'data')
    generate_demo_data(data_root, num_train=4, num_val=1, size=64)
    coco = osp.join(data_root, 'coco') + osp.sep
    work_dir = tmp_path / 'work'
    options = [
        f'train_dataloader.dataset.data_root={coco}',
        f'val_dataloader.dataset.data_root={coco}',
        f'val_evaluator.ann_file={coco}annotations/instances_val.json',
        'model.backbone.arch.depths=[1,1,1,1]',
        'train_dataloader.batch_size=2', 'train_cfg.val_begin=100',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=3'
    ]

    def train(max_iters, *args):
        TOOL.main([
            DET_CONFIG, '--work-dir',
            str(work_dir), *args, '--cfg-options', *options,
            f'train_cfg.max_iters={max_iters}'
        ])

    train(2)
    (work_dir / 'last_checkpoint').write_bytes(b'\x00\xff garbage')
    resumed = []
    resume = Runner.resume

    def spy_resume(runner, filename, *args, **kwargs):
        resumed.append(filename)
        return resume(runner, filename, *args, **kwargs)

    monkeypatch.setattr(Runner, 'resume', spy_resume)
    train(3, '--resume')
    assert resumed == [str(work_dir / 'iter_2.pth')]
    final = torch.load(work_dir / 'iter_3.pth', weights_only=False)
    assert final['meta']['iter'] == 3
