# Copyright (c) OpenMMLab. All rights reserved.
"""SIGKILL at random moments of a real training of the demo detection
config (``tools/train.py``, a checkpoint every iteration,
``max_keep_ckpts=1``), each later run started with ``--resume``.

After every kill: each ``*.pth`` in the work dir loads whole and is a
Runner checkpoint of the iteration its name says; ``last_checkpoint`` names
one of them; besides the ``max_keep_ckpts`` checkpoints up to that one at
most one more is left, the next (killed before ``last_checkpoint`` named
it) or the one before them (killed before it was removed), and the next
run has removed it by its second save; the only temporary files are those
of killed runs, and a run that began to save has removed those of the runs
before it; a resumed run started at the iteration of the checkpoint that
``last_checkpoint`` named and saved the next one first. Then a last
``--resume`` run trains to the end the same way.

The kill times come from a seeded generator (``L2VIT_KILL_LOOP_SEED``
replays another sequence); the seed and each round's plan are printed.
"""
import os
import os.path as osp
import random
import re
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

SEED = int(os.environ.get('L2VIT_KILL_LOOP_SEED', '12'))
MAX_ITERS = 12
MAX_KEEP = 1
# Where each run is killed: during its startup (and the loading of the
# checkpoint it resumes from); within 20 ms of the moment its N-th save
# begins to write (its temporary file appears), mostly while it writes;
# from that moment into the iteration after; right after its N-th
# checkpoint is renamed into place (mostly before last_checkpoint names
# it); right after last_checkpoint names it (mostly before the outdated
# checkpoint is removed).
MODES = ('startup', 'writing', 'saving', 'saved', 'named')
RESUMED = re.compile(r'resumed epoch: \d+, iter: (\d+)')
SAVING = re.compile(r'Saving checkpoint at (\d+) iterations')
CHECKPOINT = re.compile(r'iter_(\d+)\.pth')
TEMPORARY = re.compile(
    r'\.(?P<name>.+)\.l2vit-(?P<pid>\d+)-(?P<host>.+)-[0-9a-f]{8}\.tmp')


def train_command(work_dir, data_root, resume):
    ann = osp.join(data_root, 'annotations', 'instances_val.json')
    opts = [
        'model.backbone.arch.depths=[1,1,1,1]',
        f'train_cfg.max_iters={MAX_ITERS}',
        f'train_cfg.val_interval={MAX_ITERS}',
        'default_hooks.checkpoint.interval=1',
        f'default_hooks.checkpoint.max_keep_ckpts={MAX_KEEP}',
        'default_hooks.logger.interval=1',
        'param_scheduler.0.end=2',
        'param_scheduler.1.begin=2',
        f'param_scheduler.1.end={MAX_ITERS}',
        'train_dataloader.batch_size=1',
        f'val_evaluator.ann_file={ann}',
        f'test_evaluator.ann_file={ann}',
    ]
    for split in ('train', 'val', 'test'):
        opts.append(f'{split}_dataloader.dataset.data_root={data_root}')
    return [
        sys.executable,
        osp.join(REPO, 'tools', 'train.py'), CONFIG, '--work-dir', work_dir,
        *(['--resume'] if resume else []), '--cfg-options', *opts
    ]


def checkpoints(work_dir):
    """``{iteration: path}`` of the iteration checkpoints."""
    found = {}
    for name in os.listdir(work_dir):
        match = CHECKPOINT.fullmatch(name)
        if match:
            found[int(match[1])] = osp.join(work_dir, name)
    return found


def temporaries(work_dir):
    """``{name: pid}`` of the hidden files in the work dir."""
    found = {}
    for name in os.listdir(work_dir):
        if name.startswith('.'):
            match = TEMPORARY.fullmatch(name)
            assert match and match['host'] == socket.gethostname(), name
            found[name] = int(match['pid'])
    return found


def pointer(work_dir):
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(path):
        return None
    with open(path) as f:
        return f.read()


def wait_for(proc, event, log, interval=0.002, timeout=300):
    deadline = time.time() + timeout
    while not event():
        if proc.poll() is not None:
            with open(log) as f:
                pytest.fail(f'training exited with {proc.returncode} '
                            f'before it was killed:\n{f.read()[-3000:]}')
        assert time.time() < deadline, f'nothing happened in {timeout}s'
        time.sleep(interval)


def kill_one_run(work_dir, data_root, resume, resume_from, plan, log, env=ENV):
    """Start a run that will resume from iteration ``resume_from`` (None:
    from scratch), SIGKILL it as ``plan`` (mode, nth save, delay) says;
    return its pid."""
    mode, nth, delay = plan
    step = (resume_from or 0) + nth
    name = f'iter_{step}.pth'
    path = osp.join(work_dir, name)
    started = time.time_ns()
    with open(log, 'w') as out:
        proc = subprocess.Popen(
            train_command(work_dir, data_root, resume),
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT)

    def written():
        # By this run: a file of an earlier run may have the same name.
        try:
            return os.stat(path).st_mtime_ns >= started
        except FileNotFoundError:
            return False

    def writing():
        return written() or any(
            temporary.startswith(f'.{name}.') and pid == proc.pid
            for temporary, pid in temporaries(work_dir).items())

    def named():
        return pointer(work_dir) == path

    if mode != 'startup':
        wait_for(proc, lambda: osp.isdir(work_dir) and writing(), log)
    # The moments after the rename are short: watched without a pause
    # (for the rest of this save only).
    if mode in ('saved', 'named'):
        wait_for(proc, dict(saved=written, named=named)[mode], log, 0)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.pid


def check_work_dir(work_dir):
    """Check what a killed run left; return ``{iteration: path}``."""
    saved = checkpoints(work_dir)
    others = [
        name for name in os.listdir(work_dir)
        if name.endswith('.pth') and not CHECKPOINT.fullmatch(name)
    ]
    assert not others, others
    for step, path in saved.items():
        checkpoint = load_checkpoint_file(path, map_location='cpu')
        assert checkpoint['meta']['iter'] == step, path
        assert {'state_dict', 'optimizer', 'message_hub'} <= set(checkpoint)
    target = pointer(work_dir)
    if not saved:
        assert target is None
        return saved
    assert target in saved.values(), (target, sorted(saved))
    # Besides the max_keep_ckpts checkpoints up to the one last_checkpoint
    # names, one more may be left: the next one (a kill after it was
    # written, before last_checkpoint was) or the one before them (a kill
    # before the outdated checkpoint was removed).
    named = int(CHECKPOINT.fullmatch(osp.basename(target))[1])
    assert len(saved) <= MAX_KEEP + 1, sorted(saved)
    window = range(named - MAX_KEEP, named + 2)
    assert set(saved) <= set(window), (named, sorted(saved))
    return saved


def kill_loop(tmp_path, env=ENV, seed=SEED):
    """The rounds of kills and checks; return the data root and work
    dir."""
    data_root = osp.join(
        generate_demo_data(
            str(tmp_path / 'data'), num_train=4, num_val=1, size=64)['coco'],
        '')
    work_dir = str(tmp_path / 'job')
    rng = random.Random(seed)
    modes = list(MODES)
    rng.shuffle(modes)
    print(f'kill loop seed {seed} (L2VIT_KILL_LOOP_SEED replays it)')
    killed = []  # pids
    for index, mode in enumerate(modes):
        nth = rng.choice((1, 2))
        delay = {
            'startup': rng.uniform(0.5, 5.0),
            'writing': rng.uniform(0.0, 0.02),
            'saving': rng.uniform(0.0, 1.0),
            'saved': rng.uniform(0.0, 0.003),
            'named': rng.uniform(0.0, 0.0002)
        }[mode]
        print(f'round {index}: kill {mode}'
              f'{"" if mode == "startup" else f" (save {nth})"}'
              f' after {delay:.4f}s')
        target = pointer(work_dir) if osp.isdir(work_dir) else None
        resume_from = (
            load_checkpoint_file(target, map_location='cpu')['meta']['iter']
            if target else None)
        if (resume_from or 0) + 4 > MAX_ITERS:
            # A run could end before it is killed; rarely reached.
            print(f'  stop: resuming at {resume_from} of {MAX_ITERS}')
            break
        # Left by a kill: gone once the next run began its second save.
        extra = set()
        if osp.isdir(work_dir):
            extra = set(sorted(checkpoints(work_dir))[:-MAX_KEEP])
        log = str(tmp_path / f'round{index}.log')
        started = time.time_ns()
        killed.append(
            kill_one_run(work_dir, data_root, index > 0, resume_from,
                         (mode, nth, delay), log, env))
        if not osp.isdir(work_dir):
            continue  # killed before the Runner made it
        saved = check_work_dir(work_dir)
        print(f'  left {sorted(saved)}, last_checkpoint -> '
              f'{osp.basename(pointer(work_dir) or "")}, '
              f'{len(temporaries(work_dir))} temporary file(s)')

        with open(log) as f:
            text = f.read()
        resumed = [int(step) for step in RESUMED.findall(text)]
        assert resumed in ([], [resume_from] if resume_from else [])
        # It continued at the next iteration.
        saving = [int(step) for step in SAVING.findall(text)]
        assert saving[:1] in ([], [(resume_from or 0) + 1]), saving
        if len(saving) > 1:
            assert not extra & set(saved), (sorted(extra), sorted(saved))
        # A run that began to save removed the temporary files of the runs
        # before it.
        left = temporaries(work_dir)
        assert set(left.values()) <= set(killed), left
        if killed[-1] in left.values() or any(
                os.stat(path).st_mtime_ns >= started
                for path in saved.values()):
            assert set(left.values()) <= {killed[-1]}, left
    return data_root, work_dir


@pytest.mark.slow
def test_kill_loop_loses_nothing_and_resumes_exactly(tmp_path):
    data_root, work_dir = kill_loop(tmp_path)
    saved = checkpoints(work_dir)
    assert saved, 'no round reached a save'
    resume_from = load_checkpoint_file(
        pointer(work_dir), map_location='cpu')['meta']['iter']
    result = subprocess.run(
        train_command(work_dir, data_root, resume=True),
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert RESUMED.findall(output) == [str(resume_from)]
    saving = [int(step) for step in SAVING.findall(output)]
    assert saving[0] == resume_from + 1 and saving[-1] == MAX_ITERS
    final = osp.join(work_dir, f'iter_{MAX_ITERS}.pth')
    assert checkpoints(work_dir) == {MAX_ITERS: final}
    assert pointer(work_dir) == final
    checkpoint = load_checkpoint_file(final, map_location='cpu')
    assert checkpoint['meta']['iter'] == MAX_ITERS
    assert temporaries(work_dir) == {}
