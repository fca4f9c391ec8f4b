"""Scale-out: a study's cells on a Dask cluster, with the same lab records as a serial run.

Why Dask: `distributed` already has the scheduler, the workers and their failure handling,
`dask-cuda`'s LocalCUDACluster pins one worker per GPU (CUDA_VISIBLE_DEVICES), and
`dask-jobqueue` submits workers to SLURM/PBS/LSF. This module only maps cells onto tasks:

- Each cell is one task that calls `cell.run_cell` on a worker -- the function the serial
  executor calls -- so the lock, the in-progress copy, the rename and superseded/ are the same.
- Every task asks for the worker resource `device=1` and every worker we start offers exactly
  one, so a worker runs one cell at a time however many threads it has (energy figures must
  not share a device). Workers of an existing cluster must be started with
  `--resources device=1`; a cluster whose workers offer none is refused before anything runs.
- The runner and every worker see `runs/<study>/` at the same absolute path (a shared
  filesystem with file locks); a worker that cannot write there fails its cell with one line.
- A worker that dies mid-cell (killed, out of memory) fails that cell only: on the clusters we
  start the scheduler gives up on a task after one dead worker (`allowed-failures` 0) instead
  of killing up to three more workers with it; the dead runner's copy stays in `.running/`,
  so the cell reads `incomplete` and the next run reruns it. On an existing cluster its own
  `distributed.scheduler.allowed-failures` applies (default 3 retries on other workers).
- Where each cell ran is a record written by the runner (`executor`: worker, host, the device
  it was pinned to, how many cells could run at once on that host, `shared_cpu`), not a
  hidden environment variable: the analysis reads it and flags cells whose host CPU and RAM
  were shared.

Dask is optional (`pip install "energy-lib[dask]"`): nothing here imports it until used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from ..errors import EnergyStudyError, StudyError
from ..files import check_runs_folder
from .cell import CellRun, Outcome, StudyOutcome, run_cell, tally

INSTALL = 'pip install "energy-lib[dask]"'
RESOURCE = {"device": 1}
CONNECT_TIMEOUT_S = 10.0


def _distributed():
    try:
        import distributed
    except ImportError:
        raise StudyError(f"--executor dask needs Dask's distributed, which is not installed "
                         f"here: {INSTALL}") from None
    return distributed


def cuda_gpus() -> int:
    """CUDA GPUs visible to this process (0 without torch or CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver is "no GPU" here; the cells' own check says more
        return 0


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity set where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def local_cluster(workers: int, *, say=print, gpus: int | None = None):
    """A cluster on this machine: LocalCUDACluster, one worker per CUDA GPU (at most
    `workers`), where there are GPUs; else single-threaded process workers, at most one per
    usable core (said in one line when capped, before any worker starts)."""
    if workers < 1:
        raise StudyError(f"--workers {workers}: must be at least 1")
    distributed = _distributed()
    import dask

    gpus = cuda_gpus() if gpus is None else gpus
    # distributed's own log lines are silenced: each cell's outcome, a dead worker included, is
    # said once by the runner, in one line (Ctrl-C also stops the workers: no log storm then)
    # dashboard on a free port (":0"): distributed starts its HTTP server even without a
    # dashboard, on 8787 by default, and warns on stderr when another cluster holds that port
    options = dict(threads_per_worker=1, resources=RESOURCE, dashboard_address=":0",
                   silence_logs=logging.CRITICAL)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        if gpus:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                raise StudyError(f"{gpus} CUDA GPU(s) here, but dask-cuda (which pins one worker "
                                 "per GPU) is not installed: pip install dask-cuda; or use "
                                 "--executor serial") from None
            if workers > gpus:
                say(f"--workers {workers}: capped at {gpus}, one worker per CUDA GPU")
            return LocalCUDACluster(n_workers=min(workers, gpus), **options)
        cores = usable_cores()
        if workers > cores:
            say(f"--workers {workers}: capped at {cores}, the CPU cores this process may use")
        return distributed.LocalCluster(n_workers=min(workers, cores), processes=True, **options)


def connect(address: str, timeout: float | None = None):
    """A client of the scheduler at `address`, or one line saying why not within `timeout` s
    (default CONNECT_TIMEOUT_S)."""
    distributed = _distributed()
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        return distributed.Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StudyError(f"--scheduler {address}: no Dask scheduler reachable there within "
                         f"{timeout:g} s ({reason})") from None


@contextlib.contextmanager
def open_client(*, workers: int | None = None, scheduler: str | None = None,
                say=print) -> Iterator:
    """A Dask client: on a local cluster we start (and close after,
    which also stops cells still running there), or on the scheduler at `scheduler`."""
    if (workers is None) == (scheduler is None):
        raise StudyError("--executor dask needs either --workers N (a cluster on this machine) "
                         "or --scheduler ADDRESS (an existing cluster)")
    if scheduler is not None:
        client = connect(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = local_cluster(workers, say=say)
    try:
        client = _distributed().Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _host_of(address: str) -> str:
    return urlparse(address).hostname or address


def device_slots(client) -> dict[str, int]:
    """host -> how many cells can run at once there (the `device` resources of its workers)."""
    slots: dict[str, int] = {}
    for address, worker in client.scheduler_info(n_workers=-1).get("workers", {}).items():
        host = worker.get("host") or _host_of(address)
        slots[host] = slots.get(host, 0) + int((worker.get("resources") or {}).get("device", 0))
    return slots


def _cell_task(cell, folder: Path, force: bool, seen, kernel_name, notebook, slots: dict,
               scheduler: str, place: dict | None = None, core_sets: dict | None = None):
    """One cell on a worker (runs there): `cell.run_cell` with a note of where it ran. With
    `core_sets`, the worker first keeps to its own cores; the cell's kernel, started by it,
    inherits them (and OpenMP, hence torch, sizes its thread pool to them)."""
    from distributed import get_worker

    worker = get_worker()
    cores = (core_sets or {}).get(worker.address)
    if cores:
        os.sched_setaffinity(0, cores)
    host = _host_of(worker.address)
    at_once = slots.get(host)
    if at_once is None:  # a worker that joined after submission (an adaptive cluster)
        from distributed import get_client

        at_once = device_slots(get_client()).get(host, 1)
    runner = {"executor": "dask", "scheduler": scheduler, "worker": worker.address,
              "worker_name": str(worker.name), "host": socket.gethostname(),
              "pinned_device": os.environ.get("CUDA_VISIBLE_DEVICES"),
              "cells_at_once_on_host": at_once, "shared_cpu": at_once > 1,
              "cpu_cores": cores or None, **(place or {})}
    try:
        check_runs_folder(folder)
        done = run_cell(cell, folder, force=force, seen=seen, kernel_name=kernel_name,
                        runner=runner, notebook=notebook)
    except EnergyStudyError as error:  # e.g. the runs folder is not writable from this worker
        done = CellRun(cell.name, Outcome.FAILED, message=f"cell {cell.name} failed: {error}")
    if done.result == Outcome.ERROR:
        done.result = Outcome.FAILED
    done.worker = f"worker {worker.name}@{socket.gethostname()}"
    return done


def _outcome_of(future, cell: str):
    """The CellRun of a finished task; a dead worker or a task error becomes a failed cell."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as error:
        last = getattr(getattr(error, "last_worker", None), "address", "")
        return CellRun(cell, Outcome.FAILED, worker=str(last), message=(
            f"cell {cell} failed: its worker died while running it (killed, or out of memory); "
            "it reads incomplete and the next run reruns it"))
    except Exception as error:
        return CellRun(cell, Outcome.FAILED, message=f"cell {cell} failed on its worker: "
                                               f"{type(error).__name__}: {error}")


class DaskExecutor:
    """One cell per Dask worker at a time, on the cluster of `client` (`open_client`).
    `pin_cores`: the workers are this machine's CPU workers (a local cluster we started), so
    each gets a disjoint set of its cores: two cells never compete for one core."""

    def __init__(self, client, *, pin_cores: bool = False) -> None:
        self.client = client
        self.pin_cores = pin_cores

    def run(self, cells, folder: Path, outcome: StudyOutcome, *, force: frozenset[str], seen: dict,
            kernel_name: str | None = None, progress: bool = True, study_name: str = "",
            notebook: Path | None = None, places: dict | None = None) -> StudyOutcome:
        return run_cells(self.client, cells, folder, outcome, force=force, seen=seen,
                         kernel_name=kernel_name, progress=progress, study_name=study_name,
                         notebook=notebook, places=places,
                         core_sets=core_sets(self.client) if self.pin_cores else None)


def core_sets(client) -> dict[str, list[int]]:
    """worker address -> a disjoint, contiguous share of this process's usable cores, for the
    workers of a local CPU cluster (as many workers as cores at most: `local_cluster`)."""
    workers = sorted(client.scheduler_info(n_workers=-1).get("workers", {}))
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not workers or len(cores) < len(workers):
        return {}
    per_worker = len(cores) // len(workers)
    return {address: cores[i * per_worker:(i + 1) * per_worker]
            for i, address in enumerate(workers)}


def run_cells(client, cells, folder: Path, outcome: StudyOutcome, *, force: frozenset[str],
              seen: dict,
              kernel_name: str | None = None, progress: bool = True, study_name: str = "",
              notebook: Path | None = None, places: dict | None = None,
              core_sets: dict | None = None) -> StudyOutcome:
    """Submit one task per cell, collect them as they complete (one progress bar, with the
    worker each ran on), and add each to `outcome`. Ctrl-C cancels the cells not yet started."""
    import sys
    import uuid

    from distributed import as_completed
    from tqdm.auto import tqdm

    folder = Path(folder).resolve()  # the same path on every worker: a shared filesystem
    slots = device_slots(client)
    if slots and not any(slots.values()):
        raise StudyError(f"the workers of the Dask cluster at {client.scheduler.address} offer "
                         f"no 'device' resource, so no cell could start; start them with "
                         "--resources device=1 (dask-jobqueue: worker_extra_args=['--resources', "
                         "'device=1'])")
    if not cells:
        return outcome
    run_id = uuid.uuid4().hex[:8]
    notebook = Path(notebook).resolve() if notebook else None
    futures = {}
    for cell in cells:
        future = client.submit(_cell_task, cell, folder, cell.name in force, seen[cell.name],
                               kernel_name,
                               notebook, slots, client.scheduler.address,
                               (places or {}).get(cell.name), core_sets,
                               key=f"cell-{study_name}-{cell.name}-{run_id}",
                               resources=RESOURCE, pure=False, retries=0)
        futures[future.key] = (future, cell.name)
    bar = tqdm(total=len(cells), desc=f"study {study_name}", unit="cell",
               disable=not progress, file=sys.stderr)
    try:
        for future in as_completed([f for f, _ in futures.values()]):
            done = _outcome_of(future, futures[future.key][1])
            bar.set_postfix_str(f"{done.cell} on {done.worker}" if done.worker else done.cell,
                                refresh=False)
            bar.update(1)
            tally(outcome, done, bar.write)
    except KeyboardInterrupt:
        client.cancel([f for f, _ in futures.values() if not f.done()])
        raise
    finally:
        bar.close()
    return outcome
