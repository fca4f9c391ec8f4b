"""A study file -> a validated grid of cells, before anything runs.

A study file (TOML) has three tables:

    [study]  name, description, repeats, compare, target_acc_pct  (name: the file's stem)
    [fixed]  RunConfig fields shared by every cell
    [axes]   RunConfig fields -> lists of values; the grid is their product

Every cell's config is validated here; a grid over the limit is refused from the axis lengths,
before any cell is built.
"""

from __future__ import annotations

import itertools
import math
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..bundled import is_shipped, shipped
from ..config import MAX_WHOLE_NUMBER, RunConfig
from ..errors import ConfigError, StudyError
from ..files import check_file_name
from ..folders import REPORT, RUNS, STUDIES

#: Largest grid `load_study` builds unless told otherwise (`max_cells=`, CLI `--max-cells`):
#: checked from the axis lengths, before any cell exists.
MAX_CELLS = 10_000
#: The most `max_cells` may be raised to: a million lab records is already beyond any one study.
MAX_CELLS_LIMIT = 1_000_000
#: Set by the runner for every cell; a study file that sets them would make cells identical.
RESERVED = ("study", "cell")

STUDIES_DIR = shipped("studies")  # the example studies this install carries


def default_study_file() -> Path:
    """The paper study where a CUDA GPU is visible, the quick study otherwise."""
    import torch

    return STUDIES_DIR / ("paper.toml" if torch.cuda.is_available() else "quick.toml")


def study_file_for(study: str) -> Path:
    """The study file a notebook's `study` parameter names: "auto" (`default_study_file`), a
    path ending in .toml, or the name of a shipped study."""
    if study == "auto":
        return default_study_file()
    if study.endswith(".toml"):
        return Path(study)
    return STUDIES_DIR / f"{study}.toml"


@dataclass(frozen=True)
class Cell:
    name: str
    config: RunConfig


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    description: str
    axes: dict[str, list]
    fixed: dict[str, Any]
    cells: tuple[Cell, ...]
    overrides: dict[str, Any] = field(default_factory=dict)  # --set values, for the analysis
    repeats: int = 1  # runs per setting, with seeds seed, seed+1, ... (a `seed` axis)
    compare: str | None = None  # a two-valued axis compared pairwise by seed (e.g. precision)
    target_acc_pct: float | None = None  # None: the lowest best accuracy across cells
    order: str = "interleaved"  # the order `cells` run in (ORDERS)
    include_contended: bool = False  # whether verdicts and comparisons use contended cells
    root: Path = field(default_factory=Path.cwd)  # what its relative paths mean (project_root)
    include_across_invocations: bool = False  # whether verdicts use records of several runner
    #                                           invocations (report.findings.one_invocation)

    @property
    def compared_axis(self) -> str | None:
        """The axis whose two values are compared pairwise: `compare`, else `precision` where it
        has exactly two values, else None."""
        if self.compare:
            return self.compare
        return "precision" if len(self.axes.get("precision", [])) == 2 else None

    def block_of(self, names) -> list[str]:
        """The cells named and every other arm of their comparisons (cells equal to one of them
        on every axis but the compared one), in running order: what `--rerun-block` runs."""
        axis = self.compared_axis
        chosen = [c for c in self.cells if c.name in set(names)]
        others = [a for a in self.axes if a != axis]
        keys = {tuple(getattr(c.config, a) for a in others) for c in chosen}
        return [c.name for c in self.cells if c.name in set(names) or
                (axis is not None and tuple(getattr(c.config, a) for a in others) in keys)]

    @property
    def setting_axes(self) -> list[str]:
        """The axes that define a setting: all but `seed` -- runs that differ only in their seed
        (from `repeats`, or a `seed` axis written out) are repeats of one setting."""
        return [a for a in self.axes if a != "seed"]

    def runs_dir(self, runs_root: str | Path = RUNS) -> Path:
        """Where its lab records go; a relative `runs_root` means the study's project root."""
        return self.root / Path(runs_root).expanduser() / self.name

    def report_dir(self, report_root: str | Path = REPORT) -> Path:
        """Where its report goes; a relative `report_root` means the study's project root."""
        return self.root / Path(report_root).expanduser() / self.name


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).replace("/", "-").replace(" ", "")


def cell_name(point: dict[str, Any]) -> str:
    """`width-1_precision-fp32`: axis-value pairs in the study file's axis order."""
    return "_".join(f"{axis}-{_format_value(value)}" for axis, value in point.items()) or "single"


def locate(path: str | Path, start: str | Path | None = None) -> tuple[Path, Path]:
    """(where `path` is, the folder it was found from). A relative path is tried from `start`
    (the working directory) and then from each folder above it: JupyterLab starts a kernel in
    notebooks/, where 'studies/quick.toml' is one level up. The folder it was found from is the
    project root that the notebook's other relative paths (runs/, report/) mean. Not found
    anywhere: the path from `start`, so the error names what was asked for."""
    path = Path(path)
    start = Path(start or Path.cwd()).resolve()
    if path.is_absolute():
        return path, start
    for folder in (start, *start.parents):
        if (folder / path).exists():
            return folder / path, folder
    return start / path, start


def project_root(study_file: Path) -> Path:
    """The folder a study's relative paths (runs/, report/, data_dir) mean, whatever folder a
    notebook's kernel or a shell started in: the one holding the nearest studies/ folder the
    file lies in *as given* (studies/sub/x.toml too; a study file that is a symbolic link into
    another project still means this one: its links are not followed), else the file's own
    folder. For an example study shipped inside the installed package, the working folder
    (records never go into site-packages)."""
    given = Path(os.path.abspath(Path(study_file).expanduser()))
    if is_shipped(given.resolve()):
        return Path.cwd()
    for folder in given.parents:
        if folder.name == STUDIES:
            return folder.parent
    return given.parent


def root_above(start: str | Path | None = None) -> Path:
    """The project root for a notebook with no study file (the run notebook opened by hand):
    the nearest folder at or above `start` (the working folder) holding a studies/ folder,
    else `start` itself."""
    found, root = locate(STUDIES, start)
    return root if found.is_dir() else Path(start or Path.cwd()).resolve()


def load_study(path: str | Path, *, max_cells: int | None = None, repeats: int | None = None,
               **overrides: Any) -> Study:
    """Parse and validate a study file; `overrides` replace [fixed] values (e.g. epochs=1).
    A relative path is found from the working folder or a folder above it (`locate`); a
    relative data_dir is made absolute against the study's project root. A grid of more than
    `max_cells` cells (None: MAX_CELLS) is refused before any cell is built."""
    max_cells = MAX_CELLS if max_cells is None else max_cells
    found, _ = locate(path)
    path = found if found.exists() else Path(path)
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or \
            not 1 <= max_cells <= MAX_CELLS_LIMIT:
        raise StudyError(f"--max-cells {str(max_cells)[:40]}: use a whole number from 1 to "
                         f"{MAX_CELLS_LIMIT:,}")
    document = _read_toml(path)
    unknown = sorted(set(document) - {"study", "fixed", "axes"})
    if unknown:
        raise StudyError(f"{path}: unknown table(s) {', '.join(map(repr, unknown))}; "
                         "allowed: [study], [fixed], [axes]")
    meta, fixed, axes = (document.get(k, {}) for k in ("study", "fixed", "axes"))
    for table, value in (("study", meta), ("fixed", fixed), ("axes", axes)):
        if not isinstance(value, dict):
            raise StudyError(f"{path}: {table} must be a table ([{table}]), got {value!r}")
    extra = sorted(set(meta) - set(STUDY_KEYS))
    if extra:
        raise StudyError(f"{path}: unknown key(s) in [study]: {', '.join(extra)}; allowed: "
                         f"{', '.join(STUDY_KEYS)}")
    if repeats is not None:
        meta = {**meta, "repeats": repeats}
    repeats, compare, target = _analysis_settings(path, meta, axes)
    for axis, values in axes.items():
        if not isinstance(values, list) or not values:
            raise StudyError(f"{path}: axis {axis!r} must be a non-empty list, got {values!r}")
    # the grid's size from the numbers alone, repeats included, before anything is built
    size = math.prod(len(values) for values in axes.values()) * repeats
    if size > max_cells:
        lengths = " x ".join([*(f"{len(v)} {a}" for a, v in axes.items()),
                              *([f"{repeats:,} repeats"] if repeats > 1 else [])])
        raise StudyError(f"{path}: the grid has {size:,} cells ({lengths}), more than the limit "
                         f"of {max_cells:,}; use fewer axis values or repeats, or raise the "
                         "limit with --max-cells N")
    if repeats > 1:
        if "seed" in axes:
            raise StudyError(f"{path}: 'seed' is an axis and repeats = {repeats}; use one of "
                             "them (repeats adds the seeds seed, seed+1, ... itself)")
        first = overrides.get("seed", fixed.get("seed", RunConfig().seed))
        if not isinstance(first, int) or isinstance(first, bool):
            raise ConfigError(f"{path}: seed={first!r} is not allowed; expected a whole number")
        if not 0 <= first <= MAX_WHOLE_NUMBER - (repeats - 1):
            raise ConfigError(f"{path}: seed={first} with repeats = {repeats} is not allowed: the "
                              f"seeds {first}..{first + repeats - 1} must lie in 0..2**63 - 1")
        fixed = {k: v for k, v in fixed.items() if k != "seed"}
        overrides = {k: v for k, v in overrides.items() if k != "seed"}
        axes = {**axes, "seed": [first + k for k in range(repeats)]}
    name = meta.get("name", path.stem)
    if not isinstance(name, str):
        raise StudyError(f"{path}: study name {name!r} must be text")
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise StudyError(f"{path}: study name {name!r} must be a plain folder name")
    try:
        check_file_name(name, "study name")
    except StudyError as error:
        raise StudyError(f"{path}: {error}") from None
    for place, keys in (("[axes]", axes), ("[fixed]", fixed), ("--set", overrides)):
        reserved = [k for k in RESERVED if k in keys]
        if reserved:
            raise StudyError(f"{path}: {reserved[0]!r} cannot be set in {place}: the runner sets "
                             "'study' (the study's name) and 'cell' (each cell's name) itself")
    for axis in axes:
        if axis in fixed:
            raise StudyError(f"{path}: {axis!r} is both an axis and a fixed setting; keep one")
    for key in overrides:
        if key in axes:
            raise StudyError(f"{path}: {key!r} is an axis of this study; it cannot be set for all cells")
    all_fixed = {**fixed, **overrides}
    root = project_root(path)
    cells = []
    for values in itertools.product(*axes.values()):
        point = dict(zip(axes, values))
        name_of_cell = cell_name(point)
        try:
            check_file_name(name_of_cell, "cell name")
        except StudyError as error:
            raise StudyError(f"{path}: {error}") from None
        try:
            config = RunConfig.from_dict({**all_fixed, **point, "study": name, "cell": name_of_cell})
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
        data_dir = root / Path(config.data_dir).expanduser()  # the same data on every worker
        cells.append(Cell(name_of_cell, replace(config, data_dir=str(data_dir))))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise StudyError(f"{path}: two cells share a name; make the axis values distinct")
    order, include_contended, include_across = _run_settings(path, meta)
    return Study(name, path, str(meta.get("description", "")), axes, all_fixed,
                 in_order(cells, order, axes.get("seed", [])), dict(overrides), repeats, compare,
                 target, order, include_contended, root, include_across)


STUDY_KEYS = ("name", "description", "repeats", "compare", "target_acc_pct", "order",
              "include_contended", "include_across_invocations")
#: How the cells of a study are ordered for running. Slow drift on a machine (thermal state,
#: a neighbour's job, turbo) must not line up with an axis: `interleaved` (the default) runs
#: every setting of the first seed, then of the second, ...; `random` a shuffle seeded by the
#: study's first seed; `grid` the axes' product as written (setting after setting).
ORDERS = ("interleaved", "random", "grid")


def in_order(cells: list[Cell], order: str, seeds: list) -> tuple[Cell, ...]:
    """The cells in the study's running order (see ORDERS); grid order is how they are built."""
    if order == "grid" or not seeds:
        ordered = list(cells) if order != "random" else _shuffled(cells, 0)
    elif order == "interleaved":
        rank = {seed: index for index, seed in enumerate(seeds)}
        ordered = sorted(cells, key=lambda cell: rank[cell.config.seed])  # stable: settings keep their order
    else:
        ordered = _shuffled(cells, seeds[0])
    return tuple(ordered)


def _shuffled(cells: list[Cell], seed: int) -> list[Cell]:
    import random

    shuffled = list(cells)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def _run_settings(path: Path, meta: dict) -> tuple[str, bool, bool]:
    """`order`, `include_contended` and `include_across_invocations` of [study], each checked
    in one line."""
    order = meta.get("order", "interleaved")
    if order not in ORDERS:
        raise StudyError(f"{path}: order={str(order)[:40]!r} is not allowed; choose one of "
                         f"{', '.join(ORDERS)}")
    flags = []
    for key in ("include_contended", "include_across_invocations"):
        value = meta.get(key, False)
        if not isinstance(value, bool):
            raise StudyError(f"{path}: {key}={str(value)[:40]!r} is not allowed; use true or "
                             "false")
        flags.append(value)
    return order, *flags


def _read_toml(path: Path) -> dict:
    """The study file's tables; one line for a path that is missing, not a regular file (a
    folder, a FIFO: never opened, so never blocks), not UTF-8, or not TOML."""
    if path.is_symlink() and not path.exists():
        raise StudyError(f"study file {str(path)!r} is a symbolic link to nothing (a loop, or "
                         "its target was moved); give the study file itself")
    if not path.exists():
        here = Path("studies")
        found = sorted(p.name for p in here.glob("*.toml")) if here.is_dir() else []
        hint = f"; studies here: {', '.join(found)}" if found else ""
        raise StudyError(f"study file {str(path)!r} does not exist{hint}")
    if path.is_dir():
        raise StudyError(f"study file {str(path)!r} is a folder; give a .toml file")
    if not path.is_file():
        raise StudyError(f"study file {str(path)!r} is not a regular file (a FIFO, socket or "
                         "device); give a .toml file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise StudyError(f"study file {str(path)!r} is not UTF-8 text (byte "
                         f"0x{error.object[error.start]:02x} at offset {error.start}); TOML files "
                         "are UTF-8") from None
    except OSError as error:
        raise StudyError(f"study file {str(path)!r} cannot be read: "
                         f"{error.strerror or error}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudyError(f"{path} is not valid TOML: {error}") from None


def _analysis_settings(path: Path, meta: dict, axes: dict) -> tuple[int, str | None, float | None]:
    """`repeats`, `compare` and `target_acc_pct` of [study], each checked in one line."""
    repeats = meta.get("repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise StudyError(f"{path}: repeats={str(repeats)[:40]} is not allowed; use a whole "
                         "number >= 1")
    compare = meta.get("compare")
    if compare is not None:
        two_valued = [a for a, v in axes.items() if isinstance(v, list) and len(v) == 2]
        if compare not in axes or len(axes[compare]) != 2:
            raise StudyError(f"{path}: compare={compare!r} is not allowed; it must name an axis "
                             f"with exactly two values (here: {', '.join(two_valued) or 'none'})")
    target = meta.get("target_acc_pct")
    if target is not None:
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 100:
            raise StudyError(f"{path}: target_acc_pct={target!r} is not allowed; use a "
                             "percentage in (0, 100]")
        target = float(target)
    return repeats, compare, target
