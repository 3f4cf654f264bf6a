# Copyright (c) OpenMMLab. All rights reserved.
"""The installed stack is the one ``tools/install.sh`` makes: its
``--check`` (which changes nothing) finds torch with a working
torchvision, mmcv whose ops run, every pinned package and this checkout's
plugin; and ``requirements.txt`` pins a matching torch/torchvision pair
for each machine it names."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
from packaging.markers import Marker

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAIRS = dict(x86_64=('2.14.1', '0.29.1'), aarch64=('2.9.1', '0.24.1'))


def pins_for(machine):
    """``{name: version}`` of requirements.txt on a ``machine``."""
    pins = {}
    with open(osp.join(REPO, 'requirements.txt')) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            requirement, _, marker = (p.strip() for p in line.partition(';'))
            name, version = requirement.split('==')
            environment = dict(platform_machine=machine)
            if marker and not Marker(marker).evaluate(environment):
                continue
            assert name not in pins, f'{name} pinned twice on {machine}'
            pins[name] = version
    return pins


@pytest.mark.parametrize('machine', sorted(PAIRS))
def test_torch_and_torchvision_pinned_in_pairs(machine):
    pins = pins_for(machine)
    assert (pins['torch'], pins['torchvision']) == PAIRS[machine]
    torch_minor = int(pins['torch'].split('.')[1])
    assert int(pins['torchvision'].split('.')[1]) == torch_minor + 15
    assert pins['mmcv'] == '2.1.0'


def test_install_check_finds_the_stack_complete():
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(['bash', 'tools/install.sh', '--check'],
                            cwd=REPO,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    import torch
    import torchvision
    lines = result.stdout.splitlines()
    assert (f'install.sh: keeping torch {torch.__version__} with '
            f'torchvision {torchvision.__version__}') in lines
    assert 'install.sh: keeping mmcv 2.1.0 (its ops load and run)' in lines
    assert lines[-1] == 'install.sh: check: the stack is complete'
    assert not any(re.search(r'missing|would', line) for line in lines)
