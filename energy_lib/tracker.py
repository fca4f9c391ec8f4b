"""Measure any PyTorch training loop with the study's own meters, windows, idle baseline,
attribution, contention rule, early-epoch prediction and lab record:

    from energy_lib import Tracker
    with Tracker("my-run", out="runs/mine", epochs=10) as tracker:
        for epoch in range(10):
            with tracker.epoch():
                for x, y in tracker.steps(loader):   # or the loader itself
                    ...                               # the user's own step
            tracker.log(val_acc_pct=acc)
    print(tracker.summary)

Nothing here measures anything itself: `energy.metering.Metering` opens the same windows a
study cell opens (idle, run, train per epoch, epoch 1's steady part, eval), the summary is
`training.train.summarise` and `energy.derive.run_figures`, the prediction is
`estimators.predict.early_epochs_prediction`, and the record is written by `records`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from .energy.table import Phase
from .errors import BudgetExceeded, ConfigError, StudyError, TrackerError

#: RunConfig fields a Tracker takes as keywords (validated by RunConfig, with its messages):
#: where it runs, what meters it, the idle windows, carbon, the contention rule.
SETTINGS = ("device", "meters", "assumed_power_w", "cpu_tdp_w", "ram_power_w", "idle_s",
            "idle_after_s", "sample_period_s", "country", "pue", "carbon_intensity_g_per_kwh",
            "contention_threshold")
#: What `tracker.summary` shows first: the headline energy with its kind and scope, the whole
#: machine's beside it, time, the contention verdict, carbon, accuracy and where the record is.
SUMMARY_FIRST = ("status", "stop_reason", "energy_j", "energy_kind", "energy_scope",
                 "energy_methods", "machine_energy_j", "total_s", "epochs_completed", "contended",
                 "others_cpu_share", "emissions_kg", "best_val_acc_pct", "record")
#: Epoch-table columns the tracker fills itself; `log` may not set them.
OWN_COLUMNS = ("epoch", "train_s", "eval_s")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")  # orders runs started within a second


def _whole_positive(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Tracker {name}={value!r} is not allowed: a whole number >= 1, or None")
    return value


def _budget(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ConfigError(f"Tracker {name}={value!r} is not allowed: a number > 0, or None")
    return float(value)


def check_out_folder(out: str | os.PathLike) -> Path:
    """The folder a Tracker writes its record into: a folder (made if missing) that is not a
    study's lab-record folder (runs/<study>/, where only the runner writes) nor inside one."""
    from .files import check_writable, study_records_folder

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"Tracker out={str(out)!r} is a file; give a folder for the records")
    folder = study_records_folder(path)
    if folder is not None:
        raise ConfigError(f"Tracker out={str(out)!r} is inside {folder}, the lab records of "
                          "a study (only its runner writes there); give a folder of your own, "
                          "e.g. runs/mine")
    check_writable(path, "Tracker out")
    return path


class Tracker:
    """One measured training run of the user's own loop; its record lands in `out`.

    `epochs`: how many epochs the run will have; with it, the whole run is predicted after
    epoch 1 (one printed line), and `budget_wh` / `budget_s` stop the run there (BudgetExceeded,
    the record marked `stopped`) when the prediction exceeds them. Keywords in SETTINGS are the
    study's RunConfig fields of the same name (device, meters, idle_s, country, ...)."""

    def __init__(self, name: str, out: str | os.PathLike = "runs/tracked", *,
                 epochs: int | None = None, budget_wh: float | None = None,
                 budget_s: float | None = None, quiet: bool = False, **settings: Any) -> None:
        from .config import RunConfig
        from .files import check_file_name

        if not isinstance(name, str):
            raise ConfigError(f"Tracker name={name!r} is not allowed: a text, e.g. 'my-run'")
        try:
            self.name = check_file_name(name, "Tracker name")
        except StudyError as error:
            raise ConfigError(str(error)) from None
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"Tracker setting {unknown[0]!r} is not allowed; the settings are "
                              f"{', '.join(SETTINGS)}")
        self.epochs = _whole_positive(epochs, "epochs")
        self.budget_wh = _budget(budget_wh, "budget_wh")
        self.budget_s = _budget(budget_s, "budget_s")
        if (self.budget_wh or self.budget_s) and not (self.epochs and self.epochs > 1):
            raise ConfigError("Tracker budget_wh/budget_s need epochs >= 2: the budget is checked "
                              "against the whole run predicted after epoch 1")
        self.out = check_out_folder(out)
        self.config = RunConfig.from_dict({"study": self.out.name or "tracked", "cell": self.name,
                                           "epochs": self.epochs or 1, **settings})
        self.settings = {"name": self.name, "epochs": self.epochs, "budget_wh": self.budget_wh,
                         "budget_s": self.budget_s,
                         **{k: getattr(self.config, k) for k in SETTINGS}}
        self.quiet = quiet
        self.epoch_rows: list[dict] = []
        self.logged: dict[str, float] = {}  # numbers logged before the first epoch
        self.summary = None  # a pandas Series once the tracker closed
        self.record_path: Path | None = None
        self.prediction: dict | None = None  # the early-epochs row, after epoch 1
        self._state = "new"  # new -> open -> closed
        self._in_epoch = False
        self._stop_reason = ""

    # -- the run -------------------------------------------------------------------------------

    def __enter__(self) -> "Tracker":
        from .energy.metering import Metering
        from .estimators.predict import early_epochs_prediction
        from .estimators.extrapolate import steady_steps
        from .training.device import resolve_device

        if self._state != "new":
            raise TrackerError(f"Tracker {self.name!r} was already used; make a new one per run")
        # imported here, before any window opens: an import inside epoch 1 would be billed to it
        self._steady_steps, self._early_epochs_prediction = steady_steps, early_epochs_prediction
        self._started, self._clock = _now(), time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(self.config.device)
        self.metering = Metering.for_config(
            self.config, self.device,
            codecarbon_dir=self.out / f".{self.name}.{os.getpid()}.codecarbon")
        self.metering.__enter__()
        try:
            self.metering.measure_idle(self.config.idle_s)
            self._run_window = self.metering.window(Phase.RUN)
            self._run_window.__enter__()
        except BaseException:
            self.metering.__exit__(*sys.exc_info())
            raise
        self._state = "open"
        return self

    @contextlib.contextmanager
    def epoch(self) -> Iterator[int]:
        """One epoch's training, measured as one window (yields its number, from 1)."""
        self._check_open("epoch()")
        if self._in_epoch:
            raise TrackerError("tracker.epoch() inside tracker.epoch(): close the epoch before "
                               "opening the next")
        if len(self.epoch_rows) == 1 and self.epochs and self.epochs > 1:
            self._predict()  # epoch 1 and its evaluation are done: the whole run, predicted
        number = len(self.epoch_rows) + 1
        self._in_epoch, self._epoch_steps, self._steady = True, None, None
        try:
            with self.metering.window(Phase.TRAIN, number), contextlib.ExitStack() as steady:
                self._steady_stack = steady
                yield number
        finally:
            self._in_epoch = False
        self.epoch_rows.append({"epoch": number, "train_s": self.metering.last_duration_s,
                                "eval_s": 0.0, "val_acc_pct": math.nan, "val_loss": math.nan,
                                "train_loss": math.nan, "steps": self._epoch_steps})

    def steps(self, loader: Iterable) -> Iterator:
        """Yield `loader`'s batches, counting them: in epoch 1 the steps after the warm-up are a
        window of their own (phase `steady`), as in a study cell, so the prediction after epoch 1
        prices a typical step rather than the warm-up. Optional: without it the prediction is
        epoch 1 x epochs (said so in its basis)."""
        if not self._in_epoch:
            raise TrackerError("tracker.steps(loader) is used inside `with tracker.epoch():`")
        number = len(self.epoch_rows) + 1
        try:
            total = len(loader)  # type: ignore[arg-type]
        except TypeError:
            total = None
        steady = self._steady_steps(total) if number == 1 and total and self.epochs and \
            self.epochs > 1 else None
        self._steady, self._epoch_steps = steady, total
        count = 0
        for count, batch in enumerate(loader):
            if steady is not None and count == steady.start:
                self._steady_stack.enter_context(self.metering.window(Phase.STEADY, number))
            elif steady is not None and count == steady.stop:
                self._steady_stack.close()
            yield batch
        self._epoch_steps = count + 1 if total is None else total

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """The last epoch's evaluation, measured as its own window (after `epoch()` closed)."""
        self._check_open("evaluation()")
        if self._in_epoch or not self.epoch_rows:
            raise TrackerError("tracker.evaluation() comes after an epoch, outside "
                               "`with tracker.epoch():`")
        row = self.epoch_rows[-1]
        with self.metering.window(Phase.EVAL, row["epoch"]):
            yield
        row["eval_s"] += self.metering.last_duration_s

    def log(self, **numbers: float) -> None:
        """Numbers for the record: into the last epoch's row (e.g. `val_acc_pct`, `train_loss`:
        the summary's accuracy and loss read these names), or the run's before any epoch."""
        self._check_open("log()")
        for key, value in numbers.items():
            if key in OWN_COLUMNS:
                raise ConfigError(f"tracker.log({key}=...) is not allowed: the tracker records "
                                  f"{', '.join(OWN_COLUMNS)} itself")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                if not (hasattr(value, "item") and callable(value.item)):
                    raise ConfigError(f"tracker.log({key}={value!r}) is not allowed: a number")
                value = value.item()  # a tensor or numpy scalar
            (self.epoch_rows[-1] if self.epoch_rows else self.logged)[key] = float(value)

    def __exit__(self, kind, error, trace) -> bool:
        if self._state != "open":
            return False
        self._state = "closed"
        from .records import Status

        failure = None
        if error is None:
            status = Status.OK
        elif isinstance(error, BudgetExceeded):
            status = Status.STOPPED
        else:
            status = Status.FAILED
            failure = (type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        self._close_windows(status)
        self._write(status, failure)
        return False  # the loop's exception (a budget stop included) goes on to the caller

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._state != "open":
            raise TrackerError(f"tracker.{what} needs an open tracker: use it inside "
                               f"`with Tracker(...) as tracker:`" + (
                                   " (this one has closed)" if self._state == "closed" else ""))

    def _predict(self) -> None:
        row = self._early_epochs_prediction(self.epoch_rows, self.metering.rows, self.epochs,
                                            self._steady, self.epoch_rows[0]["steps"])
        self.metering.rows.append(row)
        self.prediction = row
        wh, seconds = row["energy_j"] / 3600, row["duration_s"]
        line = (f"tracker {self.name}: after epoch 1 of {self.epochs}, the whole run is predicted "
                f"at {wh:.3g} Wh and {seconds:.3g} s ({row['flag']})")
        if not self.quiet:
            print(line, flush=True)
        over = [f"{value:.3g} {unit} > budget_{unit.lower()} {budget:g}" for unit, value, budget in (
            ("Wh", wh, self.budget_wh), ("s", seconds, self.budget_s)) if budget and value > budget]
        if over:
            self._stop_reason = f"budget: predicted {', '.join(over)}"
            raise BudgetExceeded(f"tracker {self.name}: stopped after epoch 1: "
                                 f"{self._stop_reason}", wh, seconds)

    def _close_windows(self, status) -> None:
        """End the run window normally whatever happened (its rows cover the run as far as it
        went; the epoch that raised has no rows), measure the idle after a finished run, and
        stop the meters."""
        from .records import Status

        try:
            self._run_window.__exit__(None, None, None)
            if status == Status.OK:
                self.metering.measure_idle(self.config.idle_after_s, after=True)
        finally:
            self.metering.__exit__(None, None, None)

    def _write(self, status, failure) -> None:
        import pandas as pd

        from . import provenance
        from .energy import derive
        from .energy.metering import carbon_facts
        from .records import RECORD_FORMAT, Status, write_tracked
        from .training.train import summarise

        summary_status = Status.OK if status == Status.FAILED else status
        summary = summarise(self.epoch_rows, summary_status, self.metering.windows,
                            self.config.contention_threshold) | {
            "device_name": provenance.device_name(self.device),
            "assumed_power_w": self.config.assumed_power_w, "idle_s": self.config.idle_s,
            "epochs_planned": self.epochs, "stop_reason": self._stop_reason, **self.logged}
        carbon = carbon_facts(self.config)
        finished = _now()
        script = _script()
        values = {
            "format": RECORD_FORMAT, "config": self.settings, "epochs": self.epoch_rows,
            "energy": self.metering.rows, "meters": self.metering.info(),
            "timeline": {"samples": self.metering.timeline.rows(),
                         "marks": self.metering.timeline.mark_rows()},
            "carbon": carbon,
            "provenance": provenance.collect(self.device) | {
                "started": self._started, "finished": finished, "recorded_by": "energy_lib.Tracker",
                "script": str(script) if script else None},
            "windows": self.metering.windows, "summary": summary}
        facts = {"written_by": "energy_lib.Tracker", "script": str(script) if script else None,
                 "parameters": {"config": self.settings}, "start_time": self._started,
                 "end_time": finished, "duration": time.perf_counter() - self._clock,
                 "exception": status == Status.FAILED}
        self.record_path = write_tracked(self.out, self.name, values, facts, failure)
        figures = derive.run_figures(self.metering.rows, summary["best_val_acc_pct"], carbon)
        # the run's own status (a failed loop's summary record says how far it got, not "failed")
        every = {**summary, **figures, "status": str(status), "record": str(self.record_path)}
        first = [k for k in SUMMARY_FIRST if k in every]
        self.summary = pd.Series({k: every[k] for k in [*first, *(k for k in every if k not in first)]},
                                 name=self.name)


def _script() -> Path | None:
    """The script whose loop was measured; None in an interactive session (a Jupyter kernel's
    argv names its launcher, not the notebook)."""
    if "ipykernel" in sys.modules or not sys.argv or sys.argv[0] in ("", "-c", "-"):
        return None
    return Path(sys.argv[0]).resolve()


__all__ = ["Tracker", "check_out_folder", "SETTINGS"]
