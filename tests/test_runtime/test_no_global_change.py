# Copyright (c) OpenMMLab. All rights reserved.
"""Importing the plugin leaves torch and mmengine as they were, except the
fixes listed in ``mmplugin_l2vit.runtime``, each applied only where the
installed versions need it and all off with
``MMPLUGIN_L2VIT_STACK_FIXES=0``. Each check runs the same script in fresh
processes with and without the import."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

TESTS = osp.dirname(osp.dirname(osp.abspath(__file__)))
REPO = osp.dirname(TESTS)


def run_script(script, *args, cwd=None, **env):
    environ = dict(os.environ, **env)
    environ['PYTHONPATH'] = os.pathsep.join(
        [REPO, os.environ.get('PYTHONPATH', '')])
    result = subprocess.run([sys.executable, '-c', script, *args],
                            capture_output=True, text=True, timeout=300,
                            cwd=cwd, env=environ)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


WRITES = r'''
import hashlib, json, os, stat, sys
os.umask(0o027)
if sys.argv[1] == 'plugin':
    import mmplugin_l2vit  # noqa: F401
import mmengine
import torch
from mmengine.fileio.backends import LocalBackend
from mmengine.runner.checkpoint import save_checkpoint

backend = LocalBackend()
backend.put(b'new', 'new.bin')
with open('shared.bin', 'wb') as f:
    f.write(b'old')
os.chmod('shared.bin', 0o664)
backend.put(b'replaced', 'shared.bin')
with open('target.txt', 'w') as f:
    f.write('old')
os.chmod('target.txt', 0o604)
os.symlink('target.txt', 'latest.txt')
backend.put_text('through the link', 'latest.txt')
os.symlink('iter_1.pth', 'latest.pth')  # not saved yet
save_checkpoint({'w': torch.ones(1)}, 'latest.pth')
mmengine.dump({'a': 1}, 'results.json')
report = {}
for name in sorted(os.listdir('.')):
    info = os.lstat(name)
    entry = dict(mode=oct(stat.S_IMODE(info.st_mode)))
    if stat.S_ISLNK(info.st_mode):
        entry['link'] = os.readlink(name)
    elif not name.endswith('.pth'):
        with open(name, 'rb') as f:
            entry['text'] = f.read().decode()
    report[name] = entry
print(json.dumps(report))
'''


def test_written_files_keep_modes_and_symlinks(tmp_path):
    reports = {}
    for mode in ('plain', 'plugin'):
        (tmp_path / mode).mkdir()
        reports[mode] = run_script(WRITES, mode, cwd=str(tmp_path / mode))
    assert reports['plugin'] == reports['plain']
    plugin = reports['plugin']
    assert plugin['new.bin']['mode'] == '0o640'  # 0o666 less the umask
    assert plugin['shared.bin'] == dict(mode='0o664', text='replaced')
    assert plugin['latest.txt']['link'] == 'target.txt'
    assert plugin['target.txt'] == dict(mode='0o604', text='through the link')
    assert plugin['latest.pth']['link'] == 'iter_1.pth'
    assert plugin['iter_1.pth']['mode'] == '0o640'
    assert set(plugin) == {
        'new.bin', 'shared.bin', 'target.txt', 'latest.txt', 'latest.pth',
        'iter_1.pth', 'results.json'
    }


TORCH_LOADS = r'''
import argparse, collections, io, json, re, sys
import numpy as np
import torch
if sys.argv[1] == 'foreign-getattr':
    # What another library may register for its own checkpoints.
    torch.serialization.add_safe_globals([getattr])


def registered():
    # torch's own modules (DTensor, NJT) register their classes on import.
    paths = (entry[1] if isinstance(entry, tuple) else
             f'{entry.__module__}.{entry.__qualname__}'
             for entry in torch.serialization.get_safe_globals())
    return sorted(path for path in paths if not path.startswith('torch.'))


if sys.argv[2] == 'plugin':
    import mmplugin_l2vit  # noqa: F401
registered_before = registered()
from mmengine.logging import HistoryBuffer


class FromKeys:

    def __reduce__(self):
        return (getattr, (collections.OrderedDict, 'fromkeys'))


def attempt(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    try:
        # Without addresses, which differ between processes.
        loaded = repr(torch.load(buffer))
        return 'loaded ' + re.sub('0x[0-9a-f]+', '0x', loaded)
    except Exception as error:
        return 'refused ' + type(error).__name__


def attempts():
    return [attempt(obj) for obj in (
        argparse.Namespace(a=1), HistoryBuffer([1.], [1]),
        np.arange(2), FromKeys(), {'w': torch.ones(1)})]


before = attempts()
if sys.argv[2] == 'plugin':
    from mmengine.runner import CheckpointLoader
    torch.save({'state_dict': {}, 'args': argparse.Namespace()}, 'c.pth')
    CheckpointLoader.load_checkpoint('c.pth')
after = attempts()
print(json.dumps(dict(
    before=before, after=after,
    registered=registered_before, registered_after=registered())))
'''


@pytest.mark.parametrize('foreign', ['none', 'foreign-getattr'])
def test_unrelated_torch_load_behaves_as_without_the_plugin(
        tmp_path, foreign):
    # Different hash seeds give the allow-list set different orders.
    for seed in ('1', '2', '3'):
        plain = run_script(TORCH_LOADS, foreign, 'plain', cwd=str(tmp_path),
                           PYTHONHASHSEED=seed)
        plugin = run_script(TORCH_LOADS, foreign, 'plugin',
                            cwd=str(tmp_path), PYTHONHASHSEED=seed)
        assert plugin['before'] == plugin['after'] == plain['before']
        assert plugin['registered_after'] == plugin['registered'] == \
            plain['registered']
    # Not vacuous: these are refused without an allow-list, and another
    # library's plain getattr stays usable.
    assert plain['before'][0] == 'refused UnpicklingError'
    assert plain['before'][1] == 'refused UnpicklingError'
    assert plain['before'][4] == "loaded {'w': tensor([1.])}"
    assert plain['before'][3].startswith(
        'loaded' if foreign == 'foreign-getattr' else 'refused')


FOREIGN_GETATTR_THROUGH_MMENGINE = r'''
import json, sys
import numpy as np
import torch
torch.serialization.add_safe_globals([getattr])
import mmplugin_l2vit  # noqa: F401
from mmengine.runner import CheckpointLoader


class ToFile:

    def __reduce__(self):
        return (getattr, (np.zeros(1), 'tofile'))


torch.save({'state_dict': {}, 'x': ToFile()}, 'evil.pth')
try:
    CheckpointLoader.load_checkpoint('evil.pth')
    outcome = 'loaded'
except Exception as error:
    outcome = str(error)
print(json.dumps(outcome))
'''


def test_foreign_getattr_does_not_widen_checkpoint_loading(tmp_path):
    # Ours serves only HistoryBuffer statistics, whatever the set order.
    for seed in ('1', '2', '3', '4'):
        outcome = run_script(FOREIGN_GETATTR_THROUGH_MMENGINE,
                             cwd=str(tmp_path), PYTHONHASHSEED=seed)
        assert 'refusing getattr(ndarray' in outcome, (seed, outcome)


PATCH_POINTS = r'''
import json, sys
import mmengine
import torch
if sys.argv[1] != '-':
    mmengine.__version__ = sys.argv[1]
if sys.argv[2] != '-':
    torch.__version__ = sys.argv[2]
from mmengine.dist import utils as dist_utils
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.model.wrappers import MMDistributedDataParallel
from mmengine.runner import CheckpointLoader, checkpoint


def patch_points():
    return {
        'LocalBackend.put': LocalBackend.put,
        'LocalBackend.put_text': LocalBackend.put_text,
        'CheckpointHook._save_checkpoint_with_step':
        CheckpointHook._save_checkpoint_with_step,
        'CheckpointHook._save_best_checkpoint':
        CheckpointHook._save_best_checkpoint,
        'CheckpointLoader.load_checkpoint':
        CheckpointLoader.__dict__['load_checkpoint'].__func__,
        'CheckpointLoader._schemes': dict(CheckpointLoader._schemes),
        'checkpoint.load_url': checkpoint.load_url,
        'dist_utils._init_dist_pytorch': dist_utils._init_dist_pytorch,
        'MMDistributedDataParallel.__init__':
        MMDistributedDataParallel.__init__,
        # torch's own modules register classes of theirs on import.
        'safe_globals': {
            entry for entry in torch.serialization.get_safe_globals()
            if not getattr(entry, '__module__', '').startswith('torch.')
        },
    }


before = patch_points()
import mmplugin_l2vit  # noqa: F401
from mmplugin_l2vit.runtime import apply_stack_fixes
after = patch_points()
print(json.dumps(dict(
    changed=sorted(k for k in before if before[k] != after[k]),
    applied=list(apply_stack_fixes()))))
'''

ALL_PATCHED = [
    'CheckpointHook._save_best_checkpoint',
    'CheckpointHook._save_checkpoint_with_step',
    'CheckpointLoader.load_checkpoint', 'LocalBackend.put',
    'LocalBackend.put_text', 'MMDistributedDataParallel.__init__',
    'checkpoint.load_url', 'dist_utils._init_dist_pytorch'
]


@pytest.mark.parametrize(
    'mmengine_version,torch_version,env,changed,applied', [
        ('-', '-', {}, ALL_PATCHED, [
            'checkpoint-loading', 'weights-only-urls', 'atomic-writes',
            'keep-until-replaced', 'cpu-distributed'
        ]),
        ('-', '-', dict(MMPLUGIN_L2VIT_STACK_FIXES='0'), [], []),
        ('0.10.8', '-', {}, [], []),
        ('-', '2.5.1', {}, [
            p for p in ALL_PATCHED
            if p not in ('CheckpointLoader.load_checkpoint',
                         'checkpoint.load_url')
        ], ['atomic-writes', 'keep-until-replaced', 'cpu-distributed']),
    ])
def test_fixes_apply_only_where_needed_and_switch_off(
        mmengine_version, torch_version, env, changed, applied):
    report = run_script(PATCH_POINTS, mmengine_version, torch_version, **env)
    assert report == dict(changed=changed, applied=applied)
