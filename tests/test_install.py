"""Installed the way users install it: a wheel that carries the notebooks and example studies,
`energy-study init` for a starter folder, and paths that mean the study's project root
wherever a shell or a notebook kernel started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from energy_lib.cli import main
from energy_lib.study import load_study
from energy_lib.study.spec import project_root, root_above
from conftest import needs_fashion_mnist

REPO = Path(__file__).resolve().parents[1]


def shipped_files(folder: str, pattern: str) -> set[str]:
    return {p.name for p in (REPO / folder).glob(pattern)}


def checkout_copy(target: Path) -> Path:
    """The checkout's files as a fresh clone has them (tracked, plus new files git does not
    ignore), without its build/ folder: setuptools builds in place and would ship whatever an
    older build left in build/lib, hiding a file the wheel no longer carries."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is not copied
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of this checkout, as `pip install .` or `pip install git+URL`
    builds it (without fetching the build backend again: the one installed here)."""
    out = tmp_path_factory.mktemp("wheel")
    source = checkout_copy(tmp_path_factory.mktemp("checkout"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(out), str(source)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [built] = out.glob("energy_lib-*.whl")
    return built


def test_every_package_is_listed_in_pyproject():
    """pyproject.toml lists its packages (two are mapped from top-level folders): a new
    subpackage must be added there, or a wheel would leave it out."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "energy_lib").rglob("__init__.py")}
    assert found <= listed, f"not in pyproject.toml's packages: {sorted(found - listed)}"
    assert listed - found == {"energy_lib.notebooks", "energy_lib.studies"}


def test_the_wheel_carries_the_notebooks_studies_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    inside = lambda folder: {n.rsplit("/", 1)[1] for n in names if n.startswith(f"energy_lib/{folder}/")}
    assert shipped_files("notebooks", "*.ipynb") <= inside("notebooks")
    assert shipped_files("studies", "*.toml") == inside("studies")
    assert {"getzner2023/LICENSE", "cpu_tdp.csv"} <= {n.split("energy_lib/data/", 1)[1]
                                                       for n in names if "energy_lib/data/" in n}
    assert not any(n.startswith(("runs/", "report/", "tests/", "energy_lib/runs")) for n in names)


def test_the_wheel_ships_modules_only_from_the_package_and_notebooks_as_ipynb(wheel):
    """Every file of the wheel: its Python modules are the package's own; notebooks/ and
    studies/ are data (the notebooks' jupytext twins, notebooks/*.py, are scripts, and
    colab.py clones and installs when imported: setup.py leaves them out)."""
    names = [n for n in zipfile.ZipFile(wheel).namelist() if not n.endswith("/")]
    data_only = ("energy_lib/notebooks/", "energy_lib/studies/")
    modules = [n for n in names if n.endswith((".py", ".pyc", ".so", ".pyd"))]
    assert modules and all(n.startswith("energy_lib/") for n in modules), modules
    assert not [n for n in modules if n.startswith(data_only)]
    dist_info = {n.split("/", 1)[0] for n in names if not n.startswith("energy_lib/")}
    assert len(dist_info) == 1 and dist_info.pop().endswith(".dist-info")  # nothing else at the top
    inside = lambda folder: {n.removeprefix(folder) for n in names if n.startswith(folder)}
    notebooks = {"run.ipynb", "analysis.ipynb", "colab.ipynb"}
    assert notebooks <= shipped_files("notebooks", "*.ipynb")
    assert inside("energy_lib/notebooks/") == shipped_files("notebooks", "*.ipynb")
    assert inside("energy_lib/studies/") == shipped_files("studies", "*.toml") != set()


def test_init_writes_a_starter_folder_and_never_replaces_a_file(tmp_path, capsys):
    folder = tmp_path / "my-study"
    assert main(["init", str(folder)]) == 0
    assert {p.name for p in (folder / "studies").iterdir()} == shipped_files("studies", "*.toml")
    assert {p.name for p in (folder / "notebooks").iterdir()} == {"run.ipynb", "analysis.ipynb"}
    assert (folder / "notebooks" / "run.ipynb").read_bytes() == (REPO / "notebooks" / "run.ipynb").read_bytes()
    mine = folder / "studies" / "quick.toml"
    mine.write_text("# my own edit\n")
    capsys.readouterr()
    assert main(["init", str(folder)]) == 0
    out = capsys.readouterr().out
    assert mine.read_text() == "# my own edit\n"
    assert f"kept {mine} (already there)" in out and "wrote" not in out
    assert not list(folder.rglob(".*.tmp"))


def test_init_into_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert main(["init", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "init folder" in err[0] and "is not a folder" in err[0]


def test_relative_paths_mean_the_study_s_project_root(tmp_path, monkeypatch):
    """runs/, report/ and data_dir mean the folder holding studies/, wherever the shell or the
    kernel started; a folder typed on the command line means the shell's folder."""
    (tmp_path / "studies").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "studies" / "s.toml").write_text('[fixed]\ndata_dir = "data"\n[axes]\nwidth = [1]\n')
    monkeypatch.chdir(tmp_path / "notebooks")
    study = load_study("studies/s.toml")  # found one folder up, as locate() finds it
    assert study.root == tmp_path == project_root(study.path) == root_above()
    assert study.runs_dir() == tmp_path / "runs" / "s"
    assert study.report_dir() == tmp_path / "report" / "s"
    assert study.cells[0].config.data_dir == str(tmp_path / "data")
    alone = tmp_path / "elsewhere" / "t.toml"  # not in a studies/ folder: its own folder
    alone.parent.mkdir()
    alone.write_text("[axes]\nwidth = [1]\n")
    assert load_study(alone).runs_dir() == alone.parent / "runs" / "t"
    assert main(["list", "studies/s.toml"]) == 0
    assert main(["list", "studies/s.toml", "--runs-dir", "here"]) == 0
    assert not (tmp_path / "notebooks" / "runs").exists()  # list creates nothing


TINY = """\
    [study]
    name = "tiny"
    [fixed]
    dataset = "fashion_mnist"
    epochs = 1
    train_subset = 256
    test_subset = 128
    batch_size = 64
    eval_batch_size = 128
    idle_s = 0
    idle_after_s = 0
    width = 0.5
    [axes]
    precision = ["fp32"]
"""


@pytest.mark.slow
@needs_fashion_mnist
def test_a_wheel_in_a_fresh_venv_runs_a_study_from_an_empty_folder(wheel, tmp_path):
    """`pip install` of the wheel (not editable) into a new venv; `energy-study init` and `run`
    in an empty folder; then the analysis notebook executed with its kernel started in
    notebooks/, as JupyterLab starts it. The venv sees the packages of the Python running the
    tests (a .pth line naming its site-packages: --system-site-packages would show the base
    interpreter's instead when the tests run in a venv, as on a Debian Python), so torch is not
    downloaded again; energy_lib is the wheel's (that folder's own .pth files, the editable
    install among them, are not read)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, study_cli = venv / "bin" / "python", venv / "bin" / "energy-study"
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    outer = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(inner) / "tests-outer-packages.pth").write_text("\n".join(outer) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, timeout=300)
    where = subprocess.run([str(python), "-c", "import energy_lib; print(energy_lib.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where
    # nbconvert's HTML templates are data files of the prefix it was installed in (this
    # machine's, not the venv's): a venv with its own nbconvert has them in its own prefix
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "JUPYTER_PATH": str(Path(sysconfig.get_paths()["data"]) / "share" / "jupyter")}
    folder = tmp_path / "empty"
    folder.mkdir()

    def run(*args, cwd=folder):
        done = subprocess.run([*map(str, args)], capture_output=True, text=True, cwd=cwd,
                              env=env, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return done.stdout

    run(study_cli, "init")
    (folder / "studies" / "tiny.toml").write_text(textwrap.dedent(TINY))
    out = run(study_cli, "run", "studies/tiny.toml", "--no-report", "--no-plan")
    assert "1 ran" in out
    record = json.loads((folder / "runs" / "tiny" / "precision-fp32.ipynb").read_text())
    assert record["metadata"]["papermill"]["input_path"].startswith(str(venv))  # the wheel's notebook
    run(python, "-m", "papermill", "analysis.ipynb", str(tmp_path / "analysis-run.ipynb"),
        "-p", "study_file", "studies/tiny.toml", "-p", "runs_dir", "runs/tiny",
        "-p", "report_dir", "report/tiny", "--no-progress-bar", cwd=folder / "notebooks")
    report = folder / "report" / "tiny"
    assert {"results.csv", "findings.md", "pareto.png"} <= {p.name for p in report.iterdir()}
    assert not (folder / "notebooks" / "runs").exists() and not (folder / "notebooks" / "report").exists()
    assert "precision-fp32" in (report / "results.csv").read_text()


def test_the_run_notebook_opened_in_notebooks_reads_the_project_s_data_folder(tmp_path, monkeypatch):
    """JupyterLab starts the run notebook's kernel in notebooks/: its default data_dir='data'
    means the project root's data/, not notebooks/data (an absolute one is kept as given)."""
    import energy_lib.lab as lab

    (tmp_path / "studies").mkdir()
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    monkeypatch.setattr(lab, "store", lambda name, value: None)  # no record being written here
    config = lab.config_from({"data_dir": "data", "dataset": "fashion_mnist"})
    assert config.data_dir == str(tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    assert lab.config_from({"data_dir": str(elsewhere)}).data_dir == str(elsewhere)


# scripts/install.sh asks before it touches the system. These tests run it with stand-ins for
# the only commands that would change this machine or reach the network: sudo and apt-get
# (which record their argv), and PYTHON, which records its `-m pip` / `-m venv` calls (a venv
# "made" has such a stand-in as its python) and runs everything else (`-c`) with a real
# interpreter, so the script's own checks and its final import check run for real.

INSTALL_SH = REPO / "scripts" / "install.sh"


def stand_in(path: Path, body: str) -> Path:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(0o755)
    return path


def python_stand_in(path: Path, real: str, log: Path, venv_python: Path | None = None) -> Path:
    make_venv = (f'[ "$2" = venv ] && mkdir -p "${{@: -1}}/bin" && cp {venv_python} "${{@: -1}}/bin/python"\n'
                 if venv_python else "")
    return stand_in(path, f'if [ "$1" = -m ]; then\n  printf "%s %s\\n" "$0" "$*" >> {log}\n'
                          f'  {make_venv}  exit 0\nfi\nexec {real} "$@"\n')


def base_python() -> str:
    """An interpreter outside any venv, as a user's system Python is (the tests may run in one)."""
    if sys.prefix == sys.base_prefix:
        return sys.executable
    return str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")


@pytest.fixture
def install_sh(tmp_path):
    """run(*flags, active=True, **env) -> (completed process, recorded calls). active: an
    active (conda) environment, where the script installs; else VENV=tmp/venv, which it makes."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    stand_in(bin_dir / "sudo", f'printf "sudo %s\\n" "$*" >> {log}\nexec "$@"\n')
    stand_in(bin_dir / "apt-get", f'printf "apt-get %s\\n" "$*" >> {log}\n')
    venv_python = python_stand_in(tmp_path / "venv-python", sys.executable, log)

    def run(*flags, active=True, **extra):
        env = {k: v for k, v in os.environ.items()
               if k not in {"VIRTUAL_ENV", "CONDA_PREFIX", "VENV", "TORCH_INDEX", "PYTHON"}}
        python = python_stand_in(bin_dir / "python", sys.executable if active else base_python(),
                                 log, venv_python)
        env.update(PATH=f"{bin_dir}:{env['PATH']}", PYTHON=str(python),
                   FASHION_MNIST_DIR=str(tmp_path / "no-fashion-mnist"), **extra)
        if active:
            env["CONDA_PREFIX"] = str(tmp_path / "env")
        else:
            env["VENV"] = str(tmp_path / "venv")
        done = subprocess.run(["bash", str(INSTALL_SH), *flags], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, env=env, timeout=120)
        calls = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return done, [c.replace(f"{tmp_path}/", "") for c in calls]

    return run


def test_install_sh_without_apt_and_without_a_terminal_runs_no_apt_command(install_sh):
    """No flag and no terminal to ask: no sudo, no apt-get, one line saying what was skipped
    and how to allow it. Where it makes the venv (VENV set, no active environment): without
    the system's packages, pip upgraded in that venv only, the package alone installed."""
    done, calls = install_sh(active=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls == ["bin/python -m venv venv",
                     "venv/bin/python -m pip install --quiet --upgrade pip",
                     "venv/bin/python -m pip install --quiet -e ."]
    skipped = [line for line in done.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 1 and "install dataset-fashion-mnist" in skipped[0]
    assert "rerun with --apt" in skipped[0] and "downloads" in skipped[0]
    assert "made a virtual environment in" in done.stdout


def test_install_sh_with_apt_installs_the_dataset_and_with_dev_the_dev_extra(install_sh):
    """--apt: apt-get runs (through sudo unless root; both stand-ins here). In an active
    environment pip is not upgraded: only the CPU-only torch (TORCH_INDEX) and `.[dev]`."""
    done, calls = install_sh("--apt", "--dev", TORCH_INDEX="https://download.pytorch.org/whl/cpu")
    assert done.returncode == 0, done.stdout + done.stderr
    wanted = ["apt-get update -qq", "apt-get install -y -qq dataset-fashion-mnist"]
    assert [c for c in calls if c.startswith("apt-get")] == wanted
    assert [c for c in calls if c.startswith("sudo")] == (
        [] if os.getuid() == 0 else [f"sudo {c}" for c in wanted])
    assert [c for c in calls if c.startswith("bin/python")] == [
        "bin/python -m pip install --quiet torch torchvision --index-url https://download.pytorch.org/whl/cpu",
        "bin/python -m pip install --quiet -e .[dev]"]
    assert "skipped" not in done.stderr


def test_install_sh_makes_a_venv_with_system_site_packages_only_when_asked(install_sh):
    done, calls = install_sh("--no-apt", "--system-site-packages", "--lab", active=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert calls == ["bin/python -m venv --system-site-packages venv",
                     "venv/bin/python -m pip install --quiet --upgrade pip",
                     "venv/bin/python -m pip install --quiet -e .[lab]"]
    assert "install dataset-fashion-mnist` (Fashion-MNIST offline" in done.stderr
    assert "--no-apt" in done.stderr  # the skip line says why


def test_install_sh_help_and_an_unknown_option():
    shown = subprocess.run(["bash", str(INSTALL_SH), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and shown.stdout.startswith("Usage: bash scripts/install.sh")
    assert all(flag in shown.stdout for flag in ("--apt", "--dev", "--lab", "--system-site-packages", "TORCH_INDEX"))
    wrong = subprocess.run(["bash", str(INSTALL_SH), "--frobnicate"], capture_output=True, text=True)
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.count("\n") == 1 and "--frobnicate" in wrong.stderr


def test_ci_runs_the_readme_s_test_command_and_both_commands_ask_for_apt_openly():
    """.ci/run is exactly the README's test command, and the README's two commands pass --apt,
    so a reader sees that they touch the system (the script asks otherwise)."""
    readme = (REPO / "README.md").read_text()
    commands = [line for line in readme.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
                if line.startswith("bash scripts/install.sh")]
    assert len(commands) == 2 and all(" --apt" in c for c in commands)
    [test_command] = [c for c in commands if c.endswith("pytest")]
    assert " --dev" in test_command
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [test_command]
