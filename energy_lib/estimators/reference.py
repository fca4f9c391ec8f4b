"""A reference workload: one fixed training step, metered while a calibration is made and again
before a run is predicted, to say how the machine runs now against the hours its fit was
measured in.

Why: on a shared or virtual machine the same layer takes different times at different hours
(other tenants of the host, turbo headroom, thermal state), and nothing inside the machine shows
it. `energy-study calibrate` meters the reference (rows with phase `reference`) before its first
layer, every `Plan.reference_every` layers and after its last; their median is the state the
fit stands for. Before a run's prediction the same step is metered again (the median of nine
0.1-second windows: one window jitters by +-20 % on this VM, the median of nine by +-4 %), and
the ratio now / then, the machine-state factor, is recorded beside the prediction.

It is not applied to the prediction, because on this project's 2-vCPU VM it does not follow what
a training run costs. Applied (as it was until December 2026), it made the layer regression's
median error on the quick study's earlier records (made at ef27b14, in git history) 90 % instead
of 25 % (factors 1.20-2.37), 25 % instead of 9 % on 8 one-epoch quick cells run on 2026-12-07
(factors 1.24-1.52), 60 % instead of 33 % on the whole quick study run again that day at 3c42893
(factors 1.03-1.47), and 81 % instead of 33 % on the records committed from c065243 (factors
1.02-2.18; report/quick/estimates_summary.csv). That day the reference step took 2.4-2.9 ms
inside a calibration and 2.6-3.6 ms in fresh processes, against 2.2-2.5 ms in the committed
calibration's rows, while the quick study's width-1 seed-0 epochs took what they took in its
earlier records (fp32 4.86-5.01 s against 5.00-5.05 s, amp 2.65-2.88 s against 2.94-3.01 s): a
small convolution's step and a batch-128 training step do not slow down together. Only in one
long process, seconds after the probe, did it help, and little (the whole-model check, `python
-m benchmarks.whole_model`: median error 10.1 % with it and 12.5 % without in
benchmarks/results/amd-epyc-2cpu-whole-model.csv, an earlier VM's calibration; 17.3 % and 19.0 %
over 64 windows on 2026-12-07 with calibration/amd-epyc-2cpu.csv). The report keeps testing it:
`median_ape_rescaled_pct` is each fit's error with the factor applied.

A calibration without reference rows (older files, the Getzner data) has no factor, and its
prediction's source says so.
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
