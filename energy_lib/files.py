"""Writing files so that no reader ever sees half of one and no record is ever overwritten.

- `check_writable(folder)`: before any work, prove the folder can take files by creating (and
  removing) one in it, or in its nearest existing parent when it does not exist yet (nothing is
  created for a check that fails). A real write is the only honest test: permission bits say
  nothing to root, and read-only mounts or immutable folders stop root too.
- `atomic_write(path, write)`: write under a name unique to this process, rename into place;
  the temporary file is removed when anything fails.
- `move_no_replace(src, dst)`: rename that never replaces an existing file (a hard link that
  fails if `dst` exists, then the old name is removed).
- `create_new(path, write)`: as `atomic_write`, for a file that must not exist yet: an existing
  one is never replaced (FileExistsError, nothing changed, no temporary file left).
- `check_file_name(name, what)`: user text that becomes a file name must be one.
- `resolve_path(path, what)`: a path the user typed, absolute with its links followed; a link
  loop is one line, not pathlib's RuntimeError.
- `check_runs_folder(folder)`: the lab-record folder and the runner's own subfolders in it
  (`.running/`, `superseded/`) are folders that take files, before any cell.
"""

from __future__ import annotations

import errno
import os
import tempfile
import unicodedata
from pathlib import Path
from typing import Callable, Iterable

from .errors import StudyError, WriteError
from .folders import RUNNING, RUNS, STUDIES, SUPERSEDED
from .locks import runner_id

#: Longest file name (bytes) accepted for a study or cell: room for `.ipynb` and a superseded
#: time stamp within the usual 255-byte limit.
MAX_NAME_BYTES = 200


def resolve_path(path: str | Path, what: str) -> Path:
    """`path` (a user's words) made absolute, links followed. pathlib raises RuntimeError for a
    symbolic link loop (Python < 3.13) and OSError for a chain it cannot follow: one line."""
    try:
        return Path(path).expanduser().resolve()
    except RuntimeError:
        raise WriteError(f"{what} {path} is a symbolic link loop; give a real path") from None
    except OSError as error:
        raise WriteError(f"{what} {path} cannot be followed: {error.strerror or error}") from None


def check_runs_folder(folder: str | Path) -> None:
    """Raise WriteError unless `folder` (runs/<study>) can take records and the runner's own
    subfolders in it are folders: a regular file named `.running` or `superseded` (a sync
    tool's conflict copy, a user's note) would otherwise fail the first cell with a traceback."""
    folder = Path(folder)
    check_writable(folder, "runs")
    for name, holds in ((RUNNING, "locks and in-progress records"),
                        (SUPERSEDED, "replaced records")):
        inner = folder / name
        if (inner.exists() or inner.is_symlink()) and not inner.is_dir():
            raise WriteError(f"{inner} is not a folder (the runner keeps its {holds} there); "
                             "move that file away and run again")


def check_writable(folder: str | Path, what: str) -> None:
    """Raise WriteError (naming `folder`) unless files can be created in `folder`."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        kind = "is not a folder" if probe == folder else f"cannot be created: {probe} is not a folder"
        raise WriteError(f"{what} folder {folder} {kind}")
    try:
        handle, name = tempfile.mkstemp(dir=probe, prefix=".energy-study-write-check-")
        os.close(handle)
        os.unlink(name)
    except OSError as error:
        where = "" if probe == folder else f" (its parent {probe} cannot take new files)"
        raise WriteError(f"{what} folder {folder} is not writable{where}: "
                         f"{error.strerror or error}") from None


def lab_record_folder(path: str | Path) -> Path | None:
    """The project's lab-record folder `path` is, or is inside: a folder named runs/ beside a
    studies/ folder (folders.RUNS, folders.STUDIES). Only the runner writes there: files written
    on a user's word (init, calibrate, export, benchmarks) are refused inside it."""
    resolved = resolve_path(path, "path")
    for folder in (resolved, *resolved.parents):
        if folder.name == RUNS and (folder.parent / STUDIES).is_dir():
            return folder
    return None


def study_records_folder(path: str | Path) -> Path | None:
    """The study's lab-record folder (runs/<study>/) that `path` is or lies inside: a folder
    where a runner keeps its `.running/`, or runs/<study> beside studies/<study>.toml. Tracked
    runs are written, and reported, apart from a study's cells."""
    resolved = resolve_path(path, "path")
    for folder in (resolved, *resolved.parents):
        study_file = folder.parent.parent / STUDIES / f"{folder.name}.toml"
        if (folder / RUNNING).is_dir() or (folder.parent.name == RUNS and study_file.is_file()):
            return folder
    return None


def check_not_lab_records(path: str | Path, what: str) -> None:
    """One line, before anything is written, where `path` lies in a project's lab records."""
    records = lab_record_folder(path)
    if records is not None:
        raise WriteError(f"{what} {path} is inside {records}, where only the runner writes (the "
                         "lab records); give a path outside it")


def check_output_file(path: str | Path, what: str, *, ours: Callable[[Path], bool] | None = None,
                      overwrite: bool = False, never_inside: Iterable[str | Path] = ()) -> None:
    """A file we are about to write on a user's word. Never a folder, a FIFO, a device or a
    socket (replacing those would break them, as root even /dev/full); never inside
    `never_inside` (the lab records); an existing file only when `ours(path)` says this
    project wrote it, or with `overwrite`; and its folder must take files."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{what} {path} is a folder; give a file name, e.g. {path / 'out.csv'}")
    if path.exists() and not path.is_file():
        raise WriteError(f"{what} {path} is not a regular file (a FIFO, device or socket); "
                         "give the name of a file to write")
    resolved = resolve_path(path, what)
    check_not_lab_records(path, what)
    for root in never_inside:
        root = resolve_path(root, "folder")
        if resolved == root or root in resolved.parents:
            raise WriteError(f"{what} {path} is inside {root}, where only the runner writes (the "
                             "lab records); give a path outside it")
    if path.exists() and ours is not None and not overwrite and not ours(path):
        raise WriteError(f"{what} {path} exists and was not written by energy-study; give "
                         "another name, or --overwrite to replace it")
    check_writable(path.parent, f"{what}'s")


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` for a temporary name beside `path`, then rename it to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{runner_id()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


def move_no_replace(src: str | Path, dst: str | Path) -> None:
    """Rename `src` to `dst`; FileExistsError if `dst` exists (never replaced). Where hard
    links are not supported, falls back to a checked rename."""
    src, dst = Path(src), Path(dst)
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if dst.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(dst)) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def create_new(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` for a temporary name beside `path`, then move it to `path` unless
    something is there already (FileExistsError); the temporary file never outlives the call."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{runner_id()}.tmp")
    try:
        write(tmp)
        move_no_replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except OSError:  # moved into place, or never made
            pass
    return path


def check_file_name(name: str, what: str) -> str:
    """`name` unchanged if it can be a file name on its own; StudyError otherwise."""
    problem = ""
    if not name:
        problem = "it is empty"
    elif name in (".", ".."):
        problem = "it names a folder"
    elif name.startswith("."):
        problem = "it starts with '.' (a hidden file)"
    elif "/" in name or "\\" in name:
        problem = "it contains a path separator"
    elif any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        problem = "it contains a control character"
    elif name != name.strip():
        problem = "it starts or ends with white space"
    elif len(name.encode("utf-8")) > MAX_NAME_BYTES:
        problem = f"it is longer than {MAX_NAME_BYTES} bytes"
    if problem:
        raise StudyError(f"{what} {name!r} cannot be a file name: {problem}")
    return name
