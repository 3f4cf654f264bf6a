#!/usr/bin/env bash
# Install the pinned stack and this plugin into the active Python.
#
#   bash tools/install.sh              runtime: torch with torchvision, mmcv
#                                      (with ops), mmengine, mmdet, mmseg,
#                                      mmpretrain, the plugin
#   bash tools/install.sh --dev        the same plus the test and lint tools
#                                      and onnx/onnxruntime (ONNX export)
#   bash tools/install.sh --check      change nothing: say what is missing or
#                                      broken (exit status 1 if anything is)
#   bash tools/install.sh --keep-torch never replace an existing torch: stop
#                                      instead when no torchvision works
#                                      beside it
#
# Every version comes from requirements.txt (torch and torchvision per
# machine, by environment markers). What is installed at its pinned version
# and works is kept, so a second run takes seconds.
#
# torch: an existing torch is kept (users with CUDA bring their own) when a
# torchvision works beside it, the one installed or the matching release
# (0.<minor + 15> for torch 2.<minor>, installed without dependencies);
# mmpretrain cannot be imported without it. When none works (PyPI's
# torchvision does not load beside a CPU-only torch from another index),
# the pinned pair replaces that torch, which the script says in one line.
# Without a torch the pinned pair is installed.
#
# mmcv has no wheels for recent torch, so it is compiled against the
# installed torch (49 minutes measured on a busy 2-core machine) when it
# is missing or its ops do not load. The wheel is kept in a folder per
# torch version
# ($L2VIT_WHEEL_CACHE, default ~/.cache/mmplugin_l2vit/wheels/torch-<version>)
# so that reinstalling is quick and a change of torch means one rebuild.
# (pip's own wheel cache would hand a wheel built for another torch back.)
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) fails the script too

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PINS=requirements.txt
DEV=0
CHECK=0
KEEP_TORCH=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --check) CHECK=1 ;;
    --keep-torch) KEEP_TORCH=1 ;;
    *) echo "usage: bash tools/install.sh [--dev] [--check] [--keep-torch]" >&2
       exit 2 ;;
  esac
done
TODO=0  # with --check: something would be installed

say() { echo "install.sh: $*"; }

pip_install() { "$PYTHON" -m pip install "$@"; }

# The pinned requirements ('name==version'), one a line, of the named
# packages, as they apply to this machine (environment markers).
pins() {
  "$PYTHON" - "$PINS" "$@" <<'PYEOF'
import platform
import sys
try:
    from packaging.markers import Marker
except ImportError:
    from pip._vendor.packaging.markers import Marker
path, names = sys.argv[1], [name.lower() for name in sys.argv[2:]]
found = {}
with open(path) as f:
    for line in f:
        line = line.split('#', 1)[0].strip()
        requirement, _, marker = (part.strip() for part in line.partition(';'))
        name = requirement.partition('==')[0].lower()
        if name not in names or name in found:
            continue
        if not marker or Marker(marker).evaluate():
            found[name] = requirement
missing = [name for name in names if name not in found]
if missing:
    sys.exit(f'install.sh: {path} pins no {", ".join(missing)} for this '
             f'machine ({platform.machine()})')
print('\n'.join(found[name] for name in names))
PYEOF
}

# Print the requirements among "$@" that are not installed at that version.
missing() {
  "$PYTHON" - "$@" <<'PYEOF'
import sys
from importlib import metadata
for req in sys.argv[1:]:
    name, _, version = req.partition('==')
    try:
        installed = metadata.version(name)
    except metadata.PackageNotFoundError:
        print(req)
        continue
    if version and installed.split('+')[0] != version:
        print(req)
PYEOF
}

# pip-install the pinned versions of the named packages that are missing.
install() {
  local extra=()
  while [ "${1:-}" != "--" ]; do extra+=("$1"); shift; done
  shift
  local reqs todo
  reqs=$(pins "$@")
  todo=$(missing $reqs)
  if [ -z "$todo" ]; then
    say "already installed: $*"
    return
  fi
  if [ "$CHECK" = 1 ]; then
    say "missing:" $todo
    TODO=1
    return
  fi
  say "installing" $todo
  pip_install ${extra[@]+"${extra[@]}"} $todo
}

# 'ok <versions>' when the probe named by $1 works in $PYTHON, else one line
# saying why not.
probe() {
  "$PYTHON" - "$1" "${2:-}" 2>/dev/null <<'PYEOF' || echo 'the probe failed'
import sys
what, pinned = sys.argv[1], sys.argv[2]
try:
    import torch
    if what == 'torch':
        print('ok', torch.__version__)
    elif what == 'torchvision':
        import torchvision
        from torchvision.ops import nms
        boxes = torch.tensor([[0., 0., 2., 2.], [0., 0., 2., 1.9]])
        assert nms(boxes, torch.tensor([1., .9]), .5).tolist() == [0]
        print('ok', torchvision.__version__)
    elif what == 'mmcv':
        import mmcv
        if mmcv.__version__ != pinned:
            raise RuntimeError(f'mmcv {mmcv.__version__} is not {pinned}')
        from mmcv.ops import nms
        boxes = torch.tensor([[0., 0., 2., 2.], [0., 0., 2., 1.9]])
        _, keep = nms(boxes, torch.tensor([1., .9]), .5)
        assert keep.tolist() == [0]
        print('ok', mmcv.__version__)
    elif what == 'stack':
        import mmdet.models  # noqa: F401
        import mmpretrain.models  # noqa: F401
        import mmseg.models  # noqa: F401
        print('ok')
except BaseException as error:  # noqa: B036  (one line, whatever it is)
    lines = str(error).strip().splitlines() or ['']
    print(f'{type(error).__name__}: {lines[0]}'[:300])
PYEOF
}

# torch and torchvision ----------------------------------------------------
# Looked up only when needed: a machine without pins may bring its torch.
torch_pair=$(pins torch torchvision 2>/dev/null) || torch_pair=
pair_line=$(echo $torch_pair)
need_pair() {
  [ -n "$torch_pair" ] || { say "$1; $PINS pins no torch for this" \
    "machine: install torch and torchvision, then run this again" >&2
    exit 1; }
}
torch_state=$(probe torch)
PAIR_INSTALLED=0
if [ "${torch_state%% *}" != ok ]; then
  if [ "$CHECK" = 1 ]; then
    say "no torch: would install $pair_line"
    TODO=1
  else
    need_pair 'no torch'
    say "no torch: installing $pair_line"
    pip_install $torch_pair
    PAIR_INSTALLED=1
  fi
else
  torch_version=${torch_state#ok }
  vision_state=$(probe torchvision)
  if [ "${vision_state%% *}" = ok ]; then
    say "keeping torch $torch_version with torchvision ${vision_state#ok }"
  elif [ "$CHECK" = 1 ]; then
    say "torch $torch_version has no working torchvision ($vision_state)"
    TODO=1
  else
    # The torchvision release for this torch, without touching torch.
    minor=$("$PYTHON" -c 'import torch; print(torch.__version__.split(".")[1])')
    vision="torchvision>=0.$((minor + 15)).0,<0.$((minor + 16))"
    say "keeping torch $torch_version; installing $vision (no dependencies)"
    if pip_install -q --no-deps --force-reinstall "$vision"; then
      vision_state=$(probe torchvision)
    else
      vision_state="pip found no $vision"
    fi
    if [ "${vision_state%% *}" = ok ]; then
      say "torchvision ${vision_state#ok } works with torch $torch_version"
    else
      "$PYTHON" -m pip uninstall -q -y torchvision 2>/dev/null || true
      if [ "$KEEP_TORCH" = 1 ]; then
        say "no torchvision works beside torch $torch_version" \
          "($vision_state); install one built for it (from the index your" \
          "torch came from) and run this again" >&2
        exit 1
      fi
      need_pair "no torchvision works beside torch $torch_version"
      say "no torchvision works beside torch $torch_version ($vision_state):" \
        "replacing it with the pinned $pair_line"
      pip_install $torch_pair
      PAIR_INSTALLED=1
    fi
  fi
fi
if [ "$PAIR_INSTALLED" = 1 ]; then
  vision_state=$(probe torchvision)
  if [ "${vision_state%% *}" != ok ]; then
    say "torchvision does not work: $vision_state" >&2
    exit 1
  fi
  torch_version=$(probe torch)
  torch_version=${torch_version#ok }
fi

# mmcv's setup.py and mmengine's config loader import pkg_resources, which
# setuptools >= 70 no longer ships with its build backend.
install -- setuptools wheel ninja numpy
install -- mmengine opencv-python-headless

# mmcv, compiled against the installed torch --------------------------------
# Build the pinned mmcv against the installed torch into the folder $1;
# print the wheel's path (the build's output goes to stderr).
build_mmcv() {
  local build src built
  mkdir -p "$1"
  build=$(mktemp -d "$1/.build.XXXXXX")
  # Removed on exit, built or not. The path is expanded now: this runs in
  # a command substitution, whose exit comes after the function's locals
  # are gone (and set -u would fail the trap, and with it the install, on
  # an unset $build).
  trap "rm -rf -- $(printf %q "$build")" EXIT
  # No build isolation: it would pull a CUDA torch and a setuptools without
  # pkg_resources into the build environment. No pip cache: it would return
  # a wheel built against another torch.
  "$PYTHON" -m pip download -q --no-deps --no-binary :all: \
    --no-build-isolation --no-cache-dir -d "$build" "$mmcv_pin" >&2
  tar -xzf "$build"/mmcv-"$mmcv_version".tar.gz -C "$build"
  src=$build/mmcv-$mmcv_version
  # mmcv's setup.py asks for C++17; the headers of recent torch (2.14) need
  # C++20 (ATen.h stops otherwise), so the flag follows torch's.
  if "$PYTHON" -c 'import os, sys, torch
header = os.path.join(os.path.dirname(torch.__file__), "include", "ATen",
                      "ATen.h")
sys.exit("C++20 or later" not in open(header).read())'; then
    say "torch $torch_version needs C++20: building mmcv with -std=c++20" >&2
    sed -i 's/std=c++17/std=c++20/g; s/std:c++17/std:c++20/g' \
      "$src/setup.py"
  fi
  MAX_JOBS=${MAX_JOBS:-2} "$PYTHON" -m pip wheel --no-build-isolation \
    --no-deps --no-cache-dir -w "$build" "$src" >&2
  built=$(ls "$build"/mmcv-*.whl)
  mv "$built" "$1/"
  echo "$1/$(basename "$built")"
}

# Install the mmcv wheel $1 and print what the mmcv probe says of it.
install_mmcv() {
  pip_install --no-deps --force-reinstall "$1" >&2
  pip_install -q "$1" >&2  # its dependencies, if any is missing
  probe mmcv "$mmcv_version"
}

mmcv_pin=$(pins mmcv)
mmcv_version=${mmcv_pin#mmcv==}
mmcv_state=$(probe mmcv "$mmcv_version")
if [ "${mmcv_state%% *}" = ok ]; then
  say "keeping mmcv $mmcv_version (its ops load and run)"
elif [ "$CHECK" = 1 ]; then
  say "mmcv $mmcv_version would be installed or rebuilt ($mmcv_state)"
  TODO=1
else
  # With a GPU visible the build compiles the CUDA ops too: another wheel.
  ops=$("$PYTHON" -c 'import torch; print("-cuda" if torch.cuda.is_available() else "")')
  cache=${L2VIT_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmplugin_l2vit/wheels}
  wheel_dir=$cache/torch-$torch_version$ops
  tag=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
  wheel=$(ls "$wheel_dir"/mmcv-"$mmcv_version"-"$tag"-*.whl 2>/dev/null \
    | head -n 1 || true)
  if [ -n "$wheel" ]; then
    say "mmcv $mmcv_version: $mmcv_state; installing the wheel built" \
      "against torch $torch_version: $wheel"
    mmcv_state=$(install_mmcv "$wheel")
    if [ "${mmcv_state%% *}" != ok ]; then
      say "that wheel does not work ($mmcv_state): building it again"
      rm -f "$wheel"
      wheel=
    fi
  fi
  if [ -z "$wheel" ]; then
    say "mmcv $mmcv_version: $mmcv_state; building it against torch" \
      "$torch_version (49 minutes on a busy 2-core machine) into $wheel_dir"
    wheel=$(build_mmcv "$wheel_dir")
    mmcv_state=$(install_mmcv "$wheel")
  fi
  if [ "${mmcv_state%% *}" != ok ]; then
    say "mmcv's ops do not work after the install: $mmcv_state" >&2
    exit 1
  fi
fi

# mmseg imports ftfy and regex without declaring them.
install -- mmdet mmsegmentation mmpretrain ftfy regex pycocotools
if [ "$DEV" = 1 ]; then
  install -- pytest pytest-xdist flake8 isort yapf onnx onnxruntime
fi
# The plugin, editable, from this checkout (again if another checkout was
# installed before, or if mmplugin_l2vit/.mim, where the editable install
# links the configs, tools and model index, is missing).
here=$(pwd -P)
installed=$(cd / && "$PYTHON" -c 'import os, mmplugin_l2vit as m
print(os.path.dirname(os.path.dirname(os.path.realpath(m.__file__))))' \
  2>/dev/null || true)
if [ "$installed" != "$here" ] || [ ! -e mmplugin_l2vit/.mim/model-index.yml ]; then
  if [ "$CHECK" = 1 ]; then
    say "the plugin is not installed (editable) from $here"
    TODO=1
  else
    "$PYTHON" -m pip install --no-deps --no-build-isolation -e .
  fi
fi
if [ "$CHECK" = 1 ]; then
  if [ "$TODO" = 1 ]; then
    say "check: the stack is incomplete (see above)"
    exit 1
  fi
  say "check: the stack is complete"
  exit 0
fi
stack_state=$(probe stack)
if [ "$stack_state" != ok ]; then
  say "mmdet, mmseg or mmpretrain does not import: $stack_state" >&2
  exit 1
fi
say "done: torch $torch_version, torchvision ${vision_state#ok }," \
  "mmcv $mmcv_version; mmdet, mmseg and mmpretrain import"
