"""A few timed training steps of one setting, before a study runs: what the plan
(study.plan, `energy-study run --plan`) predicts each cell's time and energy from.

The probe builds the cell's own data, model and precision (train.build), makes the cell's own
predictions (timed: every cell makes them before training), warms up, then meters a few
training steps and one evaluation batch with the cell's own meters (CodeCarbon left out: it
writes a log). Nothing is written: a probe is never part of any record.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..energy import derive
from ..energy.metering import Metering
from ..energy.table import Method, Phase
from ..estimators.predict import calibration_for, predict_run
from .train import build, evaluate, train_epoch

if TYPE_CHECKING:
    from ..config import RunConfig

#: Steps run before metering (first-call costs: allocation, kernel selection), steps metered,
#: evaluation batches metered. A few seconds per setting on a 2-core CPU at width 1.
WARMUP_STEPS, TIMED_STEPS, EVAL_BATCHES = 3, 8, 1


@dataclass(frozen=True)
class ProbeResult:
    """Per training step and per evaluation batch: seconds and headline joules, as the cell's
    meters read them (`energy_kind`, `energy_methods`, `energy_scope` say how)."""
    train_step_s: float
    eval_batch_s: float
    train_step_j: float
    eval_batch_j: float
    energy_kind: str
    energy_methods: str
    energy_scope: str
    steps: int
    setup_s: float  # building the data, model and predictions, as a cell does before training
    regression_j: float | None  # the layer regression's whole run, where a calibration matches


def probe(config: RunConfig, machine_states: dict | None = None) -> ProbeResult:
    """Meter `TIMED_STEPS` training steps and `EVAL_BATCHES` evaluation batches of `config`.
    `machine_states`: shared by the probes of one plan (estimators.predict.predict_run)."""
    started = time.perf_counter()
    setup = build(config)
    rows, _ = predict_run(setup.model, input_size=setup.input_size, batch_size=config.batch_size,
                          eval_batch_size=config.eval_batch_size or config.batch_size,
                          train_size=config.train_size, test_size=config.test_size,
                          epochs=config.epochs, compute_dtype=setup.compute_dtype,
                          device=setup.device, machine_states=machine_states)
    setup_s = time.perf_counter() - started
    regression_j = (next((r["energy_j"] for r in rows if r["method"] == Method.LAYER_REGRESSION),
                         None) if calibration_for(setup.device)[0] is not None else None)
    meters = ",".join(n for n in config.meter_names if n != "codecarbon") or "auto"
    steps = min(TIMED_STEPS, len(setup.train_loader))

    def train_steps(count: int) -> None:
        train_epoch(setup.step_model, itertools.islice(setup.train_loader, count), setup.optimizer,
                    setup.scaler, setup.train_autocast, setup.criterion, setup.device,
                    setup.memory_format)

    def eval_batches() -> None:
        evaluate(setup.step_model, itertools.islice(setup.eval_loader, EVAL_BATCHES),
                 setup.eval_autocast, setup.criterion, setup.device, setup.memory_format)

    train_steps(WARMUP_STEPS)
    eval_batches()
    with Metering.for_config(config.replace(meters=meters), setup.device) as metering:
        with metering.window(Phase.TRAIN, 1):
            train_steps(steps)
        with metering.window(Phase.EVAL, 1):
            eval_batches()
    per_phase = {}
    for phase in (Phase.TRAIN, Phase.EVAL):
        head = derive.headline_rows(metering.rows, phases=(phase,))
        per_phase[phase] = (float(head["duration_s"].iloc[0]), float(head["energy_j"].sum()))
    total = derive.per_run(metering.rows).iloc[0]
    batches = min(EVAL_BATCHES, len(setup.eval_loader))
    return ProbeResult(per_phase[Phase.TRAIN][0] / steps, per_phase[Phase.EVAL][0] / batches,
                       per_phase[Phase.TRAIN][1] / steps, per_phase[Phase.EVAL][1] / batches,
                       str(total["energy_kind"]), str(total["energy_methods"]),
                       str(total["energy_scope"]), steps, setup_s, regression_j)
