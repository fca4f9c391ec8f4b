"""One notebook executed with papermill into an in-progress copy, then renamed into place.

The copy lives in `runs/<study>/.running/<host>-<pid>/` (a folder unique to the runner), so a
killed run never leaves a notebook that reads as complete. Ctrl-C stops the kernel (its whole
process group) instead of interrupting the runner wherever it happens to be, and every kernel
is shut down after its notebook: papermill keeps kernels whose manager it was given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from ..errors import Terminated
from ..folders import RUNNING
from ..locks import runner_id
from ..bundled import shipped
from ..records import note_runner
from .folder import put_in_place

NOTEBOOKS_DIR = shipped("notebooks")  # the run and analysis notebooks this install carries
RUN_NOTEBOOK = NOTEBOOKS_DIR / "run.ipynb"
ANALYSIS_NOTEBOOK = NOTEBOOKS_DIR / "analysis.ipynb"


class _KernelWatch:
    """While a cell runs in the main thread, SIGINT (Ctrl-C) and SIGTERM (kill, timeout, SLURM)
    stop its kernel (the whole process group) instead of raising wherever the runner happens to
    be (inside ZMQ or an import lock, which prints tracebacks and may swallow it). The signal is
    then raised as a clean KeyboardInterrupt (or `Terminated`, for SIGTERM) by
    `execute_notebook`. A second signal interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.km = None
        self.interrupted: int | None = None  # the signal that stopped the kernel
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
            logging.getLogger("papermill").addFilter(self._quiet_after_interrupt)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            logging.getLogger("papermill").removeFilter(self._quiet_after_interrupt)

    def _quiet_after_interrupt(self, record) -> bool:
        """Drop papermill's 'Kernel died ...' once we stopped the kernel ourselves."""
        return self.interrupted is None

    def stop(self) -> KeyboardInterrupt:
        """The exception that says how the runner was asked to stop."""
        return Terminated() if self.interrupted == signal.SIGTERM else KeyboardInterrupt()

    def _on_signal(self, signum, frame) -> None:
        if self.interrupted is not None or self.km is None:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.interrupted = signum
        provisioner = getattr(self.km, "provisioner", None)
        pid = getattr(getattr(provisioner, "process", None), "pid", None)
        if pid is None:
            raise self.stop()
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # the kernel leads its own session
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def execute_notebook(source: Path, target: Path, parameters: dict, *, kernel_name: str | None,
                     log_stream=None, runner_record: dict | None = None) -> str:
    """Execute with papermill into an in-progress copy unique to this runner
    (`.running/<host>-<pid>/`), add `runner_record` (where it ran: `records.note_runner`), then
    rename into place. Returns "" or, when the runner's note could not be added (a full disk),
    why: the complete record is kept without it. Raises papermill's PapermillExecutionError
    (or the kernel's death, or the write's own OSError) after whatever papermill wrote is in
    place as the record; KeyboardInterrupt (SIGINT; `Terminated` for SIGTERM) leaves the
    in-progress copy where it is, to be superseded by the next run."""
    from ..jupyter_imports import without_iri_grammars

    without_iri_grammars()
    import nbformat
    import papermill as pm
    from jupyter_client.manager import AsyncKernelManager

    own = target.parent / RUNNING / runner_id()
    running = own / target.name
    own.mkdir(parents=True, exist_ok=True)
    kernel_name = kernel_name or nbformat.read(str(source), as_version=4).metadata.kernelspec.name
    watch = _KernelWatch()
    sockets = _socket_folder()
    watch.km = AsyncKernelManager(kernel_name=kernel_name, **_transport(sockets))
    try:
        with watch:
            pm.execute_notebook(str(source), str(running), parameters=parameters,
                                kernel_name=kernel_name, progress_bar=False,
                                stderr_file=log_stream, cwd=os.getcwd(), km=watch.km,
                                # the kernel app's own start-up notices (plain TCP on loopback,
                                # image alt text) are noise; the notebook's output and errors
                                # are kept
                                extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except Exception:  # a failed cell, a kernel that died, a failed write: the copy is the record
        if watch.interrupted is not None:
            raise watch.stop() from None
        if running.exists():
            _keep(running, target, runner_record)
        with contextlib.suppress(OSError):
            own.rmdir()
        raise  # the original error, never one of keeping the record
    finally:
        _stop_kernel(watch.km)
        if sockets:
            shutil.rmtree(sockets, ignore_errors=True)
    if watch.interrupted is not None:
        raise watch.stop()
    problem = _keep(running, target, runner_record)
    with contextlib.suppress(OSError):
        own.rmdir()  # this runner's own folder: no other runner writes there
    return problem


def _socket_folder() -> str | None:
    """A private folder for one kernel's sockets (POSIX), with a short path: a Unix socket's
    path holds at most ~100 bytes."""
    if os.name != "posix":
        return None
    return tempfile.mkdtemp(prefix="energy-kernel-")


def _transport(sockets: str | None) -> dict:
    """The kernel's channels as Unix sockets in `sockets` (ZeroMQ's ipc transport), not TCP
    ports on loopback. jupyter_client picks a TCP port by binding a free one and releasing it
    before the kernel binds it again, so on a machine where other kernels start at the same time
    (two runners, Dask workers, a test suite) two kernels can be handed the same port: a
    heartbeat fails with "Address already in use", or one kernel's control channel receives
    another's messages and logs `DELIM not in msg_list` tracebacks (papermill #511). A socket
    file in a folder of its own cannot be taken by anyone else. Where there are no Unix sockets
    (Windows), TCP as before."""
    if sockets is None:
        return {}
    return {"transport": "ipc", "connection_file": os.path.join(sockets, "kernel.json"),
            "ip": os.path.join(sockets, "k")}


def _keep(running: Path, target: Path, runner_record: dict | None) -> str:
    """Add the runner's note and rename the copy into place. A note that cannot be added (no
    space for the rewritten copy, a copy papermill left truncated) never costs the record:
    it is renamed into place without the note, and the reason is returned."""
    problem = ""
    if runner_record is not None:
        try:
            note_runner(running, runner_record)
        except Exception as error:  # OSError (disk full), or the copy is not a whole notebook
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            problem = f"the runner's note (where it ran) could not be added: {reason}"
    put_in_place(running, target)
    return problem


def _stop_kernel(km) -> None:
    """Shut the cell's kernel down. papermill leaves a kernel whose manager it was given (`km=`)
    running; without this every cell's kernel (torch loaded: ~1 GB) lived until the runner
    exited -- for a long-lived Dask worker, never."""
    from jupyter_core.utils import run_sync

    with contextlib.suppress(Exception):  # already dead (interrupted, crashed): nothing to stop
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
