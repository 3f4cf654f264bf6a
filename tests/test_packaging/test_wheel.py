# Copyright (c) OpenMMLab. All rights reserved.
"""The wheel and the sdist carry the configs, tools and model index in
``mmplugin_l2vit/.mim``, and a wheel installed into a fresh virtual
environment works from a directory outside the checkout: a user's config
inherits ours by scope, the shipped ``.mim/tools/train.py`` (what
``mim train`` runs) trains the demo config for two iterations and
``.mim/tools/test.py`` evaluates the checkpoint. A missing package-data
entry fails here.

The environment sees the packages of the one that runs the tests (torch,
mmcv and the OpenMMLab libraries are not reinstalled); the wheel installed
into it shadows the editable install, which the tests check.
"""
import glob
import json
import os
import os.path as osp
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile

import pytest

pytestmark = pytest.mark.slow

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def run(args, cwd, timeout=600):
    """Run ``args`` in ``cwd`` with PYTHONPATH cleared; return stdout."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([str(arg) for arg in args],
                            cwd=str(cwd),
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=timeout)
    assert result.returncode == 0, (
        f'{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}')
    return result.stdout


def checkout_mim_files():
    """The files the package must carry in .mim, relative to the root."""
    files = ['model-index.yml']
    for folder in ('configs', 'tools'):
        for path in glob.glob(
                osp.join(REPO, folder, '**', '*'), recursive=True):
            if osp.isfile(path) and '__pycache__' not in path:
                files.append(osp.relpath(path, REPO))
    return sorted(files)


@pytest.fixture(scope='module')
def source_tree(tmp_path_factory):
    """A copy of the checkout without build products, so that builds
    neither see nor leave local state (and xdist workers do not race)."""
    tree = tmp_path_factory.mktemp('source') / 'mmplugin_l2vit'
    shutil.copytree(
        REPO,
        tree,
        ignore=shutil.ignore_patterns('.git', 'build', 'dist', '*.egg-info',
                                      '.mim', '__pycache__', 'work_dirs',
                                      'demo_data', '*.pth'))
    return tree


@pytest.fixture(scope='module')
def wheel(source_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    run([
        sys.executable, '-m', 'pip', 'wheel', '--no-deps',
        '--no-build-isolation', '-w', out, source_tree
    ],
        cwd=out)
    (path, ) = glob.glob(osp.join(str(out), 'mmplugin_l2vit-*.whl'))
    return path


@pytest.fixture(scope='module')
def venv_python(wheel, tmp_path_factory):
    env_dir = tmp_path_factory.mktemp('venv')
    run([sys.executable, '-m', 'venv', '--without-pip', env_dir], cwd=env_dir)
    python = osp.join(str(env_dir), 'bin', 'python')
    # The new environment sees the packages of the one running the tests
    # (a virtual environment or not), after its own: a .pth file adds their
    # folders as site folders. (--system-site-packages would add the base
    # interpreter's, another stack when the tests run in a venv.)
    own = run([
        python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
        "['purelib'])"
    ],
              cwd=env_dir).strip()
    with open(osp.join(own, '_test_stack.pth'), 'w') as f:
        f.write('import site; ' +
                '; '.join(f'site.addsitedir({folder!r})'
                          for folder in site.getsitepackages()) + '\n')
    # --force-reinstall: the editable install seen through the system
    # site-packages has the same version.
    run([
        sys.executable, '-m', 'pip', '--python', python, 'install',
        '--no-deps', '--no-index', '--force-reinstall', wheel
    ],
        cwd=env_dir)
    return python


@pytest.fixture(scope='module')
def user_dir(tmp_path_factory):
    """A user's working directory, outside the checkout."""
    return tmp_path_factory.mktemp('user')


def installed_package(venv_python, user_dir):
    return run([
        venv_python, '-c', 'import os, mmplugin_l2vit as m; '
        'print(os.path.dirname(os.path.abspath(m.__file__)))'
    ], user_dir).strip()


def test_wheel_carries_mim_files_and_metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata, ) = [n for n in names if n.endswith('.dist-info/METADATA')]
        metadata = archive.read(metadata).decode()
    for path in checkout_mim_files():
        assert f'mmplugin_l2vit/.mim/{path}' in names, path
    assert any(n.endswith('.dist-info/LICENSE') for n in names)
    assert 'Requires-Python: >=3.11' in metadata
    for requirement in ('torch>=2.4', 'mmcv<2.2.0,>=2.0.0',
                        'mmengine<1.0.0,>=0.10.0'):
        assert f'Requires-Dist: {requirement}' in metadata, requirement
    assert 'Provides-Extra: dev' in metadata
    assert 'Provides-Extra: deploy' in metadata
    assert 'Requires-Dist: onnxruntime>=1.32.0; extra == "deploy"' in metadata
    assert "Requires-Dist: pytest==9.0.3; extra == \"dev\"" in metadata


def test_sdist_carries_mim_files(source_tree, tmp_path):
    run([
        sys.executable, '-c', 'import sys; from setuptools import build_meta; '
        'build_meta.build_sdist(sys.argv[1])', tmp_path
    ],
        cwd=source_tree)
    (sdist, ) = glob.glob(str(tmp_path / 'mmplugin_l2vit-*.tar.gz'))
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split('/')[0]
        names = {name[len(top) + 1:] for name in archive.getnames()}
    for path in checkout_mim_files():
        assert f'mmplugin_l2vit/.mim/{path}' in names, path
        # The sources a wheel built from the sdist copies in.
        assert path in names, path
    assert {'LICENSE', 'requirements.txt', 'setup.py'} <= names


def test_venv_imports_the_wheel(venv_python, user_dir):
    package = installed_package(venv_python, user_dir)
    assert package.startswith(osp.dirname(osp.dirname(venv_python)))
    assert not package.startswith(REPO)
    # Copies, not links to a checkout.
    assert not osp.islink(osp.join(package, '.mim', 'configs'))


def test_scoped_config_builds_from_the_wheel(venv_python, user_dir):
    (user_dir / 'mask_rcnn.py').write_text(
        "_base_ = 'mmplugin_l2vit::l2vit/mask-rcnn_l2vit-t_fpn_1x_coco.py'\n"
        'model = dict(backbone=dict(init_cfg=None))\n')
    out = run([
        venv_python, '-c', 'import mmplugin_l2vit\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import init_default_scope\n'
        "cfg = Config.fromfile('mask_rcnn.py')\n"
        'init_default_scope(cfg.default_scope)\n'
        'from mmdet.registry import MODELS\n'
        'model = MODELS.build(cfg.model)\n'
        'print(type(model).__name__, type(model.backbone).__name__)\n'
    ], user_dir)
    assert out.splitlines()[0] == 'MaskRCNN L2ViT'


def test_shipped_tools_train_and_test_the_demo(venv_python, user_dir):
    data = user_dir / 'demo_data'
    run([
        venv_python, '-c', 'import sys\n'
        'from mmplugin_l2vit.datasets import generate_demo_data\n'
        'generate_demo_data(sys.argv[1], num_train=4, num_val=2, size=64)',
        data
    ], user_dir)
    coco = f'{data}/coco/'
    (user_dir / 'demo.py').write_text(
        "_base_ = 'mmplugin_l2vit::demo/mask-rcnn_l2vit-demo_shapes.py'\n"
        f"data_root = '{coco}'\n"
        'train_dataloader = dict(batch_size=2, dataset=dict('
        'data_root=data_root))\n'
        'val_dataloader = dict(batch_size=2, dataset=dict('
        'data_root=data_root))\n'
        'test_dataloader = val_dataloader\n'
        'val_evaluator = dict('
        "ann_file=data_root + 'annotations/instances_val.json')\n"
        'test_evaluator = val_evaluator\n'
        'train_cfg = dict(max_iters=2, val_interval=2)\n'
        'default_hooks = dict(checkpoint=dict(interval=2))\n'
        'model = dict(backbone=dict(arch=dict(depths=[1, 1, 1, 1])))\n')
    tools = osp.join(installed_package(venv_python, user_dir), '.mim', 'tools')
    run([
        venv_python,
        osp.join(tools, 'train.py'), 'demo.py', '--work-dir', 'train'
    ], user_dir)
    checkpoint = user_dir / 'train' / 'iter_2.pth'
    assert checkpoint.is_file()
    run([
        venv_python,
        osp.join(tools, 'test.py'), 'demo.py', checkpoint, '--work-dir', 'test'
    ], user_dir)
    (log, ) = glob.glob(str(user_dir / 'test' / '*' / '*.json'))
    with open(log) as f:
        metrics = json.loads(f.readlines()[-1])
    assert 0 <= metrics['coco/bbox_mAP'] <= 1
    assert 0 <= metrics['coco/segm_mAP'] <= 1
