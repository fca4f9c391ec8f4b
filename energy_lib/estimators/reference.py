"""A reference workload: one fixed training step, metered while a calibration is made and again
before a run is predicted, so that a fit made at one hour answers for the machine as it is now.

Why: on a shared or virtual machine the same layer takes different times at different hours
(other tenants of the host, turbo headroom, thermal state), and nothing inside the machine shows
it. On this project's 2-vCPU VM, with nothing else running in it, the quick study's
paper-CNN training step (width 1, fp32, batch 128) took 224 ms in the committed records and
248-266 ms in the same training loop a day later. A fit carries the speed of the hours its
rows were measured in, and a calibration file grows over several sessions.

So `energy-study calibrate` meters the reference (rows with phase `reference`) before its first
layer, every `Plan.reference_every` layers and after its last; their median is the state the
fit stands for. A prediction is multiplied by (reference metered now / that median), the
machine-state factor, which the estimate's source states. A calibration without reference rows
(older files, the Getzner data) is used as it is, and says so.

Why a median of many short windows: the reference's cost jitters by +-20 % from one 0.15-second
window to the next on this VM. Three such windows per probe gave machine-state factors from
0.77 to 1.70 within one 3-minute whole-model check, and made its median error worse (15.1 %
against 12.4 % unscaled). The median of nine 0.1-second windows varied by +-4 % over six probes
in a row. Layer rows are not rescaled one by one for the same reason: each would take on the
jitter of the references beside it.

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
#: metered windows per reference measurement, and the least length of each: the median of many
#: short windows, in calibration and before a prediction alike (one window can be hit by a
#: neighbour's burst)
REFERENCE_WINDOWS = 9
REFERENCE_WINDOW_S = 0.1
#: on a GPU each window lasts calibrate.GPU_MIN_WINDOW_S (the energy counter's resolution), so
#: fewer of them: a probe of about 3 s instead of 9
REFERENCE_WINDOWS_GPU = 3


def reference_state(table: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """(the layer rows of a calibration table, the median of its reference rows in J per
    reference step: the machine state the fit stands for; None without reference rows)."""
    is_reference = (table["phase"] == REFERENCE_PHASE).to_numpy()
    energy = pd.to_numeric(table["energy_j"], errors="coerce").to_numpy(float)
    usable = is_reference & np.isfinite(energy) & (energy > 0)
    median_j = float(np.median(energy[usable])) if usable.any() else None
    return table[~is_reference].reset_index(drop=True), median_j
