#!/usr/bin/env bash
# Install this checkout (editable) with the extras asked for; idempotent: a second run takes
# seconds. `bash scripts/install.sh --help` lists the options; docs/install.md explains them.
#
# It asks before it touches the system: apt-get (through sudo unless root) runs only with
# --apt, or after a "y" typed at a terminal; with neither, it runs no apt command and says
# what it skipped. pip runs only in the environment chosen below, and pip itself is upgraded
# only in a venv this script has just made, never in an environment the user already had.
#
# Where it installs (scripts/python then runs that Python, so the README's commands work on
# every route):
#   - the active virtual environment or conda environment, if there is one;
#   - else a venv at $VENV (default .venv) when $VENV is set or when the system Python refuses
#     pip (PEP 668, "externally-managed-environment": stock Debian and Ubuntu), made without
#     the system's site-packages unless --system-site-packages is given;
#   - else the Python itself (a user's pyenv or python.org install, CI).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash scripts/install.sh [--apt | --no-apt] [--dev] [--lab] [--system-site-packages]

Installs this checkout editable (pip install -e .) with the extras asked for, into the active
virtual or conda environment; else into a venv ($VENV, default .venv) when VENV is set or the
system Python refuses pip (PEP 668); else into that Python. scripts/python runs the result.

  --apt                   allow apt-get (through sudo unless root): `apt-get update` and
                          `apt-get install dataset-fashion-mnist` (Fashion-MNIST offline) when
                          its folder is missing, and python3.X-venv when venv cannot make a venv.
                          Without --apt the script asks at a terminal (y/N); with no terminal
                          it runs no apt command and says what it skipped.
  --no-apt                run no apt command, and do not ask
  --dev                   the dev extra: pytest and what the tests exercise (the test command)
  --lab                   the lab extra: JupyterLab
  --system-site-packages  a venv made here also sees the system Python's packages
  -h, --help              this text

Environment:
  PYTHON             the Python to install with (default python3)
  VENV               make or use a venv there (default .venv where the system Python refuses pip)
  TORCH_INDEX        take torch and torchvision from this index first; the CPU-only build:
                     TORCH_INDEX=https://download.pytorch.org/whl/cpu
  FASHION_MNIST_DIR  the folder checked for Fashion-MNIST before apt is offered
                     (default /usr/share/datasets/fashion-mnist, where Debian's package puts it)
EOF
}

apt=ask extras="" venv_option=""
for arg in "$@"; do
  case "$arg" in
    --apt) apt=yes ;;
    --no-apt) apt=no ;;
    --dev) extras="$extras,dev" ;;
    --lab) extras="$extras,lab" ;;
    --system-site-packages) venv_option=--system-site-packages ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown option '$arg' (bash scripts/install.sh --help lists the options)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
FASHION_MNIST_DIR=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}

if [ "$(id -u)" = 0 ]; then apt_get="apt-get"; else apt_get="sudo apt-get"; fi

as_root() {  # run a command as root where we are root or sudo exists; else say it could not
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else return 1; fi
}

may_run_apt() {  # $1: the apt-get command line, $2: what it is for. Succeeds when allowed.
  case "$apt" in
    yes) return 0 ;;
    no) echo "install.sh: skipped \`$1\` ($2): --no-apt" >&2; return 1 ;;
  esac
  if [ -t 0 ]; then
    local answer=""
    read -r -p "install.sh: run \`$1\` ($2)? [y/N] " answer || true
    case "$answer" in [yY] | [yY][eE][sS]) return 0 ;; esac
    echo "install.sh: skipped \`$1\`; bash scripts/install.sh --apt allows it" >&2
    return 1
  fi
  echo "install.sh: skipped \`$1\` ($2): no --apt and no terminal to ask; rerun with --apt to allow it" >&2
  return 1
}

if [ ! -d "$FASHION_MNIST_DIR" ] && command -v apt-get >/dev/null 2>&1; then
  if may_run_apt "$apt_get update && $apt_get install dataset-fashion-mnist" \
      "Fashion-MNIST offline; without it a study downloads the files when online"; then
    { as_root apt-get update -qq && as_root apt-get install -y -qq dataset-fashion-mnist; } \
      || echo "install.sh: warning: apt could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded if online" >&2
  fi
fi

in_an_environment=$("$PYTHON" -c 'import os, sys; print(int(sys.prefix != sys.base_prefix or bool(os.environ.get("CONDA_PREFIX"))))')
refuses_pip=$("$PYTHON" -c 'import os, sysconfig; print(int(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))))')
made_venv=0
if [ "$in_an_environment" = 0 ] && { [ -n "${VENV:-}" ] || [ "$refuses_pip" = 1 ]; }; then
  VENV=${VENV:-.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    if ! "$PYTHON" -m venv ${venv_option:+"$venv_option"} "$VENV" 2>/dev/null; then
      # Debian splits venv's ensurepip into python3-venv (python3.X-venv)
      version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      rm -rf "$VENV"
      if may_run_apt "$apt_get install python$version-venv" "venv cannot make a venv without it" \
          && as_root apt-get install -y -qq "python$version-venv" >/dev/null; then
        "$PYTHON" -m venv ${venv_option:+"$venv_option"} "$VENV"
      else
        echo "install.sh: error: cannot make a venv: install python$version-venv (or rerun with --apt)" >&2
        exit 1
      fi
    fi
    made_venv=1
    echo "install.sh: made a virtual environment in $VENV ($PYTHON refuses pip or VENV is set)"
  fi
  PYTHON=$VENV/bin/python
fi

if [ "$made_venv" = 1 ]; then  # its bundled pip may predate editable installs from pyproject.toml
  "$PYTHON" -m pip install --quiet --upgrade pip
fi
if [ -n "${TORCH_INDEX:-}" ]; then  # e.g. https://download.pytorch.org/whl/cpu: no CUDA libraries
  "$PYTHON" -m pip install --quiet torch torchvision --index-url "$TORCH_INDEX"
fi
spec=.${extras:+"[${extras#,}]"}  # ".", ".[dev]", ".[dev,lab]"
"$PYTHON" -m pip install --quiet -e "$spec"
"$PYTHON" -c "import energy_lib, torch, torchvision; print(f'installed energy_lib {energy_lib.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}')"
echo "install.sh: installed $spec into $("$PYTHON" -c 'import sys; print(sys.prefix)'); scripts/python runs it"
