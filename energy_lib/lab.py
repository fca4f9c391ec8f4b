"""The few calls the run notebook makes (`import energy_lib.lab as lab`), kept here so the
notebook stays thin and tested.

The hand-off to the kernel is three papermill parameters (`PARAMETERS`): `config`, a mapping of
RunConfig fields (`energy-study run` passes a cell's whole validated configuration; a hand-run
notebook passes the fields it changes), and this execution's `progress` and `record_path`. The
notebook passes them on explicitly: `lab.config_from(config, globals())` validates, and
`lab.train(run_config, record_path=..., progress=...)` trains. Papermill only *warns* about a
name the notebook does not declare, so `config_from` also refuses any other value papermill
injected (`-p width 2`, `-p widht 2`): a misspelt or misplaced setting stops the run with one line
instead of being ignored.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import pandas as pd
from tqdm import TqdmWarning

from .config import RunConfig
from .energy import derive
from .energy.table import Phase
from .errors import ConfigError
from .records import Status, store, store_run

if TYPE_CHECKING:  # the training core (torch) is imported by `train` itself, when it runs
    from .training.train import RunResult


# A papermill kernel has no front end for widgets: tqdm.auto, imported by timm's hub client,
# warns on stderr in every timm cell that ipywidgets is missing. The record's own progress is
# plain text (`progress = "text"`), so the warning says nothing about the run.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

#: The run notebook's papermill parameters, with their defaults for a notebook opened by hand:
#: `config`, the RunConfig fields to set (none: RunConfig's defaults, the original T4 study's
#: fp32 width-1 cell); `progress`, "auto" (a widget where the front end shows one) or "text"
#: (the runner streams the kernel's stderr to a terminal); `record_path`, the record being
#: written, so a CodeCarbon log lands beside it (`<record>.codecarbon/`; "" = ./codecarbon).
PARAMETERS: dict[str, Any] = {"config": {}, "progress": "auto", "record_path": ""}
PROGRESS = ("auto", "text")

_LITERALS = (str, int, float, bool, type(None), list, dict, tuple)
#: Names IPython itself binds in a kernel's namespace (history, outputs, helpers)
_IPYTHON_NAMES = re.compile(r"_+|_[ioh]+\d*|_\d+|_[dio]h|__\w+__|In|Out|get_ipython|exit|quit|open")


def injected_names(namespace: Mapping[str, Any]) -> list[str]:
    """Values bound in the notebook's namespace that are neither its parameters nor IPython's
    own: what papermill injected for a name the notebook does not declare. Objects the notebook
    makes later (config, result, tables) are not literals, so re-running a cell by hand does not
    mistake them for parameters."""
    return sorted(name for name, value in namespace.items()
                  if name not in PARAMETERS and isinstance(value, _LITERALS)
                  and not _IPYTHON_NAMES.fullmatch(name))


def config_from(config: Mapping[str, Any], namespace: Mapping[str, Any] | None = None) -> RunConfig:
    """Validate the run's settings and store the resolved config in the record. `namespace`
    (the notebook's `globals()`): refuse any other value papermill injected."""
    stray = injected_names(namespace or {})
    if stray:
        fields = [name for name in stray if name in RunConfig.__dataclass_fields__]
        hint = (f"{', '.join(fields)} {'is a' if len(fields) == 1 else 'are'} RunConfig "
                f"field{'s' if len(fields) > 1 else ''}: pass {'it' if len(fields) == 1 else 'them'} "
                f"inside `config`, e.g. papermill -y \"config: {{{fields[0]}: ...}}\""
                if fields else "RunConfig fields go inside `config`")
        raise ConfigError(f"parameter{'s' if len(stray) > 1 else ''} {', '.join(map(repr, stray))} "
                          f"not allowed: the run notebook's parameters are "
                          f"{', '.join(PARAMETERS)}; {hint}")
    if namespace and "progress" in namespace:
        check_progress(namespace["progress"])
    if not isinstance(config, Mapping):
        raise ConfigError(f"parameter config={config!r} is not allowed: it is a mapping of RunConfig "
                          "fields to values, e.g. {'width': 2, 'precision': 'amp'}")
    run_config = RunConfig.from_dict(config)
    data_dir = Path(run_config.data_dir).expanduser()
    if not data_dir.is_absolute():  # opened by hand: JupyterLab's kernel starts in notebooks/
        from .study.spec import root_above

        run_config = replace(run_config, data_dir=str(root_above() / data_dir))
    store("config", run_config)
    return run_config


def check_progress(progress: Any) -> None:
    if progress not in PROGRESS:
        raise ConfigError(f"parameter progress={progress!r} is not allowed; use one of: "
                          f"{', '.join(PROGRESS)}")


def train(config: RunConfig, *, record_path: str | Path = "", progress: str = "auto") -> RunResult:
    """Train `config` as this execution asks: its progress bar, and the CodeCarbon folder beside
    the record being written (`record_path`; "" = ./codecarbon)."""
    from .training.train import train as train_config

    check_progress(progress)
    return train_config(config, progress=progress,
                        codecarbon_dir=Path(record_path).with_suffix(".codecarbon")
                        if record_path else None)


def config_table(config: RunConfig) -> pd.DataFrame:
    return pd.DataFrame({"value": [str(v) for v in config.to_dict().values()]},
                        index=list(config.to_dict()))


def meters_text(result: RunResult) -> str:
    """What each energy figure of this run is: measured or modelled, and how; what could not
    be measured and why; any meter that failed mid-run."""
    lines = [f"- {component}: {m['method']} ({m['kind']})"
             for component, m in result.meters["methods"].items()]
    lines += [f"- {d}" for d in result.meters["descriptions"]]
    lines += [f"- FAILED at {f['at_s']:.1f} s in window {f['window']}: {f['meter']}: {f['error']}"
              for f in result.meters["failures"]]
    return "\n".join(lines)


def energy_view(result: RunResult) -> pd.DataFrame:
    """The run's energy table as recorded (one row per window, component and method)."""
    return pd.DataFrame(result.energy)


def epochs_view(result: RunResult) -> pd.DataFrame:
    """The epoch table with each epoch's energy, derived from the energy table."""
    epochs = result.epochs_frame()
    if epochs.empty:
        return epochs
    per_epoch = derive.per_epoch(result.energy).drop(columns=["cell"])
    epochs["epoch"] = epochs["epoch"].astype("Int64")
    return epochs.merge(per_epoch, on="epoch", how="left")


def windows_view(result: RunResult) -> pd.DataFrame:
    """Per metering window, whose share of the machine it was: the cell's CPU time against the
    machine's busy and steal time, others' share of the capacity, runnable threads per core,
    the cell's memory share (energy.attribution; the factors of the `process` energy rows)."""
    return pd.DataFrame(result.windows)


def idle_power_w(result: RunResult) -> dict[str, float]:
    """{"component/method": W} of the idle baseline, for the timeline's idle lines."""
    return derive.idle_power_w(result.energy).get("", {})


def summary_view(result: RunResult) -> pd.Series:
    """Accuracy, time and the derived energy figures of this run (nothing here is stored twice:
    the energy figures are computed from the energy table each time)."""
    figures = derive.run_figures(result.energy, result.summary["best_val_acc_pct"], result.carbon)
    return pd.Series({**result.summary, **figures}, name=result.config.cell or result.config.study)


def record_result(result: RunResult) -> pd.DataFrame:
    """Store the epoch table, the energy table, meters, timeline, carbon facts, provenance, the
    final confusion matrix and the summary; return the epoch table with its derived energy."""
    store_run(result)
    return epochs_view(result)


def predictions_before(result: RunResult) -> pd.DataFrame:
    """The whole-run predictions made before the first epoch (energy rows with phase
    "predicted", component "model"): what each estimator expects, what hardware and data it
    stands for, and the layers it left out -- so a reader sees the estimate was not this
    machine's measurement."""
    rows = []
    energy = pd.DataFrame(result.energy)
    made = energy[(energy["phase"] == Phase.PREDICTED.value) & (energy["component"] == "model")] \
        if len(energy) else energy
    for _, row in made.iterrows():
        facts = result.predictions.get(row["method"], {})
        left_out = facts.get("uncovered_layers") or []
        rows.append({"estimator": row["method"], "predicted_j": row["energy_j"],
                     "train_step_j": facts.get("train_step_j"),
                     "eval_forward_j": facts.get("eval_forward_j"),
                     "stands_for": facts.get("source", row["flag"]),
                     "layers_left_out": (f"{', '.join(left_out)} "
                                         f"({facts.get('uncovered_macs_fraction', 0):.1%} of MACs)"
                                         if left_out else "none")})
    for method, facts in result.predictions.items():
        if isinstance(facts, dict) and "error" in facts:
            rows.append({"estimator": method, "predicted_j": float("nan"),
                         "stands_for": f"failed: {facts['error']}", "layers_left_out": ""})
    return pd.DataFrame(rows, columns=["estimator", "predicted_j", "train_step_j", "eval_forward_j",
                                       "stands_for", "layers_left_out"])


def predictions_text(result: RunResult) -> str:
    """How long the predictions took, and which fit the regression used."""
    seconds = result.predictions.get("seconds")
    return (f"predictions made in {seconds:.2f} s before the first epoch" if seconds is not None
            else "no predictions were made")


def predictions_beside(result: RunResult) -> pd.DataFrame:
    """Each prediction (the structural estimators' and the early-epoch extrapolation) beside the
    run's headline energy, its kind (measured or modelled), and predicted / headline."""
    from .report.estimates import estimates_table

    table = estimates_table(pd.DataFrame(result.energy))
    if result.status != Status.OK:  # a diverged run stopped early: its headline covers fewer epochs
        table["ratio"] = float("nan")
    return table.drop(columns=["cell", "status"]).rename(
        columns={"energy_j": "headline_energy_j", "energy_kind": "headline_kind"})
