"""What both adapters share: a Tracker driven from hook methods instead of `with` blocks.

A framework calls hooks, not blocks, so the windows are entered and left by hand; `TrackedRun`
keeps which one is open, so a hook that fires twice or out of the expected order closes nothing
twice and never nests an evaluation inside an epoch (the Tracker refuses that)."""

from __future__ import annotations

import math
import os
import re
from typing import Any, Iterator, Mapping

from ..errors import BudgetExceeded
from ..tracker import OWN_COLUMNS, Tracker


def numbers(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """The plain numbers among a framework's metrics, under names safe as table columns.

    Frameworks hand over floats, ints and 0-d tensors next to strings, lists and tensors with
    many values; only single numbers belong in an epoch row. Names such as `val/acc` become
    `val_acc`; the columns the Tracker fills itself (`epoch`, ...) are left to it."""
    found: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        name = re.sub(r"\W+", "_", str(key)).strip("_")
        if not name or name in OWN_COLUMNS or isinstance(value, bool):
            continue
        if not isinstance(value, (int, float)):
            size = getattr(value, "numel", None) or getattr(value, "size", None)
            size = size() if callable(size) else size
            if size != 1 or not callable(getattr(value, "item", None)):
                continue  # a string, a list, a tensor of many values
            value = value.item()
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
        found[name] = float(value)
    return found


class TrackedRun:
    """One Tracker and the window an adapter has open in it, moved along by hooks.

    Numbers logged while an epoch is open are held until it closes (the Tracker would put them
    in the previous epoch's row); numbers from before the first epoch (a sanity check, an
    evaluation before training) are not the run's and are dropped."""

    def __init__(self, name: str, out: str | os.PathLike, epochs: int | None,
                 settings: Mapping[str, Any]) -> None:
        self.tracker = Tracker(name, out=out, epochs=epochs, **settings)
        self.stopped: BudgetExceeded | None = None
        self._epoch = self._evaluation = None  # the open context managers
        self._steps: Iterator | None = None
        self._pending: dict[str, float] = {}
        self._active = False
        self.tracker.__enter__()
        self._active = True

    @property
    def active(self) -> bool:
        return self._active

    def begin_epoch(self, steps: int | float | None = None) -> bool:
        """Open the next epoch's window; False when the budget stopped the run here (the
        record is then written, marked stopped). `steps`, the batches the epoch will have,
        lets `step()` count them, which gives epoch 1 its steady window."""
        if not self._active:
            return False
        self.end_evaluation()
        self.end_epoch()
        epoch = self.tracker.epoch()
        try:
            epoch.__enter__()
        except BudgetExceeded as stop:
            self.stopped = stop
            self.finish(stop)
            return False
        self._epoch = epoch
        if isinstance(steps, int) and steps > 0:
            self._steps = self.tracker.steps(range(steps))
        return True

    def step(self) -> None:
        """One batch (or optimizer step) begins: counted, and in epoch 1 it may open or close
        the steady window."""
        if self._steps is not None:
            next(self._steps, None)

    def end_epoch(self) -> None:
        if self._epoch is None:
            return
        epoch, self._epoch, self._steps = self._epoch, None, None
        epoch.__exit__(None, None, None)
        pending, self._pending = self._pending, {}
        self.tracker.log(**pending)

    @property
    def in_epoch(self) -> bool:
        return self._epoch is not None

    def begin_evaluation(self) -> bool:
        """Open an evaluation window for the epoch that just closed; False (nothing opened)
        inside an epoch, before the first one, or once the run has ended."""
        if not self._active or self._epoch is not None or self._evaluation is not None \
                or not self.tracker.epoch_rows:
            return False
        evaluation = self.tracker.evaluation()
        evaluation.__enter__()
        self._evaluation = evaluation
        return True

    def end_evaluation(self) -> None:
        if self._evaluation is not None:
            evaluation, self._evaluation = self._evaluation, None
            evaluation.__exit__(None, None, None)

    def log(self, metrics: Mapping[str, Any] | None) -> None:
        found = numbers(metrics)
        if not self._active or not found:
            return
        if self._epoch is not None:
            self._pending.update(found)
        elif self.tracker.epoch_rows:
            self.tracker.log(**found)

    def finish(self, error: BaseException | None = None) -> None:
        """Close whatever is open and write the record: `ok` without an error, `stopped` for a
        BudgetExceeded, `failed` (with the error's first line) for anything else. The window an
        error interrupted leaves no rows, as with a `with` block."""
        if not self._active:
            return
        self._active = False
        info = (None, None, None) if error is None else (type(error), error, error.__traceback__)
        try:
            windows, self._evaluation, self._epoch = (self._evaluation, self._epoch), None, None
            for window in windows:
                if window is not None:
                    window.__exit__(*info)
            if error is None:
                pending, self._pending = self._pending, {}
                if pending and self.tracker.epoch_rows:
                    self.tracker.log(**pending)
        finally:
            self._steps = None
            self.tracker.__exit__(*info)


class TrackedCallback:
    """What both callbacks keep: the Tracker's arguments until training starts, then the run
    (`tracker`: its summary and record path afterwards; `stopped`: the BudgetExceeded, if the
    budget stopped it)."""

    def __init__(self, name: str, out: str | os.PathLike = "runs/tracked", *,
                 epochs: int | None = None, **tracker: Any) -> None:
        super().__init__()
        self.name, self.out, self.epochs, self.settings = name, out, epochs, tracker
        self.run: TrackedRun | None = None

    @property
    def tracker(self) -> Tracker | None:
        return self.run.tracker if self.run else None

    @property
    def stopped(self) -> BudgetExceeded | None:
        return self.run.stopped if self.run else None

    def _active(self) -> bool:
        return self.run is not None and self.run.active


def whole_epochs(value: Any) -> int | None:
    """A framework's planned epoch count as the Tracker takes it: a whole number >= 1, or None
    (unknown, unbounded: -1, 0, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 1:
        return None
    return math.ceil(value)
