"""Energy estimates made before (or beside) a measurement, each labelled kind="estimated":

- `ops_estimate` (method "ops-model"): operation counts priced per operation (Horowitz 2014,
  45 nm); an idealised chip, for ranking models.
- `layerwise_estimate` (method "layer-regression"): per-layer regressions fitted on measured
  single layers (Getzner et al. 2023, or this machine's calibration), summed over the model.
- `extrapolate_epochs` (method "early-epochs"): a run's total from its first epochs.
- `calibrate` (module): measure this machine's per-layer energy for the regression.
"""

from .extrapolate import EpochPrediction, extrapolate_epochs
from .ops import ops_estimate
from .regression import layerwise_estimate, load_fit
from .result import Estimate

__all__ = ["Estimate", "EpochPrediction", "extrapolate_epochs", "layerwise_estimate", "load_fit",
           "ops_estimate"]
