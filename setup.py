# Copyright (c) OpenMMLab. All rights reserved.
"""Build the plugin; the metadata lives in setup.cfg.

Like mmdet and mmseg, the package carries its configs, tools and model
index in ``mmplugin_l2vit/.mim/``, where ``mim`` and mmengine's
``mmplugin_l2vit::`` config inheritance look for them: a wheel and an sdist
get copies, an editable install gets symbolic links to the checkout's
folders, so edits there are seen at once.
"""
import os
import os.path as osp
import shutil
from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

PACKAGE = 'mmplugin_l2vit'
ROOT = osp.dirname(osp.abspath(__file__))
# What goes into ``<package>/.mim``, relative to the checkout's root.
MIM_FILES = ('configs', 'tools', 'model-index.yml')
# The marker line in requirements.txt after which the [dev] pins follow.
DEV_MARKER = '# --dev'


def copy_mim_files(package_dir):
    """Copy :data:`MIM_FILES` into ``package_dir/.mim``, replacing what was
    there."""
    ignore = shutil.ignore_patterns('__pycache__', '*.py[co]')
    for name in MIM_FILES:
        src = osp.join(ROOT, name)
        dst = osp.join(package_dir, '.mim', name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        os.makedirs(osp.dirname(dst), exist_ok=True)
        if osp.isdir(src):
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copyfile(src, dst)


def link_mim_files(package_dir):
    """Link ``package_dir/.mim/<name>`` to the checkout's :data:`MIM_FILES`
    with relative symbolic links."""
    mim_dir = osp.join(package_dir, '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        dst = osp.join(mim_dir, name)
        target = osp.relpath(osp.join(ROOT, name), mim_dir)
        if osp.islink(dst) and os.readlink(dst) == target:
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        os.symlink(target, dst)


class BuildPyWithMim(build_py):
    """``build_py`` that also lays out ``.mim``: copied into the build tree
    for a wheel, linked in the source tree for an editable install (which
    imports the package from there)."""

    def run(self):
        super().run()
        if self.editable_mode:
            link_mim_files(osp.join(ROOT, PACKAGE))
        else:
            copy_mim_files(osp.join(self.build_lib, PACKAGE))


class SdistWithMim(sdist):
    """``sdist`` whose archive also holds the ``.mim`` copies, the layout
    OpenMMLab's source distributions have."""

    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        copy_mim_files(osp.join(base_dir, PACKAGE))


def dev_requirements():
    """The [dev] extra: the pins after :data:`DEV_MARKER` in
    requirements.txt, the one place where versions are pinned."""
    with open(osp.join(ROOT, 'requirements.txt'), encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    if DEV_MARKER not in lines:
        raise RuntimeError(f'requirements.txt has no {DEV_MARKER!r} line')
    return [
        line for line in lines[lines.index(DEV_MARKER) + 1:]
        if line and not line.startswith('#')
    ]


setup(
    cmdclass=dict(build_py=BuildPyWithMim, sdist=SdistWithMim),
    extras_require=dict(
        dev=dev_requirements(),
        # ONNX export (tools/deployment) and onnxruntime inference; the
        # floors are the versions tested.
        deploy=['onnx>=1.23.2', 'onnxruntime>=1.32.0']))
