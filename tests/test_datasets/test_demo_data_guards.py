# Copyright (c) OpenMMLab. All rights reserved.
"""The demo generator writes only into an empty directory (or empties it
with ``overwrite``), refuses negative counts and an empty path; run_demo.py
reuses complete data and regenerates what an interrupted run left."""
import os
import os.path as osp
import subprocess
import sys

import pytest
from repo_scripts import load_script

from mmplugin_l2vit.datasets import SHAPE_CLASSES, generate_demo_data

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'misc', 'generate_demo_data.py')
SMALL = dict(num_train=2, num_val=1, size=32)


def files_under(root):
    return sorted(
        osp.relpath(osp.join(folder, name), root)
        for folder, _, names in os.walk(root) for name in names)


def expected_files(num_train, num_val):
    files = [
        'coco/annotations/instances_train.json',
        'coco/annotations/instances_val.json', 'imagenet/meta/train.txt',
        'imagenet/meta/val.txt'
    ]
    for split, ade_split, count in (('train', 'training', num_train),
                                    ('val', 'validation', num_val)):
        for i in range(count):
            files += [
                f'coco/{split}/{i:06d}.jpg',
                f'ade/images/{ade_split}/{i:06d}.jpg',
                f'ade/annotations/{ade_split}/{i:06d}.png'
            ]
    for i in range(num_train):
        name = SHAPE_CLASSES[i % len(SHAPE_CLASSES)]
        files.append(f'imagenet/train/{name}/{name}_{i:06d}.JPEG')
    files += [f'imagenet/val/val_{i:06d}.JPEG' for i in range(num_val)]
    return sorted(files)


def test_non_empty_directory_refused_and_left_alone(tmp_path):
    (tmp_path / 'notes.txt').write_text('mine')
    with pytest.raises(
            FileExistsError,
            match=rf'^{tmp_path} is not empty: its files would mix with the '
            r'new dataset; pass overwrite=True \(--overwrite\)'):
        generate_demo_data(str(tmp_path), **SMALL)
    assert files_under(tmp_path) == ['notes.txt']


def test_overwrite_empties_the_directory_first(tmp_path):
    generate_demo_data(str(tmp_path), num_train=4, num_val=2, size=32)
    (tmp_path / 'notes.txt').write_text('stale')
    generate_demo_data(str(tmp_path), overwrite=True, **SMALL)
    assert files_under(tmp_path) == expected_files(2, 1)


@pytest.mark.parametrize('counts,name', [(dict(num_train=-1), 'num_train'),
                                         (dict(num_val=-3), 'num_val')])
def test_negative_counts_refused(tmp_path, counts, name):
    out_dir = tmp_path / 'data'
    with pytest.raises(
            ValueError,
            match=rf'^{name} must be at least 0, got {counts[name]}$'):
        generate_demo_data(str(out_dir), **dict(SMALL, **counts))
    assert not out_dir.exists()


def test_empty_path_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match='empty path'):
        generate_demo_data('', **SMALL)
    assert os.listdir(tmp_path) == []


def test_overwrite_never_empties_a_directory_holding_the_current_one(
        tmp_path, monkeypatch):
    (tmp_path / 'work').mkdir()
    monkeypatch.chdir(tmp_path / 'work')
    with pytest.raises(ValueError, match='refusing to empty'):
        generate_demo_data(str(tmp_path), overwrite=True, **SMALL)
    assert (tmp_path / 'work').is_dir()


def run_cli(*args):
    return subprocess.run([
        sys.executable, SCRIPT, *map(str, args), '--num-train', '2',
        '--num-val', '1', '--size', '32'
    ],
                          capture_output=True,
                          text=True,
                          timeout=300)


def test_cli(tmp_path):
    assert run_cli(tmp_path).returncode == 0
    refused = run_cli(tmp_path)
    assert refused.returncode != 0
    assert refused.stderr.startswith(f'error: {tmp_path} is not empty')
    (tmp_path / 'stale.txt').write_text('')
    assert run_cli(tmp_path, '--overwrite').returncode == 0
    assert files_under(tmp_path) == expected_files(2, 1)
    empty = run_cli('')
    assert empty.returncode != 0
    assert 'empty path' in empty.stderr


def test_run_demo_data_reused_or_regenerated(tmp_path, monkeypatch):
    run_demo = load_script('tools/misc/run_demo.py')
    calls = []

    def small_generate(out_dir, overwrite=False):
        calls.append(overwrite)
        generate_demo_data(out_dir, overwrite=overwrite, **SMALL)

    monkeypatch.setattr(run_demo, 'generate_demo_data', small_generate)
    root = str(tmp_path / 'data')
    run_demo.ensure_data(root)
    run_demo.ensure_data(root)  # a second run reuses the data
    assert calls == [True]
    # What an interrupted generation leaves is regenerated.
    os.remove(osp.join(root, 'coco', 'annotations', 'instances_val.json'))
    run_demo.ensure_data(root)
    assert files_under(root) == expected_files(2, 1)
    # Anything else in the directory is left alone.
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'thesis.tex').write_text('')
    with pytest.raises(SystemExit, match='--data-root: .* is not empty'):
        run_demo.ensure_data(str(other))
    assert files_under(other) == ['thesis.tex']
