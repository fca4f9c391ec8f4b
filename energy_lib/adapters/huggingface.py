"""`EnergyCallback`: a Hugging Face `Trainer.train` measured by an `energy_lib.Tracker`.

    from energy_lib.adapters.huggingface import EnergyCallback
    callback = EnergyCallback("my-run", out="runs/mine")
    trainer = transformers.Trainer(model, args, train_dataset=..., callbacks=[callback])
    with callback:          # optional: an exception in train() marks the record failed
        trainer.train()

Where the windows go, and why (the hook order of transformers' Trainer, checked on 5.25):

* An epoch's window runs from `on_epoch_begin` to `on_epoch_end`. The Trainer evaluates an
  `eval_strategy="epoch"` run *after* `on_epoch_end`, and has no hook where evaluation begins:
  when the epoch ends with `control.should_evaluate` set (the Trainer's flow callback, always
  first, sets it there), an evaluation window opens at once and closes at `on_evaluate`. So
  the epoch's logging step (an `.item()` of the loss) counts as evaluation; checkpoint saving,
  after `on_evaluate`, counts in neither. Evaluations inside an epoch (`eval_strategy="steps"`)
  stay inside the epoch's window: windows never nest.
* Numbers from `on_log` and `on_evaluate` (single numbers; names sanitised, `epoch` left to the
  Tracker) go into the epoch's row; those logged while the epoch runs are held until it ends.
  The Trainer's closing summary (`train_runtime`, the run's mean `train_loss`, ...) is not an
  epoch's figure and is left out; the record has its own.
* The budget is checked when epoch 2 begins. Over budget, the record is written at once, marked
  `stopped`, and `control.should_training_stop` is set; the Trainer looks at it only after a
  step, so one optimizer step of epoch 2 runs unmeasured; that epoch's evaluation is called
  off (it would spend the energy the budget was set to save), a checkpoint save is not.
  `callback.stopped` holds the BudgetExceeded.
* The Trainer has no hook for an exception: `with callback:` around `trainer.train()` writes
  the record, marked `failed`. Without it, the next `on_train_begin` writes the abandoned run's
  record as failed before starting anew.
* Only the main process (`state.is_world_process_zero`) measures.
"""

from __future__ import annotations

from typing import Any

import transformers

from ..errors import TrackerError
from ._run import TrackedCallback, TrackedRun, whole_epochs

#: keys of the Trainer's closing log: figures of the whole run, not of its last epoch
RUN_SUMMARY_KEY = "train_runtime"


class EnergyCallback(TrackedCallback, transformers.TrainerCallback):
    """Measure `Trainer.train` with a Tracker; its record lands in `out`.

    `epochs` defaults to the Trainer's planned epochs (`state.num_train_epochs`); the other
    keywords are the Tracker's (`budget_wh`, `budget_s`, `idle_s`, ...). After training,
    `callback.tracker` is the Tracker (its `summary` and `record_path`)."""

    def __enter__(self) -> "EnergyCallback":
        return self

    def __exit__(self, kind, error, trace) -> bool:
        if error is not None and self._active():
            self.run.finish(error)
        return False

    # -- training --------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self._active():  # the last train() raised outside `with callback:`
            self.run.finish(TrackerError("train() ended without on_train_end (an exception?)"))
        epochs = self.epochs if self.epochs is not None else whole_epochs(
            getattr(state, "num_train_epochs", 0) or args.num_train_epochs)
        self.run = TrackedRun(self.name, self.out, epochs, self.settings)

    def on_train_end(self, args, state, control, **kwargs):
        if self._active():
            self.run.finish()

    def on_epoch_begin(self, args, state, control, train_dataloader=None, **kwargs):
        if not self._active():
            return
        if not self.run.begin_epoch(_optimizer_steps(train_dataloader, args)):
            control.should_training_stop = True
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        if self._active() and self.run.in_epoch:
            self.run.step()

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._active():
            self.run.end_epoch()
            if control.should_evaluate:
                self.run.begin_evaluation()
        elif self.stopped is not None:
            control.should_evaluate = False  # the budget stopped the run: not worth an evaluation
        return control

    # -- numbers ---------------------------------------------------------------------------------

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self._active():
            self.run.end_evaluation()
            self.run.log(metrics)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._active() and not (logs and RUN_SUMMARY_KEY in logs):
            self.run.log(logs)


def _optimizer_steps(loader: Any, args: Any) -> int | None:
    """How often `on_step_begin` fires in one epoch: once per optimizer step, i.e. per
    `gradient_accumulation_steps` batches; None when the loader has no length."""
    try:
        batches = len(loader)
    except TypeError:
        return None
    accumulate = max(1, int(getattr(args, "gradient_accumulation_steps", 1) or 1))
    return -(-batches // accumulate)


__all__ = ["EnergyCallback"]
