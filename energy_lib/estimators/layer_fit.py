"""A fitted per-layer model as data: `TypeModel` (one layer type in one phase) and `LayerFit`
(all of them, and where they came from). Fitting them is `regression`'s job, storing and reading
them is `fit_cache`'s; both import these classes from here, so neither imports the other back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .layer_data import features


@dataclass
class TypeModel:
    """Energy of one pass of one layer type in one phase at one compute dtype."""

    layer_type: str
    phase: str
    dtype: str
    family: str  # "trees" | "nnls"
    regressor: object
    columns: list[str]
    smear: float
    lows: pd.Series
    highs: pd.Series
    report: dict = field(default_factory=dict)

    def predict(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(energy_j, extrapolated) per row."""
        named, work = features(table, self.layer_type)
        x = named[self.columns]
        outside = ((x < self.lows - 1e-9) | (x > self.highs + 1e-9)).any(axis=1).to_numpy()
        if self.family == "trees":
            return work * np.exp(self.regressor.predict(x.to_numpy())) * self.smear, outside
        return self.regressor.predict(linear_terms(named, work)), outside


@dataclass
class LayerFit:
    models: dict[tuple[str, str, str], TypeModel]  # (layer type, phase, dtype)
    source: str  # which data and which hardware
    machine: str
    #: the median reference step of the calibration (J): the machine state the fit stands for
    #: (reference.py); None for data without reference rows
    reference_j: float | None = None

    @property
    def dtypes(self) -> list[str]:
        """The compute dtypes this fit has data for."""
        return sorted({dtype for _, _, dtype in self.models})

    def report(self) -> pd.DataFrame:
        """Held-out R² and MAPE per layer type, phase and dtype."""
        return pd.DataFrame([m.report for m in self.models.values()])


def linear_terms(named: pd.DataFrame, work: np.ndarray) -> np.ndarray:
    """[work, bytes moved, 1] for the small-data model (bytes only where not a multiple of work)."""
    terms = [work]
    if "log_bytes_per_work" in named:
        terms.append(work * np.exp(named["log_bytes_per_work"].to_numpy()))
    terms.append(np.ones(len(work)))
    return np.column_stack(terms)
