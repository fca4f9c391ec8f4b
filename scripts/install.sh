#!/usr/bin/env bash
# Install everything the study and its tests need on a fresh machine (idempotent: a second run
# takes seconds). Fashion-MNIST comes from Debian's package where apt exists, so the quick study
# works offline; torch/torchvision are the ordinary builds from the package index (the CUDA
# build, ~5.5 GB, which also runs on a CPU; TORCH_INDEX=https://download.pytorch.org/whl/cpu
# takes PyTorch's CPU-only build instead: README "Install").
#
# Where it installs (scripts/python then runs that Python, so the README's commands work on
# every route):
#   - the active virtual environment or conda environment, if there is one;
#   - else a venv at $VENV (default .venv) when $VENV is set or when the system Python refuses
#     pip (PEP 668, "externally-managed-environment": stock Debian and Ubuntu). It is made with
#     --system-site-packages, so packages the system already has are not downloaded again;
#   - else the Python itself (a user's pyenv or python.org install, CI).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

as_root() {  # run a command as root where we are root or sudo exists; else say it could not
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1; then
  { as_root apt-get update -qq && as_root apt-get install -y -qq dataset-fashion-mnist; } \
    || echo "install.sh: warning: apt could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded if online" >&2
fi

in_an_environment=$("$PYTHON" -c 'import os, sys; print(int(sys.prefix != sys.base_prefix or bool(os.environ.get("CONDA_PREFIX"))))')
refuses_pip=$("$PYTHON" -c 'import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
if [ "$in_an_environment" = 0 ] && { [ -n "${VENV:-}" ] || [ "$refuses_pip" = 1 ]; }; then
  VENV=${VENV:-.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv --system-site-packages "$VENV" 2>/dev/null; then
      # Debian splits venv's ensurepip into python3-venv (python3.X-venv)
      version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      rm -rf "$VENV"
      as_root apt-get install -y -qq "python$version-venv" >/dev/null \
        || { echo "install.sh: error: cannot make a venv: install python$version-venv" >&2; exit 1; }
      "$PYTHON" -m venv --system-site-packages "$VENV"
    fi
    echo "install.sh: made a virtual environment in $VENV ($PYTHON refuses pip or VENV is set)"
  fi
  PYTHON=$VENV/bin/python
fi

"$PYTHON" -m pip install --quiet --upgrade pip
if [ -n "${TORCH_INDEX:-}" ]; then  # e.g. https://download.pytorch.org/whl/cpu: no CUDA libraries
  "$PYTHON" -m pip install --quiet torch torchvision --index-url "$TORCH_INDEX"
fi
"$PYTHON" -m pip install --quiet -e ".[dev,lab]"
"$PYTHON" -c "import energy_lib, torch, torchvision; print(f'installed energy_lib {energy_lib.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}')"
echo "install.sh: installed into $("$PYTHON" -c 'import sys; print(sys.prefix)'); scripts/python runs it"
