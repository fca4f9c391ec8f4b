"""What every estimator returns: one labelled figure plus the per-layer table behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Estimate:
    """Energy of one forward pass (training=False) or one training step (training=True) of one
    batch, in joules, with the layers it covers and the ones it left out.

    `kind` is always "estimated" (DESIGN.md: never mixed with measured or modelled figures
    without saying so); `source` names the table or fit and the hardware the figure stands for.
    """

    energy_j: float
    per_layer: pd.DataFrame  # one row per layer call: name, type, macs, energy_j, covered, ...
    uncovered_macs_fraction: float
    method: str
    source: str
    batch_size: int
    input_size: tuple[int, ...]
    training: bool
    uncovered_layers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kind: str = "estimated"
    compute_dtype: str = "float32"  # what the estimated run computes in
    #: what the reader must know before using the figure, e.g. "answered-at-float32": the fit
    #: had no data at the run's compute dtype
    flags: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for a notebook or a log."""
        phase = "training step" if self.training else "forward pass"
        left_out = (f"; left out {len(self.uncovered_layers)} layer(s), "
                    f"{self.uncovered_macs_fraction:.1%} of MACs") if self.uncovered_layers else ""
        return (f"{self.method} ({self.kind}): {self.energy_j:.4g} J per {phase} of a batch of "
                f"{self.batch_size}{left_out}; {self.source}")
