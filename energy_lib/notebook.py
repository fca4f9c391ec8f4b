"""The few calls the run notebook makes, kept here so the notebook stays thin and tested.

Papermill injects parameters as plain assignments and only *warns* about names the notebook does
not declare. `parameters_from(namespace, before)` takes every new public name defined since a
snapshot of the notebook's globals, so a misspelt `-p widht 2` reaches RunConfig.from_dict and
fails with a clear error instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from .config import RunConfig
from .records import record
from .train import RunResult


_LITERALS = (str, int, float, bool, type(None), list, dict)


def parameters_from(namespace: dict[str, Any], before: Iterable[str]) -> dict[str, Any]:
    """Literal values (what papermill injects) bound to public names since the snapshot
    `before`. Objects the notebook makes later (config, result, tables) are not literals, so
    re-running a cell interactively does not mistake them for parameters."""
    before = set(before)
    return {k: v for k, v in namespace.items()
            if k not in before and not k.startswith("_") and isinstance(v, _LITERALS)}


def config_from(namespace: dict[str, Any], before: Iterable[str]) -> RunConfig:
    """Validate the notebook's parameters and store the resolved config in the record."""
    config = RunConfig.from_dict(parameters_from(namespace, before))
    record("config", config)
    return config


def config_table(config: RunConfig) -> pd.DataFrame:
    return pd.DataFrame({"value": [str(v) for v in config.to_dict().values()]},
                        index=list(config.to_dict()))


def meters_text(result: RunResult) -> str:
    """What each energy figure of this run is: measured or modelled, and how."""
    lines = [f"- {component}: {label}" for component, label in result.meters["components"].items()]
    return "\n".join(lines + [f"- {d}" for d in result.meters["descriptions"]])


def record_result(result: RunResult) -> pd.DataFrame:
    """Store the epoch table, energy readings, summary and provenance; return the epoch table."""
    record("epochs", result.epochs)
    record("energy", result.energy)
    record("meters", result.meters)
    record("timeline", {"samples": result.timeline, "marks": result.timeline_marks})
    record("provenance", result.provenance)
    record("summary", result.summary)  # last: its presence marks a finished run
    return result.epochs_frame()
