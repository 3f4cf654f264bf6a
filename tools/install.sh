#!/usr/bin/env bash
# Install the pinned stack and this plugin into the active Python.
#
#   bash tools/install.sh          runtime: torch, mmcv (with ops), mmengine,
#                                  mmdet, mmseg, mmpretrain, the plugin
#   bash tools/install.sh --dev    the same plus the test and lint tools
#                                  and onnx/onnxruntime (ONNX export)
#
# Every version comes from requirements.txt. Packages whose pinned version is
# already installed are skipped, so a second run takes seconds. An existing
# torch of any version is kept (users with CUDA bring their own); without
# one, the pinned CPU build is installed. mmcv has no wheels for recent
# torch, so it is compiled once (about 15 minutes on 2 cores) and pip's
# wheel cache makes later installs on the same machine quick.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PINS=requirements.txt
DEV=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    *) echo "usage: bash tools/install.sh [--dev]" >&2; exit 2 ;;
  esac
done

# The pinned requirement ('name==version') for each package name given.
pins() {
  for name in "$@"; do
    line=$(grep -iE "^${name}(==|$)" "$PINS" | head -n 1)
    [ -n "$line" ] || { echo "install.sh: $name is not in $PINS" >&2; exit 1; }
    echo "$line"
  done
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
  local todo
  todo=$(missing $(pins "$@"))
  if [ -z "$todo" ]; then
    echo "install.sh: already installed: $*"
    return
  fi
  echo "install.sh: installing" $todo
  "$PYTHON" -m pip install ${extra[@]+"${extra[@]}"} $todo
}

if "$PYTHON" -c 'import torch' 2>/dev/null; then
  echo "install.sh: keeping torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
else
  install -- torch
fi
# mmcv's setup.py and mmengine's config loader import pkg_resources, which
# setuptools >= 70 no longer ships with its build backend.
install -- setuptools wheel ninja numpy
install -- mmengine opencv-python-headless
# No build isolation: it would pull a CUDA torch and a setuptools without
# pkg_resources into the build environment.
MAX_JOBS=${MAX_JOBS:-2} install --no-build-isolation -- mmcv
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
  "$PYTHON" -m pip install --no-deps --no-build-isolation -e .
fi
echo "install.sh: done"
