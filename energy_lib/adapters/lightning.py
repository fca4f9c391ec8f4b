"""`EnergyCallback`: a Lightning `Trainer.fit` measured by an `energy_lib.Tracker`.

    from energy_lib.adapters.lightning import EnergyCallback
    callback = EnergyCallback("my-run", out="runs/mine")
    trainer = lightning.pytorch.Trainer(max_epochs=10, callbacks=[callback])
    trainer.fit(model, train_loader, val_loader)

Where the windows go, and why (the hook order of Lightning 2.x, checked on 2.6):

* The sanity check's validation runs before training: no window, and its metrics are not
  logged (they describe two batches of an untrained model).
* Validation at the end of an epoch runs *inside* the training epoch, after its last batch and
  before `on_train_epoch_end`. The epoch's window therefore closes at the end of its last batch
  (`trainer.num_training_batches`), so the validation that follows gets an evaluation window of
  its own, from `on_validation_start` to `on_validation_end` (the module's epoch-end reductions
  included), as in a study cell. Validation in the middle of an epoch (`val_check_interval`
  < 1) stays inside the epoch's window: windows never nest. With an epoch of unknown length the
  window closes at `on_train_epoch_end`, and its validation counts as training.
* `trainer.callback_metrics` (single numbers; names sanitised) go into the epoch's row at
  `on_train_epoch_end`, and again before the next epoch opens and at `on_fit_end`, which picks
  up what the module itself logged in `on_train_epoch_end` (called after the callbacks).
* The budget is checked when epoch 2 opens (`on_train_epoch_start`). Over budget, the record is
  written at once, marked `stopped`, and `trainer.should_stop` is set: Lightning then ends the
  fit before the epoch's first batch (unless `min_epochs` / `min_steps` ask for more; that
  training is not measured). `callback.stopped` holds the BudgetExceeded.
* An exception in `fit` reaches `on_exception`: the record is written, marked `failed`.
* Only the global rank 0 process measures (the Tracker meters the whole machine).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from ._run import TrackedCallback, TrackedRun, whole_epochs


class EnergyCallback(TrackedCallback, pl.Callback):
    """Measure `Trainer.fit` with a Tracker; its record lands in `out`.

    `epochs` defaults to the trainer's `max_epochs` (the whole run is predicted after epoch 1
    from it); the other keywords are the Tracker's (`budget_wh`, `budget_s`, `idle_s`, ...).
    After fit, `callback.tracker` is the Tracker (its `summary` and `record_path`)."""

    # -- fit -------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.is_global_zero:
            return
        epochs = self.epochs if self.epochs is not None else whole_epochs(trainer.max_epochs)
        self.run = TrackedRun(self.name, self.out, epochs, self.settings)

    def on_fit_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._active():
            self.run.end_epoch()
            self.run.log(trainer.callback_metrics)
            self.run.finish()

    def on_exception(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                     exception: BaseException) -> None:
        if self._active():
            self.run.finish(exception)

    # -- epochs ----------------------------------------------------------------------------------

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self._active():
            return
        self.run.end_evaluation()
        self.run.log(trainer.callback_metrics)  # the previous epoch's numbers, all logged now
        batches = trainer.num_training_batches
        if not self.run.begin_epoch(batches if isinstance(batches, int) else None):
            trainer.should_stop = True

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                             batch: Any, batch_idx: int) -> None:
        if self._active() and self.run.in_epoch:
            self.run.step()

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._active() and batch_idx + 1 >= trainer.num_training_batches:
            self.run.end_epoch()  # the last batch: the validation that follows is evaluation

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._active():
            self.run.end_evaluation()
            self.run.end_epoch()
            self.run.log(trainer.callback_metrics)

    # -- validation ------------------------------------------------------------------------------

    def on_validation_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._active() and not trainer.sanity_checking:
            self.run.begin_evaluation()  # nothing opens inside an epoch or before the first

    def on_validation_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self._active() and not trainer.sanity_checking:
            self.run.end_evaluation()


__all__ = ["EnergyCallback"]
