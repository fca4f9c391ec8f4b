"""Early-epoch extrapolation (method "early-epochs", as CarbonTracker does): predict a run's
total energy and time from its first measured epochs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError


#: Steps of epoch 1 left out of its steady window as warm-up: a tenth of the epoch, at least 10
#: (lazy initialisation and cuDNN autotuning of the full-size batch happen in the first few).
WARMUP_SHARE, MIN_WARMUP_STEPS = 0.1, 10


def steady_steps(epoch_steps: int) -> range | None:
    """The steps of epoch 1 its steady window covers: after the warm-up, before the last step
    (a last partial batch is a new shape: autotuned once, in epoch 1 alone). None when the
    epoch is too short to hold both. The study's loop and the Tracker open it at the same steps."""
    start = max(MIN_WARMUP_STEPS, math.ceil(WARMUP_SHARE * epoch_steps))
    stop = epoch_steps - 1
    return range(start, stop) if stop - start >= 2 else None


@dataclass(frozen=True)
class EpochPrediction:
    energy_j: float
    seconds: float
    measured_epochs: int
    total_epochs: int
    basis: str  # how the figure was made, in words
    method: str = "early-epochs"
    kind: str = "estimated"


@dataclass(frozen=True)
class SteadyPart:
    """Epoch 1 after its warm-up steps, measured as a window of its own (phase `steady`)."""

    energy_j: float  # the train steps after the warm-up
    seconds: float
    steps: int  # steps in the window
    epoch_steps: int  # steps in a whole epoch
    eval_energy_j: float  # epoch 1's evaluation (an epoch is train + eval)
    eval_seconds: float

    def epoch(self) -> tuple[float, float]:
        """(J, s) of a typical epoch: the steady steps scaled to a whole epoch, plus evaluation."""
        scale = self.epoch_steps / self.steps
        return (self.energy_j * scale + self.eval_energy_j, self.seconds * scale + self.eval_seconds)


def extrapolate_epochs(energy_j: Sequence[float], seconds: Sequence[float],
                       total_epochs: int, steady: SteadyPart | None = None) -> EpochPrediction:
    """Total energy (J) and time (s) of a run of `total_epochs` from its first k measured epochs.

    The first epoch carries warm-up (allocator growth, kernel selection, cold caches, lazy
    data loading), so it is not a typical epoch:
    - k >= 2: the first epoch is taken as measured, and the remaining total_epochs - 1 epochs
      are priced at the mean of epochs 2..k: total = e1 + mean(e2..ek) x (total_epochs - 1).
    - k == 1 with `steady` (epoch 1's steps after its warm-up, timed separately): epoch 1 as
      measured + the typical epoch that steady part implies x (total_epochs - 1).
    - k == 1 without it: nothing typical has been seen; total = e1 x total_epochs, an
      overestimate by the warm-up share (said so in `basis`). On a GPU, where cuDNN autotuning
      and lazy initialisation made epoch 1 four times a later one, that is the difference
      between a usable estimate and a useless one.
    Measured epochs beyond total_epochs are an error, as are negative or non-finite values.
    """
    energy, times = list(energy_j), list(seconds)
    k = len(energy)
    if k == 0 or len(times) != k:
        raise ConfigError(f"early-epoch extrapolation needs per-epoch energy and seconds of equal, "
                          f"non-zero length; got {len(energy)} and {len(times)}")
    if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < k:
        raise ConfigError(f"total_epochs={total_epochs!r} is not allowed; must be an integer >= "
                          f"the {k} measured epoch(s)")
    if not all(math.isfinite(v) and v >= 0 for v in energy + times):
        raise ConfigError("early-epoch extrapolation: per-epoch energy and seconds must be finite "
                          "and >= 0")
    steady_ok = (steady is not None and 0 < steady.steps <= steady.epoch_steps and all(
        math.isfinite(v) and v >= 0 for v in (steady.energy_j, steady.seconds,
                                               steady.eval_energy_j, steady.eval_seconds)))
    if k == 1 and steady_ok:
        rest = total_epochs - 1
        typical_j, typical_s = steady.epoch()
        return EpochPrediction(energy[0] + typical_j * rest, times[0] + typical_s * rest, 1,
                               total_epochs,
                               f"epoch 1 as measured + {rest} epochs priced at its last "
                               f"{steady.steps} of {steady.epoch_steps} steps (after the warm-up) "
                               "scaled to a whole epoch, plus its evaluation")
    if k == 1:
        return EpochPrediction(energy[0] * total_epochs, times[0] * total_epochs, 1, total_epochs,
                               "epoch 1 x total epochs (includes warm-up: an overestimate)")
    rest = total_epochs - 1
    typical_j, typical_s = sum(energy[1:]) / (k - 1), sum(times[1:]) / (k - 1)
    return EpochPrediction(energy[0] + typical_j * rest, times[0] + typical_s * rest, k,
                           total_epochs,
                           f"epoch 1 as measured + mean of epochs 2..{k} x {rest} epochs")
