"""The one long-form energy table: every energy figure of a run is one row.

A row says which window it covers (`epoch`, `phase`), what it is about (`component`), how it was
obtained (`method`, `kind`), how much (`energy_j` over `duration_s`), whether to distrust it
(`flag`), and the energy above the idle baseline where one exists (`above_idle_j`). This table
is what a lab record stores and what `records.read_runs(...).energy` returns; every total, kWh
figure, mean power or carbon figure is derived from it by `energy.derive` and never stored again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

JOULES_PER_KWH = 3.6e6
JOULES_PER_WH = 3600.0


def joules_to_kwh(energy_j: float) -> float:
    return energy_j / JOULES_PER_KWH


class Kind(StrEnum):
    """How a figure was obtained: read from a hardware counter, computed from a model of the
    hardware and the run's time/load, or predicted from the model's structure."""

    MEASURED = "measured"
    MODELLED = "modelled"
    ESTIMATED = "estimated"


class Phase(StrEnum):
    IDLE = "idle"  # nothing running, before training: the baseline
    IDLE_AFTER = "idle-after"  # nothing running, after training: did the baseline drift?
    TRAIN = "train"  # one epoch's training steps
    EVAL = "eval"  # one epoch's evaluation
    RUN = "run"  # all epochs, edge to edge (includes the gaps between phases)
    PREDICTED = "predicted"  # an estimate made before or during training


class Method(StrEnum):
    ZEUS_NVML = "zeus-nvml"  # Zeus: NVML total-energy counter (Volta and newer)
    ZEUS_NVML_POLLED = "zeus-nvml-polled"  # Zeus: NVML power polled and integrated (older GPUs)
    ZEUS_AMDSMI = "zeus-amdsmi"  # Zeus: AMD GPUs through amdsmi
    ZEUS_RAPL = "zeus-rapl"  # Zeus: RAPL package and DRAM counters (powercap)
    TDP_MODEL = "tdp-model"  # CPU: TDP x utilisation
    RAM_MODEL = "ram-model"  # RAM: constant power per GB
    CONSTANT_POWER = "constant-power"  # the original study's assumed board power x time
    STAND_IN = "stand-in"  # a meter failed mid-run: its mean power so far x time
    CODECARBON = "codecarbon"  # CodeCarbon's tracker run alongside (whole run only)
    OPS_MODEL = "ops-model"  # operation counts x Horowitz 2014 45 nm energies (estimated)
    LAYER_REGRESSION = "layer-regression"  # per-layer regression summed over layers (estimated)
    EARLY_EPOCHS = "early-epochs"  # the run's total extrapolated from its first epochs


#: The component of the constant-power estimate: an assumed whole-board figure, never a part
#: of the headline sum of measured/modelled components.
ASSUMED_BOARD = "assumed-board"


@dataclass(frozen=True)
class EnergyRow:
    epoch: int | None
    phase: Phase
    component: str  # "gpu", "cpu", "ram", "assumed-board"
    method: Method
    kind: Kind
    energy_j: float
    duration_s: float
    flag: str = ""
    above_idle_j: float | None = None

    def to_dict(self) -> dict:
        row = asdict(self)
        for key in ("phase", "method", "kind"):
            row[key] = str(row[key])
        return row


COLUMNS = ("epoch", "phase", "component", "method", "kind", "energy_j", "duration_s", "flag",
           "above_idle_j")
