#!/usr/bin/env bash
# Install everything the study and its tests need on a fresh machine (idempotent: a second run
# takes seconds). Fashion-MNIST comes from Debian's package where apt exists, so the quick study
# works offline; torch/torchvision are the ordinary builds from the package index (large: the
# CUDA build is ~5 GB and also runs on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=$(command -v sudo || true); fi
  if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist \
      || echo "install.sh: warning: apt could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded if online" >&2
  fi
fi

"$PYTHON" -m pip install --quiet --upgrade pip
"$PYTHON" -m pip install --quiet -e ".[dev]"
"$PYTHON" -c "import energy_lib, torch, torchvision; print(f'installed energy_lib {energy_lib.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}')"
