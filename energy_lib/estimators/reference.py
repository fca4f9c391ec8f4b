"""A reference workload: one fixed training step, metered while a calibration is made and again
before a run is predicted, so that a fit made at one hour answers for the machine as it is now.

Why: on a shared or virtual machine the same layer takes different times at different hours
(other tenants of the host, turbo headroom, thermal state), and nothing inside the machine shows
it. On this project's 2-vCPU VM, with nothing else running in it, the quick study's
paper-CNN training step (width 1, fp32, batch 128) took 224 ms in the committed records and
248-266 ms in the same training loop a day later. A fit carries the speed of the hours its
rows were measured in, and a calibration file grows over several sessions.

So `energy-study calibrate` meters the reference (rows with phase `reference`) before its first
layer, every `Plan.reference_every` layers and after its last. Each layer row is rescaled from
the reference around it (the mean of the nearest one before and after it in the file) to the
file's median reference: the drift during and between calibration sessions is taken out of the
fit. A prediction is then multiplied by (reference metered now / that median), the
machine-state factor, which the estimate's source states. A calibration without reference rows
(older files, the Getzner data) is used as it is, and says so.

What this cannot see: a change that slows the run's own layers and not the reference (a
memory-bound model on a host whose memory bandwidth is taken), or load that arrives after the
prediction was made. The record's contention figures are there for those.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The `phase` of a reference row in a calibration file (layer rows are forward / train_step).
REFERENCE_PHASE = "reference"
#: The reference workload: a 3x3 convolution's training step, 16 -> 16 channels on 28 x 28
#: images, batch 32 (58 M MACs forward; ~10 ms on a 2-vCPU EPYC): a mid-sized layer of the
#: zoo's kind, long enough for a window of a few dozen calls, short enough to probe in ~1 s.
REFERENCE_CONFIG = {"layer_type": "Conv2d", "batch_size": 32, "in_channels": 16,
                    "out_channels": 16, "image_size": 28, "kernel_size": 3, "stride": 1,
                    "padding": 1, "config_id": "reference"}
#: metered windows per reference measurement (their median is kept: one window can be hit by a
#: neighbour's burst)
REFERENCE_WINDOWS = 3
#: the least length of a probe window before a prediction (the quick plan's windows; a calibration
#: uses its plan's)
PROBE_WINDOW_S = 0.15


def normalise(table: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """(the layer rows, each rescaled to the file's median reference; that median in J per
    reference step), from a calibration table in file order. Without reference rows: (the
    layer rows unchanged, None). Rows before the first reference take the first one's state."""
    is_reference = (table["phase"] == REFERENCE_PHASE).to_numpy()
    energy = pd.to_numeric(table["energy_j"], errors="coerce").to_numpy(float)
    usable = is_reference & np.isfinite(energy) & (energy > 0)
    layers = table[~is_reference].copy()
    if not usable.any():
        return layers.reset_index(drop=True), None
    positions = np.flatnonzero(usable)
    values = energy[usable]
    median_j = float(np.median(values))
    after = np.searchsorted(positions, np.flatnonzero(~is_reference))
    before_j = values[np.clip(after - 1, 0, len(values) - 1)]
    after_j = values[np.clip(after, 0, len(values) - 1)]
    local_j = np.where((after > 0) & (after < len(values)), (before_j + after_j) / 2,
                       np.where(after > 0, before_j, after_j))
    layers["energy_j"] = pd.to_numeric(layers["energy_j"], errors="coerce") * (median_j / local_j)
    layers["state_factor"] = local_j / median_j
    return layers.reset_index(drop=True), median_j
