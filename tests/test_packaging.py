"""The project's declarations agree with each other: environment.yml with pyproject.toml, the
version with CITATION.cff, the notebooks with their jupytext sources, and the run notebook's
parameters cell with RunConfig (and with the script that writes it)."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import energy_lib
from energy_lib import RunConfig

REPO = Path(__file__).resolve().parents[1]
ENVIRONMENT = REPO / "environment.yml"
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from the PyPI names
NOT_PACKAGES = {"python", "pip"}


def normalise(name: str) -> str:
    name = re.sub(r"[-_.]+", "-", name.strip().lower())
    return CONDA_TO_PIP.get(name, name)


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def pyproject_requirements() -> dict[str, Requirement]:
    requirements = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    return {normalise(r.name): r for r in requirements}


def dev_names() -> set[str]:
    extras = pyproject()["project"].get("optional-dependencies", {})
    return {normalise(Requirement(r).name) for group in extras.values() for r in group}


_CONDA_SPEC = re.compile(r"^\s*(?:[\w.-]+::)?([A-Za-z0-9][\w.-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def parse_environment(path: Path) -> dict[str, str]:
    """{normalised name: version spec text} of the conda list and its pip sub-list."""
    import yaml

    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict) and isinstance(document.get("dependencies"), list), \
        "environment.yml needs a `dependencies:` list"
    specs: dict[str, str] = {}

    def add(entry: str, pip: bool) -> None:
        entry = entry.split("#")[0].strip()
        if not entry or entry.startswith(("-", ".", "/", "git+", "http")):
            return  # pip options (-e ., -r, --index-url), local paths and URLs
        if pip:
            requirement = Requirement(entry)
            specs[normalise(requirement.name)] = str(requirement.specifier)
        else:
            match = _CONDA_SPEC.match(entry)
            assert match, f"environment.yml: cannot read conda spec {entry!r}"
            specs[normalise(match.group(1))] = match.group(2).strip()

    for item in document["dependencies"]:
        if isinstance(item, dict):
            assert set(item) == {"pip"}, f"environment.yml: unexpected entry {item!r}"
            for entry in item["pip"] or []:
                add(str(entry), pip=True)
        else:
            add(str(item), pip=False)
    return specs


def lowest_version(spec: str) -> Version | None:
    """The lowest version a spec allows, where it states one: >=, ==, ~=, >, conda's `=` or a
    bare version; upper bounds and exclusions say nothing about it."""
    lows = []
    for part in spec.replace(" ", ",").split(","):
        match = re.match(r"^(>=|==|~=|=|>)?v?(\d+(?:\.\d+)*)", part.strip())
        if match:
            lows.append(Version(match.group(2)))
    return max(lows) if lows else None


@pytest.fixture
def environment() -> dict[str, str]:
    if not ENVIRONMENT.is_file():
        pytest.skip("environment.yml is not at the repository root yet; "
                    "this check runs once it exists")
    return parse_environment(ENVIRONMENT)


def test_environment_lists_every_pyproject_dependency(environment):
    missing = sorted(set(pyproject_requirements()) - set(environment))
    assert not missing, f"environment.yml lacks pyproject.toml dependencies: {missing}"


def test_environment_has_nothing_pyproject_does_not_declare(environment):
    allowed = set(pyproject_requirements()) | dev_names() | NOT_PACKAGES
    extra = sorted(set(environment) - allowed)
    assert not extra, f"environment.yml has packages pyproject.toml does not declare: {extra}"


def installed_extras() -> list[str]:
    """The extras scripts/install.sh can install (its --dev and --lab flags), read from it."""
    found = re.findall(r'extras="\$extras,([\w-]+)"', (REPO / "scripts" / "install.sh").read_text())
    assert found, "scripts/install.sh no longer offers extras as flags (extras=\"$extras,NAME\")"
    return found


def dev_requirements() -> dict[str, Requirement]:
    """What `scripts/install.sh --dev --lab` installs: the dependencies and every extra it
    offers."""
    extras = pyproject()["project"]["optional-dependencies"]
    chosen = [Requirement(r) for extra in installed_extras() for r in extras[extra]]
    return {**{normalise(r.name): r for r in chosen}, **pyproject_requirements()}


def test_environment_yml_matches_pyproject(environment):
    """A conda user gets what `bash scripts/install.sh --dev --lab` gets: the same packages (names
    normalised, extras stripped, conda spellings mapped by CONDA_TO_PIP) with the same version
    specifiers."""
    wanted = dev_requirements()
    listed = {name: spec for name, spec in environment.items() if name not in NOT_PACKAGES}
    assert sorted(listed) == sorted(wanted), (
        f"environment.yml lacks {sorted(set(wanted) - set(listed))}, "
        f"has in excess {sorted(set(listed) - set(wanted))}")
    for name, requirement in wanted.items():
        assert listed[name] == str(requirement.specifier), (
            f"environment.yml: {name} {listed[name]!r}, pyproject.toml: {requirement}")


def test_environment_versions_respect_pyproject_minimums(environment):
    for name, requirement in pyproject_requirements().items():
        minimums = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        env_low = lowest_version(environment.get(name, ""))
        if minimums and env_low is not None:
            assert env_low >= max(minimums), (
                f"environment.yml allows {name} {environment[name]}, below pyproject's "
                f"{requirement.specifier}")


def test_environment_python_matches_requires_python(environment):
    requires = pyproject()["project"]["requires-python"]
    low = lowest_version(environment.get("python", ""))
    if low is None:
        pytest.skip("environment.yml does not state a python version")
    assert low >= lowest_version(requires), f"python {environment['python']} vs {requires}"


def test_environment_parser_reads_both_lists(tmp_path):
    """The comparison above is only as good as this parser."""
    path = tmp_path / "environment.yml"
    path.write_text("name: x\nchannels: [conda-forge]\ndependencies:\n"
                    "  - python=3.11\n  - pip\n  - conda-forge::PyTorch>=2.1\n"
                    "  - matplotlib >=3.8\n  - jupyterlab\n  - pip:\n"
                    "      - -e .\n      - papermill>=2.6\n      - tqdm[notebook]>=4.66\n")
    specs = parse_environment(path)
    assert set(specs) == {"python", "pip", "torch", "matplotlib", "jupyterlab", "papermill", "tqdm"}
    assert lowest_version(specs["python"]) == Version("3.11")
    assert lowest_version(specs["matplotlib"]) == Version("3.8")
    assert lowest_version(specs["tqdm"]) == Version("4.66")
    assert lowest_version(specs["jupyterlab"]) is None
    assert lowest_version(">=3.11,<3.13") == Version("3.11")
    assert lowest_version("<3") is None and lowest_version("!=2.0") is None


# ------------------------------------------------------------------------------------------
# notebooks
# ------------------------------------------------------------------------------------------

def parameters_cell(path: Path):
    notebook = nbformat.read(path, as_version=4)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    return tagged[0]


def literal_assignments(source: str) -> dict:
    values = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, ast.dump(node)
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_run_notebook_parameters_are_lab_s():
    """The parameters cell declares exactly energy_lib.lab.PARAMETERS, with their defaults; the
    empty config means RunConfig's defaults."""
    from energy_lib.lab import PARAMETERS

    values = literal_assignments(parameters_cell(REPO / "notebooks" / "run.ipynb").source)
    assert values == PARAMETERS and tuple(values) == tuple(PARAMETERS)
    assert RunConfig.from_dict(values["config"]) == RunConfig()


def test_analysis_notebook_has_its_parameters():
    values = literal_assignments(parameters_cell(REPO / "notebooks" / "analysis.ipynb").source)
    assert set(values) == {"study_file", "runs_dir", "report_dir", "overrides", "repeats",
                           "max_cells"}


def test_committed_notebooks_match_their_jupytext_sources():
    """notebooks/*.ipynb are built from notebooks/*.py by tools/make_notebooks.py; an edit made
    to one but not the other shows here."""
    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  REPO / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for source in module.SOURCES:
        committed = (REPO / "notebooks" / source.replace(".py", ".ipynb")).read_text()
        built = module.build(source)
        assert committed == nbformat.writes(built) + "\n", source
        # the source is what jupytext writes for the built notebook: the pair is in step
        assert (REPO / "notebooks" / source).read_text() == module.script(built), source
        assert nbformat.reads(committed, as_version=4).metadata.kernelspec.name == "python3"


def test_notebook_sources_are_plain_python():
    """The jupytext sources compile as they stand (magics would not)."""
    for path in sorted((REPO / "notebooks").glob("*.py")):
        compile(path.read_text(), str(path), "exec")


def test_notebooks_carry_no_outputs():
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        name = path.name
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, name


def test_jupytext_sync_keeps_the_committed_pairs_in_step(tmp_path, monkeypatch, capsys):
    """jupytext.toml pairs notebooks/*.ipynb with notebooks/*.py the standard way: on copies,
    `jupytext --sync` (whichever file is newer) and `jupytext --to ipynb --update` change
    nothing, and an executed lab record outside notebooks/ is not paired. jupytext's command
    line runs in this process (its `cli.jupytext(args)`, what `python -m jupytext` calls):
    four interpreters importing nbformat cost 2 s each."""
    cli = pytest.importorskip("jupytext.cli")
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "jupytext.toml", tmp_path / "jupytext.toml")
    (tmp_path / "notebooks").mkdir()
    names = sorted(p.name for p in (REPO / "notebooks").iterdir() if p.suffix in {".py", ".ipynb"})
    for name in names:
        shutil.copy(REPO / "notebooks" / name, tmp_path / "notebooks" / name)
    (tmp_path / "runs").mkdir()
    shutil.copy(REPO / "notebooks" / "run.ipynb", tmp_path / "runs" / "record.ipynb")
    original = {name: (REPO / "notebooks" / name).read_bytes() for name in names}
    notebooks = sorted(n for n in names if n.endswith(".ipynb"))
    assert notebooks and all(n.replace(".ipynb", ".py") in names for n in notebooks)

    def jupytext(*args: str) -> str:
        capsys.readouterr()
        assert cli.jupytext(list(args)) in (None, 0)
        said = capsys.readouterr()
        return said.out + said.err

    def newer(suffix: str) -> None:  # --sync reads the inputs from the newer file of a pair
        for name in names:
            path = tmp_path / "notebooks" / name
            stamp = 2_000_000_000 if path.suffix == suffix else 1_900_000_000
            os.utime(path, (stamp, stamp))

    for suffix in (".py", ".ipynb"):
        newer(suffix)
        said = jupytext("--sync", *(f"notebooks/{n}" for n in notebooks))
        assert "Updating" not in said and "not a paired notebook" not in said, said
    said = jupytext("--to", "ipynb", "--update", *(f"notebooks/{n.replace('.ipynb', '.py')}"
                                                    for n in notebooks))
    for name in names:
        assert (tmp_path / "notebooks" / name).read_bytes() == original[name], name

    said = jupytext("--sync", "runs/record.ipynb")
    assert "not a paired notebook" in said, said
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["record.ipynb"]


# ------------------------------------------------------------------------------------------
# version, licence, citation, changelog
# ------------------------------------------------------------------------------------------

def test_version_is_written_once():
    """energy_lib.__version__ is the one place: pyproject.toml reads it (setuptools, statically:
    a literal module-level assignment, so nothing is imported to build the package)."""
    project = pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "energy_lib.__version__"}
    tree = ast.parse((REPO / "energy_lib" / "__init__.py").read_text())
    literals = [node.value.value for node in tree.body
                if isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "__version__"
                and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)]
    assert literals == [energy_lib.__version__]
    Version(energy_lib.__version__)  # a valid PEP 440 version
    from setuptools.config.pyprojecttoml import read_configuration
    resolved = read_configuration(REPO / "pyproject.toml", expand=True)
    assert resolved["project"]["version"] == energy_lib.__version__


def test_citation_cff_is_valid_and_carries_the_version():
    import yaml

    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    for key in ("cff-version", "message", "title", "authors"):
        assert citation.get(key), f"CITATION.cff lacks {key}"
    assert isinstance(citation["authors"], list)
    for author in citation["authors"]:
        assert author.get("name") or author.get("family-names"), author
    assert str(citation["version"]) == energy_lib.__version__
    assert citation["license"] == pyproject()["project"]["license"]
    date.fromisoformat(str(citation["date-released"]))


def test_licence_and_changelog():
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License") and pyproject()["project"]["license"] == "MIT"
    assert "the energy-study contributors" in licence
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{energy_lib.__version__}] - " in changelog


def test_every_imported_package_is_declared_in_the_extra_that_needs_it():
    """deptry (the field's dependency checker) over energy_lib, benchmarks and tools: nothing
    imported undeclared or only transitively, nothing declared unused, no dev-only package in
    the package's own code ([tool.deptry] in pyproject.toml says what is exempt and why)."""
    pytest.importorskip("deptry")
    done = subprocess.run([sys.executable, "-m", "deptry", "."], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No dependency issues found" in done.stdout + done.stderr


def test_the_code_passes_ruff():
    """ruff over the code ([tool.ruff] in pyproject.toml: pyflakes and pycodestyle's errors):
    an unused import or an undefined name fails here, not in a user's run."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (the dev extra)")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "energy_lib",
                           "benchmarks", "tools", "tests"], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NO_COLOR": "1"})
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_package_says_it_is_typed():
    """PEP 561: the py.typed marker, shipped in the wheel, lets type checkers read the
    package's annotations."""
    assert (REPO / "energy_lib" / "py.typed").is_file()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in data["package-data"]["energy_lib"]
