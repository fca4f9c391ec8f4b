"""Early-epoch extrapolation (method "early-epochs", as CarbonTracker does): predict a run's
total energy and time from its first measured epochs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import ConfigError


@dataclass(frozen=True)
class EpochPrediction:
    energy_j: float
    seconds: float
    measured_epochs: int
    total_epochs: int
    basis: str  # how the figure was made, in words
    method: str = "early-epochs"
    kind: str = "estimated"


def extrapolate_epochs(energy_j: Sequence[float], seconds: Sequence[float],
                       total_epochs: int) -> EpochPrediction:
    """Total energy (J) and time (s) of a run of `total_epochs` from its first k measured epochs.

    The first epoch carries warm-up (allocator growth, kernel selection, cold caches, lazy
    data loading), so it is not a typical epoch:
    - k >= 2: the first epoch is taken as measured, and the remaining total_epochs - 1 epochs
      are priced at the mean of epochs 2..k: total = e1 + mean(e2..ek) x (total_epochs - 1).
    - k == 1: nothing typical has been seen yet; total = e1 x total_epochs, an overestimate by
      the warm-up share (said so in `basis`).
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
    if k == 1:
        return EpochPrediction(energy[0] * total_epochs, times[0] * total_epochs, 1, total_epochs,
                               "epoch 1 x total epochs (includes warm-up: an overestimate)")
    rest = total_epochs - 1
    typical_j, typical_s = sum(energy[1:]) / (k - 1), sum(times[1:]) / (k - 1)
    return EpochPrediction(energy[0] + typical_j * rest, times[0] + typical_s * rest, k,
                           total_epochs,
                           f"epoch 1 as measured + mean of epochs 2..{k} x {rest} epochs")
