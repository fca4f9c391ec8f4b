"""No import cycles inside energy_lib: a cycle makes what a module can use depend on which module
happened to be imported first, and a lazy import inside a function only hides it until that
function runs. The graph is read from the source with `ast` (nothing is imported): every
`import`/`from ... import` anywhere in a module, at module level or inside a function, relative
or absolute, that names a module of the package."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import energy_lib

PACKAGE_DIR = Path(energy_lib.__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name
ROOT = Path(__file__).resolve().parents[1]


def module_files() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name `from <level dots><name>` means inside `module`."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]  # a module's relative imports start from its package
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `module` imports, anywhere in its source. Importing a.b.c
    also runs the package inits a.b and a, unless `module` lives inside them already."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import mod`
    own_packages = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    edges = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in known and name != module and name not in own_packages:
                edges.add(name)
    return edges


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: imports_of(module, path, set(files)) for module, path in files.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), each as a
    closed path a -> b -> ... -> a through that component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_closed_path(graph, set(c), c[0]) for c in components]


def _closed_path(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected component (BFS)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "energy_lib.energy.table" in graph["energy_lib.energy"]  # relative, in a package init
    assert "energy_lib.errors" in graph["energy_lib.training.device"]  # `from .errors import ...`
    assert "energy_lib.estimators.calibrate" in graph["energy_lib.estimators.predict"]  # lazy
    assert "energy_lib.energy" in graph["energy_lib.estimators.predict"]  # a package init runs too


def test_find_cycles_reports_a_closed_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# Every import a committed notebook (lab records, reports, the notebooks themselves) or the
# README makes resolves: no old module path is served by an alias any more.


def _committed_sources(root: Path) -> list[tuple[str, str]]:
    """(where, Python source) of every code cell of every committed notebook, and of every
    python code block of the README and of the documentation pages (docs/*.md)."""
    found = []
    for path in sorted([*root.glob("notebooks/*.ipynb"), *root.glob("runs/*/*.ipynb"),
                        *root.glob("report/*/*.ipynb")]):
        for index, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                found.append((f"{path.relative_to(root)} cell {index}", "".join(cell["source"])))
    for page in [root / "README.md", *sorted(root.glob("docs/*.md"))]:
        for index, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)):
            found.append((f"{page.relative_to(root)} python block {index}", block))
    return found


def _imports(source: str) -> list[tuple[str, list[str]]]:
    """(module, names imported from it) for every energy_lib import in `source`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics: not our imports
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names if alias.name.startswith("energy_lib")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("energy_lib"):
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def test_every_committed_import_resolves():
    checked, broken = 0, set()
    for where, source in _committed_sources(ROOT):  # the working tree: what is about to be committed
        for module_name, names in _imports(source):
            checked += 1
            try:
                module = importlib.import_module(module_name)
                for name in names:
                    if not hasattr(module, name):  # `from package import submodule`
                        importlib.import_module(f"{module_name}.{name}")
            except ImportError as error:
                broken.add(f"{where}: {error}")
    assert checked > 100  # the records, reports, notebooks and README were all read
    assert not broken, "\n".join(sorted(broken))


JUPYTER_LIBRARIES = {"papermill", "nbformat", "nbconvert"}  # each imports jsonschema
#: where the shortcut is left out on purpose: the Tracker writes its record in the user's own
#: process, whose jsonschema is theirs to configure
IN_THE_USERS_PROCESS = {("energy_lib.records", "write_tracked")}


def test_the_jupyter_libraries_are_imported_without_the_iri_grammars():
    """jupyter_imports.without_iri_grammars saves seconds per process only if it runs before
    the first import of papermill, nbformat or nbconvert: in energy_lib each such import sits in
    a function, after a call to it (one import in run_cell without it cost every runner and Dask
    worker ~2 s)."""
    missing = []
    for name, path in module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # at module level: imported by anything that imports the module
            if _imports_jupyter(node):
                missing.append(f"{name}:{node.lineno} (module level)")
        for function in ast.walk(tree):
            if (not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                    or (name, function.name) in IN_THE_USERS_PROCESS):
                continue
            calls = [n.lineno for n in ast.walk(function) if isinstance(n, ast.Call)
                     and getattr(n.func, "id", getattr(n.func, "attr", "")) == "without_iri_grammars"]
            for node in function.body:
                if _imports_jupyter(node) and not any(line < node.lineno for line in calls):
                    missing.append(f"{name}:{node.lineno}")
    assert not missing, f"papermill/nbformat/nbconvert imported before without_iri_grammars(): {missing}"


def _imports_jupyter(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] in JUPYTER_LIBRARIES for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and (node.module or "").split(".")[0] in JUPYTER_LIBRARIES
    return False
