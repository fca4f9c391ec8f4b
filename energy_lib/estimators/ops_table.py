"""The price list of the operation-count model: picojoules per add, multiply, read and write, by
bit width and (for memory) by the size of the level that holds the tensor.

The bundled table is Horowitz (ISSCC 2014) at 45 nm (energy_lib/data/horowitz2014_45nm.csv, with
its source in the header). A user may pass their own CSV with the same columns, e.g. one scaled
to their hardware.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ConfigError

DEFAULT_TABLE = "horowitz2014_45nm.csv"
COLUMNS = ("op", "bits", "level_max_bytes", "energy_pj")
OPS = ("add", "mul", "read", "write")


@dataclass(frozen=True)
class OpsTable:
    arithmetic_pj: dict[tuple[str, int], float]  # (op, bits) -> pJ
    memory_pj: dict[tuple[str, int], list[tuple[float, float]]]  # (op, bits) -> [(max bytes, pJ)]
    source: str

    def bits(self) -> list[int]:
        return sorted({b for _, b in self.arithmetic_pj})

    def arithmetic(self, op: str, bits: int) -> float:
        return self.arithmetic_pj[(op, bits)]

    def memory(self, op: str, bits: int, tensor_bytes: float) -> float:
        """pJ per access of `bits` to a tensor of `tensor_bytes`, at the smallest level that holds it."""
        for max_bytes, pj in self.memory_pj[(op, bits)]:
            if tensor_bytes < max_bytes:
                return pj
        return self.memory_pj[(op, bits)][-1][1]

    def level_name(self, tensor_bytes: float, bits: int = 32) -> str:
        for max_bytes, _ in self.memory_pj[("read", bits)]:
            if tensor_bytes < max_bytes:
                return f"<{max_bytes / 1024:g}KB" if math.isfinite(max_bytes) else "DRAM"
        return "DRAM"


def load_ops_table(path: str | Path | None = None) -> OpsTable:
    """The bundled Horowitz table, or the user's CSV. A missing, empty or malformed file raises
    ConfigError naming it and the columns it needs."""
    if path is None:
        text = resources.files("energy_lib").joinpath(f"data/{DEFAULT_TABLE}").read_text("utf-8")
        source = "Horowitz, ISSCC 2014, 45 nm (bundled table)"
    else:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"ops table {str(file)!r} does not exist; give a CSV with columns "
                              f"{','.join(COLUMNS)} or leave table=None for the bundled {DEFAULT_TABLE}")
        text = file.read_text("utf-8")
        source = f"ops table {file}"
    return _parse(text, source)


def _parse(text: str, source: str) -> OpsTable:
    body = "".join(line for line in text.splitlines(True) if not line.lstrip().startswith("#"))
    rows = list(csv.DictReader(io.StringIO(body)))
    where = source.removeprefix("ops table ")
    if not rows or set(COLUMNS) - set(rows[0]):
        raise ConfigError(f"ops table {where!r} is empty or lacks columns; needs "
                          f"{','.join(COLUMNS)} (see energy_lib/data/{DEFAULT_TABLE})")
    arithmetic: dict[tuple[str, int], float] = {}
    memory: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for number, row in enumerate(rows, start=1):
        try:
            op, bits, pj = row["op"].strip(), int(row["bits"]), float(row["energy_pj"])
            if op not in OPS or pj < 0:
                raise ValueError
            if op in ("add", "mul"):
                arithmetic[(op, bits)] = pj
            else:
                memory.setdefault((op, bits), []).append((float(row["level_max_bytes"]), pj))
        except (TypeError, ValueError):
            raise ConfigError(f"ops table {where!r}, data row {number}: {dict(row)} is malformed; "
                              f"op must be one of {OPS}, bits an integer, energy_pj >= 0, "
                              "level_max_bytes a number or inf for read/write") from None
    for bits in {b for _, b in arithmetic} | {b for _, b in memory}:
        missing = [op for op in OPS if (op, bits) not in arithmetic and (op, bits) not in memory]
        if missing:
            raise ConfigError(f"ops table {where!r} lacks {missing} at {bits} bits")
    for levels in memory.values():
        levels.sort()
    return OpsTable(arithmetic, memory, source)
