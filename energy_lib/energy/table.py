"""The one long-form energy table: every energy figure of a run is one row.

A row says which window it covers (`epoch`, `phase`), what it is about (`component`), how it was
obtained (`method`, `kind`), how much (`energy_j` over `duration_s`), whether to distrust it
(`flag`), the energy above the idle baseline where one exists (`above_idle_j`), and whose energy
it is (`scope`: `machine` -- the meter saw the whole package, board or machine -- or `process` --
this cell's share, or a figure that is the cell's by construction). This table
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


#: NVML's energy counter updates about every 20-100 ms; a shorter GPU window reads noise. A GPU
#: meter measures its counter's period when it is built (zeus_meter.counter_update_period_s);
#: this bound stands in where it could not, and for records made before it did.
MIN_RELIABLE_WINDOW_S = 0.1

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
    # epoch 1 after its first warm-up steps, inside epoch 1's train window (never summed into a
    # headline): what a typical step costs, for the early-epoch extrapolation
    STEADY = "steady"
    PREDICTED = "predicted"  # an estimate made before or during training


class Method(StrEnum):
    ZEUS_NVML = "zeus-nvml"  # Zeus: NVML total-energy counter (Volta and newer)
    ZEUS_NVML_POLLED = "zeus-nvml-polled"  # Zeus: NVML power polled and integrated (older GPUs)
    ZEUS_AMDSMI = "zeus-amdsmi"  # Zeus: amdsmi's energy counter (AMD GPUs where it is accurate)
    ZEUS_AMDSMI_POLLED = "zeus-amdsmi-polled"  # Zeus: amdsmi power polled and integrated
    ZEUS_RAPL = "zeus-rapl"  # Zeus: RAPL package and DRAM counters (powercap)
    ZEUS_APPLE_SILICON = "zeus-apple-silicon"  # Zeus: Apple silicon's IOReport energy counters
    ZEUS_JETSON = "zeus-jetson"  # Zeus: Jetson's INA3221 power rails, integrated by Zeus
    TDP_MODEL = "tdp-model"  # CPU: TDP x utilisation
    RAM_MODEL = "ram-model"  # RAM: constant power per GB
    CONSTANT_POWER = "constant-power"  # the original study's assumed board power x time
    STAND_IN = "stand-in"  # a meter failed mid-run: its mean power so far x time
    CODECARBON = "codecarbon"  # CodeCarbon's tracker run alongside (whole run only)
    OPS_MODEL = "ops-model"  # operation counts x Horowitz 2014 45 nm energies (estimated)
    LAYER_REGRESSION = "layer-regression"  # per-layer regression summed over layers (estimated)
    EARLY_EPOCHS = "early-epochs"  # the run's total extrapolated from its first epochs


class Scope(StrEnum):
    """Whose energy a row is. A CPU package, its DRAM or the TDP x machine-utilisation model
    see every process on the machine (`machine`); the cell's share of such a figure, a device
    pinned to the cell, an assumption made for the run and a prediction of the model's work are
    the cell's (`process`)."""

    PROCESS = "process"
    MACHINE = "machine"


#: Components whose meters read the whole machine (RAPL package/DRAM, the TDP and RAM models,
#: an SoC's counters: Apple silicon or Jetson, CPU, GPU and memory on one chip).
MACHINE_COMPONENTS = ("cpu", "ram", "soc")


def default_scope(component: str, method: str) -> Scope:
    """The scope of a reading as a meter produces it: CPU and RAM figures (and CodeCarbon's,
    which models the whole machine) are the machine's; GPU rows are the cell's because the
    device is pinned to one cell (other processes on it are flagged per window); the
    constant-power row is the cell's because it is a per-run assumption (assumed board power x
    the cell's own wall time), which never looked at the machine; predictions price the
    model's own work."""
    if component in MACHINE_COMPONENTS or method == "codecarbon":
        return Scope.MACHINE
    return Scope.PROCESS


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
    scope: str = ""  # Scope; "" = the meter's default (default_scope)

    def __post_init__(self) -> None:
        scope = self.scope or default_scope(self.component, str(self.method))
        object.__setattr__(self, "scope", Scope(scope))

    def to_dict(self) -> dict:
        row = asdict(self)
        for key in ("phase", "method", "kind", "scope"):
            row[key] = str(row[key])
        return row


COLUMNS = ("epoch", "phase", "component", "method", "kind", "energy_j", "duration_s", "flag",
           "above_idle_j", "scope")
