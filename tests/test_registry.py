# Copyright (c) OpenMMLab. All rights reserved.
"""Every backbone as ``type='L2ViT'`` and ``type='mmplugin_l2vit.L2ViT'``
from every installed downstream registry."""
import importlib.util
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
from conftest import SMALL_ARCHS

import mmplugin_l2vit
from mmplugin_l2vit import L2ViT

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
SCOPES = ['mmdet', 'mmseg', 'mmpretrain']


@pytest.mark.parametrize('scope', SCOPES)
@pytest.mark.parametrize('type_name', sorted(SMALL_ARCHS))
def test_build_from_downstream_registry(scope, type_name):
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    for registered_name in (type_name, f'mmplugin_l2vit.{type_name}'):
        model = registry.build(
            dict(
                type=registered_name,
                arch=SMALL_ARCHS[type_name],
                out_indices=(1, 3)))
        assert type(model) is getattr(mmplugin_l2vit, type_name)
        assert model.out_indices == (1, 3)


def test_registered_in_plugin_scope():
    from mmplugin_l2vit.registry import MODELS
    assert MODELS.scope == 'mmplugin_l2vit'
    assert MODELS.get('L2ViT') is L2ViT


def test_registration_is_idempotent():
    mmplugin_l2vit.register_into_downstream()
    from mmdet.registry import MODELS
    assert MODELS.get('L2ViT') is L2ViT


def run_fresh(code):
    """Run ``code`` in a new interpreter that has not imported the plugin."""
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                            cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


FRESH_BUILD = """
    import sys
    from {scope}.registry import MODELS
    assert 'mmplugin_l2vit' not in sys.modules
    model = MODELS.build(dict(type='mmplugin_l2vit.L2ViT', arch={arch!r}))
    print(type(model).__module__)
    """


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_scoped_type_needs_no_import(scope):
    out = run_fresh(FRESH_BUILD.format(scope=scope, arch=SMALL_ARCHS['L2ViT']))
    assert out.split() == ['mmplugin_l2vit.models.backbones.l2vit']


def test_scoped_type_from_mmpretrain_without_import():
    """mmpretrain's registry imports ``mmpretrain.models`` before any
    lookup; with torchvision installed (the stack's) the scoped type needs
    no import there either."""
    assert importlib.util.find_spec('torchvision') is not None, (
        'torchvision is part of the stack: bash tools/install.sh')
    out = run_fresh(
        FRESH_BUILD.format(scope='mmpretrain', arch=SMALL_ARCHS['L2ViT']))
    assert out.split() == ['mmplugin_l2vit.models.backbones.l2vit']


# Hides torchvision from a fresh interpreter: importing it fails as it does
# where it is not installed.
NO_TORCHVISION = """
import sys


class NoTorchvision:

    def find_spec(self, name, path=None, target=None):
        if name.partition('.')[0] == 'torchvision':
            raise ModuleNotFoundError(
                "No module named 'torchvision'", name='torchvision')


sys.meta_path.insert(0, NoTorchvision())
"""


def test_mmpretrain_without_torchvision_after_import():
    """Without torchvision ``mmpretrain.models`` cannot be imported, so
    nothing builds from mmpretrain's registry until the plugin is imported;
    then the plugin's backbones do, with a warning."""
    code = NO_TORCHVISION + textwrap.dedent(
        FRESH_BUILD.format(scope='mmpretrain', arch=SMALL_ARCHS['L2ViT']))
    result = subprocess.run([sys.executable, '-c', code],
                            cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == (
        "ModuleNotFoundError: No module named 'torchvision'")
    out = run_fresh(
        code.replace("assert 'mmplugin_l2vit' not in sys.modules",
                     'import mmplugin_l2vit'))
    assert 'needs torchvision' in out
    assert out.split()[-1] == 'mmplugin_l2vit.models.backbones.l2vit'


def test_custom_imports_in_config(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        "custom_imports = dict(imports=['mmplugin_l2vit'], "
        "allow_failed_imports=False)\n"
        "model = dict(type='L2ViT', arch='tiny', out_indices=(3, ))\n")
    out = run_fresh(f"""
        from mmengine.config import Config
        cfg = Config.fromfile({str(cfg)!r})
        from mmseg.registry import MODELS
        print(type(MODELS.build(cfg.model)).__name__)
        """)
    assert out.strip() == 'L2ViT'


def test_backbone_module_needs_only_torch_mmengine_mmcv():
    out = run_fresh("""
        import sys
        import mmplugin_l2vit.models.backbones.l2vit
        heavy = sorted(m for m in ('mmdet.models', 'mmseg.models',
                                   'mmpretrain.models', 'torchvision')
                       if m in sys.modules)
        print(heavy)
        """)
    assert out.strip() == '[]'
