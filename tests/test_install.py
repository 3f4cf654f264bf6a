# Copyright (c) OpenMMLab. All rights reserved.
"""The installed stack is the one ``tools/install.sh`` makes: its
``--check`` (which changes nothing) finds torch with a working
torchvision, mmcv whose ops run, every pinned package and this checkout's
plugin; ``requirements.txt`` pins a matching torch/torchvision pair for
each machine it names; and the script's torch decisions (keep a torch
whose torchvision works, else try the matching torchvision, else replace
torch with the pinned pair or, with ``--keep-torch``, stop) and its mmcv
build (C++20 where torch's headers need it, the wheel kept, the install
going on after it, a failed build cleaned up) are followed with stand-ins
for torch, torchvision, mmcv and pip."""
import os
import os.path as osp
import platform
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


# A Python whose ``torch`` and ``torchvision`` are stand-ins and whose pip
# only records what it is asked for: install.sh's torch decisions, run for
# real without installing anything. ``FAKE_VISION`` says what torchvision
# does: 'works', 'broken' (PyPI's beside a CPU-only torch) or 'missing'.
FAKE_PYTHON = r'''#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "$*" >> "$FAKE_DIR/pip.log"
  exit 1  # the index has no build for this torch
fi
PYTHONPATH="$FAKE_DIR/site" exec "$REAL_PYTHON" "$@"
'''
FAKE_TORCH = '''__version__ = '2.13.0+cpu'


def tensor(values):
    return values


class cuda:
    @staticmethod
    def is_available():
        return False
'''
FAKE_VISION = {
    'works': "__version__ = '0.28.0'\n",
    'broken':
    "raise RuntimeError('operator torchvision::nms does not exist')\n",
}
FAKE_VISION_OPS = '''class _Kept(list):
    def tolist(self):
        return list(self)


def nms(boxes, scores, threshold):
    return _Kept([0])
'''


def run_install_with_fakes(tmp_path,
                           vision,
                           *args,
                           python=FAKE_PYTHON,
                           env=None):
    site = tmp_path / 'site'
    (site / 'torch').mkdir(parents=True, exist_ok=True)
    (site / 'torch' / '__init__.py').write_text(FAKE_TORCH)
    (site / 'torchvision').mkdir()
    if vision == 'missing':
        (site / 'torchvision' / '__init__.py'
         ).write_text("raise ImportError('No module named torchvision')\n")
    else:
        (site / 'torchvision' / '__init__.py').write_text(FAKE_VISION[vision])
        (site / 'torchvision' / 'ops.py').write_text(FAKE_VISION_OPS)
    python_path = tmp_path / 'python'
    python_path.write_text(python)
    python_path.chmod(0o755)
    env = dict(
        os.environ,
        PYTHON=str(python_path),
        FAKE_DIR=str(tmp_path),
        REAL_PYTHON=sys.executable,
        **(env or {}))
    result = subprocess.run(['bash', 'tools/install.sh', *args],
                            cwd=REPO,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=300)
    log = tmp_path / 'pip.log'
    pip_calls = log.read_text().splitlines() if log.exists() else []
    return result, pip_calls


def test_install_keeps_a_torch_whose_torchvision_works(tmp_path):
    result, pip_calls = run_install_with_fakes(tmp_path, 'works', '--check')
    assert ('install.sh: keeping torch 2.13.0+cpu with torchvision 0.28.0'
            in result.stdout.splitlines())
    assert pip_calls == []


def test_install_check_reports_a_torch_without_torchvision(tmp_path):
    result, pip_calls = run_install_with_fakes(tmp_path, 'broken', '--check')
    assert result.returncode == 1
    assert ('install.sh: torch 2.13.0+cpu has no working torchvision '
            '(RuntimeError: operator torchvision::nms does not exist)'
            in result.stdout.splitlines())
    assert pip_calls == []


@pytest.mark.parametrize('vision', ['broken', 'missing'])
def test_install_tries_the_matching_torchvision_then_the_pinned_pair(
        tmp_path, vision):
    """The matching release first, without dependencies; when none works
    the pinned pair replaces torch (the fake pip fails, so the script stops
    after asking for it)."""
    result, pip_calls = run_install_with_fakes(tmp_path, vision)
    assert result.returncode != 0
    torch_pin, vision_pin = (f'{name}=={version}' for name, version in zip((
        'torch', 'torchvision'), PAIRS[platform.machine()]))
    assert pip_calls[0].split() == [
        '-m', 'pip', 'install', '-q', '--no-deps', '--force-reinstall',
        'torchvision>=0.28.0,<0.29'
    ]
    assert pip_calls[-1].split() == [
        '-m', 'pip', 'install', torch_pin, vision_pin
    ]
    assert ('replacing it with the pinned '
            f'{torch_pin} {vision_pin}') in result.stdout


def test_install_keep_torch_stops_instead_of_replacing(tmp_path):
    result, pip_calls = run_install_with_fakes(tmp_path, 'broken',
                                               '--keep-torch')
    assert result.returncode == 1
    assert 'no torchvision works beside torch 2.13.0+cpu' in result.stderr
    assert not any('torch==' in call for call in pip_calls)


# The same stand-ins, with a pip that plays mmcv's source build: ``download``
# leaves a source archive whose setup.py asks for C++17, ``wheel`` records
# the flag the script left in it and writes a wheel (or fails, with
# FAKE_BUILD=fails), and installing that wheel puts a working mmcv in
# place of the broken one the machine starts with. The fake torch's headers
# need C++20, as torch 2.14's do.
FAKE_BUILDING_PYTHON = r"""#!/usr/bin/env bash
if [ "$1" = -m ] && [ "$2" = pip ]; then
  echo "$*" >> "$FAKE_DIR/pip.log"
  shift 2
  last=${*: -1}
  case "$1" in
    download)
      dest=$(echo "$*" | sed 's/.* -d \([^ ]*\) .*/\1/')
      mkdir -p "$FAKE_DIR/src/mmcv-2.1.0"
      echo "flags = ['-std=c++17']" > "$FAKE_DIR/src/mmcv-2.1.0/setup.py"
      tar -czf "$dest/mmcv-2.1.0.tar.gz" -C "$FAKE_DIR/src" mmcv-2.1.0 ;;
    wheel)
      grep -o 'std=c++[0-9]*' "$last/setup.py" >> "$FAKE_DIR/pip.log"
      [ "${FAKE_BUILD:-}" = fails ] && exit 1
      dest=$(echo "$*" | sed 's/.* -w \([^ ]*\) .*/\1/')
      touch "$dest/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl" ;;
    install)
      case "$last" in
        *.whl) cp "$FAKE_DIR/working_mmcv.py" \
                 "$FAKE_DIR/site/mmcv/__init__.py" ;;
      esac ;;
  esac
  exit 0
fi
PYTHONPATH="$FAKE_DIR/site" exec "$REAL_PYTHON" "$@"
"""


def build_mmcv_with_fakes(tmp_path, build):
    mmcv = tmp_path / 'site' / 'mmcv'
    mmcv.mkdir(parents=True)
    (mmcv / '__init__.py').write_text("raise ImportError('no mmcv')\n")
    (mmcv / 'ops.py').write_text(
        FAKE_VISION_OPS.replace('return _Kept', 'return boxes, _Kept'))
    (tmp_path / 'working_mmcv.py').write_text("__version__ = '2.1.0'\n")
    headers = tmp_path / 'site' / 'torch' / 'include' / 'ATen'
    headers.mkdir(parents=True)
    (headers / 'ATen.h').write_text('#error C++20 or later compatible '
                                    'compiler is required\n')
    cache = tmp_path / 'wheels'
    result, pip_calls = run_install_with_fakes(
        tmp_path,
        'works',
        python=FAKE_BUILDING_PYTHON,
        env=dict(L2VIT_WHEEL_CACHE=str(cache), FAKE_BUILD=build))
    return result, pip_calls, cache / 'torch-2.13.0+cpu'


def test_install_builds_mmcv_into_the_wheel_folder_and_goes_on(tmp_path):
    result, pip_calls, wheel_dir = build_mmcv_with_fakes(tmp_path, 'works')
    wheel = wheel_dir / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'
    # Built with the C++ standard torch's headers need, kept, installed.
    assert 'std=c++20' in pip_calls
    assert sorted(os.listdir(wheel_dir)) == [wheel.name]
    assert any(call.endswith(str(wheel)) for call in pip_calls)
    assert 'unbound variable' not in result.stderr
    # The script went on past mmcv: to the plugin and the final stack
    # probe, which the stand-in torch cannot pass.
    assert any(call.endswith('-e .') for call in pip_calls), result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        'install.sh: mmdet, mmseg or mmpretrain does not import')


def test_install_cleans_up_a_failed_mmcv_build(tmp_path):
    result, pip_calls, wheel_dir = build_mmcv_with_fakes(tmp_path, 'fails')
    assert result.returncode != 0
    assert 'std=c++20' in pip_calls
    assert os.listdir(wheel_dir) == []  # no wheel, no build folder
    assert 'unbound variable' not in result.stderr
    assert not any(call.endswith('-e .') for call in pip_calls)
