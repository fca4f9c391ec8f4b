"""The project's declarations agree with each other: environment.yml with pyproject.toml, and
the run notebook's parameters cell with RunConfig (and with the script that writes it)."""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from energy_lib import RunConfig
from energy_lib.config import FIELD_NAMES

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


def test_run_notebook_defaults_are_runconfig_defaults():
    values = literal_assignments(parameters_cell(REPO / "notebooks" / "run.ipynb").source)
    defaults = RunConfig().to_dict()
    assert tuple(values) == FIELD_NAMES  # every field, in RunConfig's order
    assert values == defaults
    for name, value in values.items():  # 1 and 1.0 compare equal; their types must too
        assert type(value) is type(defaults[name]), name
    assert RunConfig.from_dict(values) == RunConfig()


def test_analysis_notebook_has_its_parameters():
    values = literal_assignments(parameters_cell(REPO / "notebooks" / "analysis.ipynb").source)
    assert set(values) == {"study_file", "runs_dir", "report_dir", "overrides", "repeats"}


def test_committed_notebooks_match_their_jupytext_sources():
    """notebooks/*.ipynb are built from notebooks/*.py by tools/make_notebooks.py; an edit made
    to one but not the other shows here."""
    spec = importlib.util.spec_from_file_location("make_notebooks",
                                                  REPO / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for source in module.SOURCES:
        committed = (REPO / "notebooks" / source.replace(".py", ".ipynb")).read_text()
        assert committed == nbformat.writes(module.build(source)) + "\n", source
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
