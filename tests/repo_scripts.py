# Copyright (c) OpenMMLab. All rights reserved.
"""Import the repository's scripts (tools/*.py) as modules, to call their
``main(argv)`` and helpers in the test process."""
import importlib.util
import os.path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def load_script(path: str):
    """The script at ``path`` (relative to the repository) as a module."""
    name = 'l2vit_' + osp.splitext(path)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
