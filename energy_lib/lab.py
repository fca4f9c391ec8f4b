"""The few calls the run notebook makes (`import energy_lib.lab as lab`), kept here so the
notebook stays thin and tested.

Papermill injects parameters as plain assignments (`width = 2`) in a cell after the
parameters cell, and only *warns* about names the notebook does not declare. So the notebook
marks the point before its parameters (`mark_parameters(globals())`), and `config_from` reads
the assignments of the cells run since then -- the parameters cell and papermill's injected
one -- from IPython's input history. Every name assigned there must be a RunConfig field: a
misspelt `-p widht 2` or a private-looking `-p _width 3` fails with a clear error instead of
being silently ignored, and `-p lab 1` (which would replace a name the notebook itself uses)
is refused by name instead of breaking a later cell. Reading the sources rather than the
namespace is what makes the last case detectable: the config cell imports `lab` again, so the
injected value is gone from the namespace by the time it could be checked there.

Besides the RunConfig fields, the runner passes `RUNNER_PARAMETERS` (how this execution shows
progress, where its record goes): papermill parameters like the others, never environment
variables, so an executed notebook shows everything it was given.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from tqdm import TqdmWarning

from .config import FIELD_NAMES, RunConfig
from .energy import derive
from .energy.table import Phase
from .errors import ConfigError
from .records import Status, store, store_run
from .train import RunResult, train as train_config


# A papermill kernel has no front end for widgets: tqdm.auto, imported by timm's hub client,
# warns on stderr in every timm cell that ipywidgets is missing. The record's own progress is
# plain text (`progress = "text"`), so the warning says nothing about the run.
warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)

_LITERALS = (str, int, float, bool, type(None), list, dict)
#: Parameters of this execution, not of the run, with their defaults for a notebook opened by
#: hand: `progress` "auto" (a widget where the front end shows one) or "text" (the runner
#: streams the kernel's stderr to a terminal); `record_path`, the record being written, so a
#: CodeCarbon log lands beside it (`<record>.codecarbon/`; "" = ./codecarbon).
RUNNER_PARAMETERS = {"progress": "auto", "record_path": ""}
_RUNNER: dict[str, Any] = dict(RUNNER_PARAMETERS)  # this execution's, set by config_from


def parameters_from(namespace: dict[str, Any], before: Iterable[str]) -> dict[str, Any]:
    """Literal values (what papermill injects) bound to public names since the snapshot
    `before`. Objects the notebook makes later (config, result, tables) are not literals, so
    re-running a cell interactively does not mistake them for parameters."""
    before = set(before)
    return {k: v for k, v in namespace.items()
            if k not in before and not k.startswith("_") and isinstance(v, _LITERALS)}


_MARK: dict[str, Any] = {}  # set by mark_parameters: names defined before, execution count


def _ipython():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def mark_parameters(namespace: dict[str, Any]) -> None:
    """Call in the cell just before the parameters cell: remembers the names the notebook
    defined so far (which no parameter may replace) and where the parameter cells start."""
    shell = _ipython()
    _MARK.clear()
    _MARK.update(names=set(namespace), count=getattr(shell, "execution_count", None))


def assigned_parameters() -> dict[str, Any] | None:
    """name -> literal value of every top-level `name = literal` in the cells run since
    `mark_parameters` and before the current one, later assignments winning; None when there
    is no IPython history to read (then the namespace is used)."""
    shell = _ipython()
    start = _MARK.get("count")
    if shell is None or start is None:
        return None
    history = shell.history_manager.input_hist_parsed
    found: dict[str, Any] = {}
    for source in history[start + 1: shell.execution_count]:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if not isinstance(node, ast.Assign):
                continue
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, SyntaxError, TypeError):
                continue
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.pop(target.id, None)
                    found[target.id] = value
    return found


def config_from(namespace: dict[str, Any], before: Iterable[str] | None = None) -> RunConfig:
    """Validate the notebook's parameters and store the resolved config in the record.
    After `mark_parameters`, the parameters are the assignments since the mark (see the module
    docstring); otherwise the literal values bound since the snapshot `before`."""
    assigned = assigned_parameters()
    if assigned is None:
        values = parameters_from(namespace, before or ())
    else:
        allowed = f"allowed: {', '.join(FIELD_NAMES)} (and the runner's {', '.join(RUNNER_PARAMETERS)})"
        for name in assigned:
            if name.startswith("_"):
                raise ConfigError(f"parameter {name!r} is not a RunConfig field (no field name "
                                  f"starts with '_'); {allowed}")
            if name in _MARK["names"]:
                raise ConfigError(f"parameter {name!r} is not a RunConfig field: it would "
                                  f"replace the notebook's own {name!r}; {allowed}")
        values = assigned
    _RUNNER.clear()
    _RUNNER.update({name: values.get(name, default) for name, default in RUNNER_PARAMETERS.items()})
    if _RUNNER["progress"] not in ("auto", "text"):
        raise ConfigError(f"parameter progress={_RUNNER['progress']!r} is not allowed; use 'auto' "
                          "or 'text'")
    config = RunConfig.from_dict({k: v for k, v in values.items() if k not in RUNNER_PARAMETERS})
    data_dir = Path(config.data_dir).expanduser()
    if not data_dir.is_absolute():  # opened by hand: JupyterLab's kernel starts in notebooks/
        from .study.spec import root_above

        config = replace(config, data_dir=str(root_above() / data_dir))
    store("config", config)
    return config


def train(config: RunConfig) -> RunResult:
    """`train.train` as this execution asks: its progress bar, and the CodeCarbon folder beside
    the record being written."""
    record_path = _RUNNER.get("record_path") or ""
    return train_config(config, progress=_RUNNER.get("progress", "auto"),
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
