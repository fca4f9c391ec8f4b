"""Cross-process locks: one per study cell, one per report folder.

A cell runs at most once at a time, whichever process runs it (two `energy-study run` on one
study, a Dask worker later). `cell_lock(runs_dir, cell)` never waits: it holds the cell's lock
for the `with` block or raises `CellBusy` at once, so a runner can skip the cell and go on.

Why `filelock.FileLock` (flock) and not `SoftFileLock` (a file that exists while held): the
operating system releases an flock when its holder dies, however it dies (kill -9, out of
memory, power loss on a network filesystem once the server's lease runs out), so a killed runner
never leaves a lock that blocks the cell. A soft lock file outlives a killed holder and must
then be removed by hand or by a lifetime guess -- wrong for cells that train for hours. On NFS,
Linux maps flock onto the server's byte-range locks (NLM for v3, lease state for v4), so locks
hold across machines as long as the mount has locking (not `nolock` / `local_lock=all`; with
those, locks are local to one machine). The soft fallback filelock offers where flock is missing
is turned off: a filesystem without locks is an error that says so, not a silent stale-lock risk.
The lock files stay in place (empty) after release, as flock needs: deleting them would let two
processes lock two different files of one name.

Layout in a study folder: `.running/<cell>.lock` (the lock), `.running/<cell>.owner` (who holds
it, for messages only), and in-progress notebooks in `.running/<runner>/`, where `<runner>` is
`<host>-<pid>`: unique to the process, so two runners never share an in-progress file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .errors import StudyError
from .folders import RUNNING



def _host() -> str:
    host = socket.gethostname().split(".")[0] or "host"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in host)


def runner_id() -> str:
    """`<host>-<pid>` (plus `-t<thread>` outside the main thread, for thread-based workers):
    names this runner's in-progress files and says who holds a lock."""
    thread = "" if threading.current_thread() is threading.main_thread() else f"-t{threading.get_ident()}"
    return f"{_host()}-{os.getpid()}{thread}"


def is_dead_runner(name: str) -> bool:
    """Whether runner `name` (a runner_id) was a process of this host that has ended. A runner
    of another host is never called dead: we cannot tell."""
    host, _, pid = name.split("-t")[0].rpartition("-")
    if host != _host() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


class CellBusy(Exception):
    """The cell's lock is held by another process (or another lock object of this one)."""

    def __init__(self, cell: str, owner: str) -> None:
        super().__init__(f"cell {cell} is running elsewhere ({owner})")
        self.cell, self.owner = cell, owner


def _lock(path: Path, timeout: float) -> FileLock:
    # thread_local=False: a worker may acquire in one thread and release in another
    return FileLock(path, timeout=timeout, thread_local=False, fallback_to_soft=False)


def _acquire(lock: FileLock, what: str, timeout: float = 0) -> None:
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise
    except (OSError, NotImplementedError) as error:  # no flock here (some FUSE filesystems)
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise StudyError(f"cannot lock {what} in {lock.lock_file!s}: {reason}; energy-study needs "
                         "a filesystem with file locks (on NFS: mount without nolock)") from None


def _owner_text(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown process"
    except OSError:
        return "unknown process"


def _write_owner(path: Path) -> None:
    """Name this runner as the holder, for other runners' messages. Only a courtesy: where it
    cannot be written (a full disk), the lock is held all the same and others read "unknown
    process"."""
    tmp = path.with_name(f".{path.name}.{runner_id()}.tmp")
    try:
        tmp.write_text(runner_id() + "\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def cell_lock(runs_dir: str | Path, cell: str) -> Iterator[None]:
    """Hold `cell`'s lock in study folder `runs_dir` for the block, or raise CellBusy at once.
    The lock is the OS's: a holder that dies releases it."""
    folder = Path(runs_dir) / RUNNING
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder / f"{cell}.lock", timeout=0)
    owner = folder / f"{cell}.owner"
    try:
        _acquire(lock, f"cell {cell}")
    except Timeout:
        raise CellBusy(cell, _owner_text(owner)) from None
    with _holding(lock, owner):
        yield


@contextlib.contextmanager
def _holding(lock, owner: Path) -> Iterator[None]:
    """An acquired lock, held for the block with its owner file beside it; both let go after."""
    try:
        _write_owner(owner)
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()


def is_running(runs_dir: str | Path, cell: str) -> str | None:
    """Who holds `cell`'s lock right now (None if nobody). Only probes a lock file that exists,
    so it writes nothing; a racy answer by nature, for `list` and the report."""
    path = Path(runs_dir) / RUNNING / f"{cell}.lock"
    if not path.is_file():
        return None
    lock = _lock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return _owner_text(path.with_suffix(".owner"))
    except (OSError, NotImplementedError):  # read-only folder, no flock: cannot tell
        return None
    lock.release()
    return None


@contextlib.contextmanager
def report_lock(report_root: str | Path, study: str, timeout: float = 900.0,
                on_wait=None) -> Iterator[None]:
    """Hold the lock of `study`'s report (in `report_root/.running/`, outside the report folder,
    which is replaced as a whole), waiting up to `timeout` s for another runner's analysis
    (`on_wait(owner)` is called once if it has to wait). Raises StudyError when it times out."""
    folder = Path(report_root) / RUNNING
    folder.mkdir(parents=True, exist_ok=True)
    lock = _lock(folder / f"{study}.report.lock", timeout=0)
    owner = folder / f"{study}.report.owner"
    try:
        _acquire(lock, "the report")
    except Timeout:
        if on_wait is not None:
            on_wait(_owner_text(owner))
        try:
            _acquire(lock, "the report", timeout)
        except Timeout:
            raise StudyError(f"the report of {study} in {report_root} is still being written by "
                             f"{_owner_text(owner)} after {timeout:.0f} s; run "
                             "`energy-study report` later") from None
    with _holding(lock, owner):
        yield
