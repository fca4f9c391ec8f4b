"""Data files shipped inside the package (energy_lib/data/), each with a comment header that
cites its source."""

from __future__ import annotations

import csv
import io
from importlib import resources


def read_csv(name: str) -> list[dict[str, str]]:
    """Rows of a bundled CSV, skipping its leading `#` comment lines."""
    text = resources.files("energy_lib").joinpath(f"data/{name}").read_text(encoding="utf-8")
    body = "".join(line for line in text.splitlines(True) if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(body)))
