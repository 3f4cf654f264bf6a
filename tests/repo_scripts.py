# Copyright (c) OpenMMLab. All rights reserved.
"""Import the repository's scripts (tools/*.py) as modules, to call their
``main(argv)`` and helpers in the test process, or run them as processes
with :data:`SCRIPT_ENV` on the demo config."""
import importlib.util
import os
import os.path as osp

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs', 'demo',
                       'mask-rcnn_l2vit-demo_shapes.py')
# A tool run as a process: one thread (the tests share the cores), the
# CPU, and this checkout's package first.
SCRIPT_ENV = dict(
    os.environ,
    OMP_NUM_THREADS='1',
    CUDA_VISIBLE_DEVICES='',
    PYTHONPATH=os.pathsep.join([REPO, os.environ.get('PYTHONPATH', '')]))


def load_script(path: str):
    """The script at ``path`` (relative to the repository) as a module."""
    name = 'l2vit_' + osp.splitext(path)[0].replace('/', '_')
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
