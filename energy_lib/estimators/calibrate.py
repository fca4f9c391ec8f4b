"""Calibration: measure this machine's own per-layer energy, for the layer-regression fit.

Randomly sampled single-layer configurations (seeded; ranges configurable) of the fitted layer
types, and the distinct layers the zoo's models call (`ZOO`, at `ZOO_BATCH_SIZES`: the shapes
the predictions are made for, not only their neighbourhood), each run as a forward pass and as a training step (forward, backward, SGD update), in
fp32 and under the autocast dtype an amp run uses on the device (bfloat16 on a CPU, float16 on
CUDA: a mixed-precision run's layers cost what they cost in that dtype, not fp32's), each
timed and metered over enough repeats to fill a short window, and appended row by row to
`calibration/<machine>.csv` in the long format of `layer_data.COLUMNS`. A fixed reference step
is metered before the first row, every `Plan.reference_every` rows and after the last (rows of
phase `reference`): the machine's state around each row, which reference.py takes out of the
fit and puts back at prediction time. A killed calibration
keeps every finished row (each is flushed and fsynced; a half-written last line is cut on the
next start), and a rerun with the same seed and ranges skips what is already there. A file that
does not start with exactly our header was not written here and is never appended to or replaced
(WriteError); every mistake is an EnergyStudyError raised before anything is measured.

`energy-study calibrate` (cli.py) parses the command line; `make_plan` turns its options into a
`Plan` and `calibrate` measures it. Metering goes through `metered` alone, so pointing
calibration at another metering API is a change of one function; `forward_fn`, `train_step_fn`,
`in_dtype` and `metered` are public for experiments that meter other code the same way
(benchmarks/whole_model.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..training.allocator import steady_allocator
from ..errors import ConfigError, EnergyStudyError, WriteError
from ..files import check_file_name, check_output_file, create_new
from ..folders import CALIBRATION
from ..provenance import fingerprint
from .layer_data import COLUMNS, LAYER_TYPES, count_macs
from .reference import (REFERENCE_CONFIG, REFERENCE_PHASE, REFERENCE_WINDOW_S, REFERENCE_WINDOWS,
                        REFERENCE_WINDOWS_GPU)

DEFAULT_DIR = Path(CALIBRATION)


@dataclass(frozen=True)
class Ranges:
    """Inclusive (low, high) ranges the configurations are drawn from. Sizes are drawn
    log-uniformly (as many small layers as large ones), kernel/stride/padding uniformly."""

    batch_size: tuple[int, int] = (1, 128)
    image_size: tuple[int, int] = (8, 96)
    channels: tuple[int, int] = (1, 256)
    kernel_size: tuple[int, int] = (1, 7)
    stride: tuple[int, int] = (1, 3)
    padding: tuple[int, int] = (0, 3)
    features: tuple[int, int] = (16, 4096)  # Linear in/out features
    elements: tuple[int, int] = (1024, 1_000_000)  # activations: elements per sample

    def check(self) -> None:
        """Empty or inverted ranges -> ConfigError (one line), before anything is measured."""
        for f in fields(self):
            value = getattr(self, f.name)
            lowest = 0 if f.name == "padding" else 1
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise ConfigError(f"calibration range {f.name}={value!r} is not allowed; give "
                                  f"(low, high) integers, e.g. {getattr(Ranges(), f.name)}")
            low, high = value
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"calibration range {f.name}={tuple(value)!r} must hold integers")
            if low > high:
                raise ConfigError(f"calibration range {f.name}={tuple(value)!r} is inverted "
                                  f"(low > high); give (low, high) with low <= high")
            if low < lowest:
                raise ConfigError(f"calibration range {f.name}={tuple(value)!r} is empty: values "
                                  f"must be >= {lowest}")
        if self.kernel_size[0] > self.image_size[1] + 2 * self.padding[1]:
            raise ConfigError(f"calibration ranges admit no layer: kernel_size >= "
                              f"{self.kernel_size[0]} never fits image_size <= {self.image_size[1]} "
                              f"with padding <= {self.padding[1]}")

    def key(self) -> str:
        """Short fingerprint: rows measured under other ranges are never mistaken for these."""
        return hashlib.sha1(repr(sorted(asdict(self).items())).encode()).hexdigest()[:8]


QUICK = Ranges(batch_size=(1, 32), image_size=(8, 32), channels=(1, 64), kernel_size=(1, 5),
               stride=(1, 2), padding=(0, 2), features=(16, 1024), elements=(1024, 65536))

#: The zoo's models as the quick studies build them (Fashion-MNIST's 1 x 28 x 28 images), whose
#: own layers a plan measures beside the random samples (`Plan.zoo`): a regression fitted only
#: on random small layers extrapolates to the models' larger ones (the MLP's Linear layers are
#: 4-51 M MACs; the quick ranges' Linear samples 0.05-2 M, where per-call overhead dominates).
ZOO = ({"model": "paper_cnn", "width": 0.5}, {"model": "paper_cnn", "width": 1.0},
       {"model": "resnet18", "width": 0.25}, {"model": "mlp", "width": 1.0})
ZOO_INPUT = (1, 28, 28)
#: batch sizes the zoo's layers are measured at: the quick studies train at 128 and evaluate at
#: 1000 (512: near it in log space, without the cost of 1000-sample training steps); the random
#: samples cover batches up to 32
ZOO_BATCH_SIZES = (128, 512)


@dataclass(frozen=True)
class Plan:
    ranges: Ranges = Ranges()
    per_type: int = 40
    seed: int = 0
    layer_types: tuple[str, ...] = tuple(LAYER_TYPES)
    min_window_s: float = 0.5  # each metered window lasts at least this long
    max_repeats: int = 1000
    #: compute dtypes to measure; () = float32 and the device's amp dtype (`device.amp_dtype`)
    dtypes: tuple[str, ...] = ()
    #: also measure the distinct layers of these models (ZOO's form) at zoo_batch_sizes
    zoo: tuple[dict, ...] = ()
    zoo_batch_sizes: tuple[int, ...] = ZOO_BATCH_SIZES
    #: layer rows between two measurements of the reference step (reference.py)
    reference_every: int = 32


def plan_dtypes(plan: Plan, device: torch.device) -> tuple[str, ...]:
    """The dtypes the plan measures on this device (checked: names torch autocast takes)."""
    from ..training.device import amp_dtype
    from .layer_data import DTYPES

    dtypes = plan.dtypes or ("float32", str(amp_dtype(device)).removeprefix("torch."))
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown:
        raise ConfigError(f"dtypes={list(dtypes)!r} is not allowed; choose from {DTYPES}")
    return tuple(dict.fromkeys(dtypes))


QUICK_PLAN = Plan(ranges=QUICK, per_type=6, min_window_s=0.15, max_repeats=200, zoo=ZOO)


def make_plan(*, quick: bool = False, no_zoo: bool = False, per_type: int | None = None,
              seed: int = 0, types: str | Sequence[str] | None = None,
              dtypes: str | Sequence[str] | None = None, min_window_s: float | None = None,
              ranges: dict[str, tuple[int, int] | None] | None = None) -> Plan:
    """The plan `energy-study calibrate`'s options name: QUICK_PLAN with `quick`, else the full
    plan with the zoo's layers (none with `no_zoo`); a None option (or range) keeps the plan's
    own value. `types` and `dtypes`: names, or one comma-separated text. The values themselves
    are checked by `calibrate` (through `sample_configs`), before anything is measured."""
    plan = QUICK_PLAN if quick else Plan(zoo=ZOO)
    if no_zoo:
        plan = replace(plan, zoo=())
    overrides = {name: value for name, value in (ranges or {}).items() if value is not None}
    unknown = sorted(set(overrides) - {f.name for f in fields(Ranges)})
    if unknown:
        raise ConfigError(f"calibration range(s) {', '.join(unknown)} unknown; ranges: "
                          f"{', '.join(f.name for f in fields(Ranges))}")
    plan = replace(plan, ranges=replace(plan.ranges, **overrides), seed=seed)
    if per_type is not None:
        plan = replace(plan, per_type=per_type)
    if min_window_s is not None:
        plan = replace(plan, min_window_s=min_window_s)
    if types:
        plan = replace(plan, layer_types=_names(types))
    if dtypes:
        plan = replace(plan, dtypes=_names(dtypes))
    return plan


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value.split(",") if isinstance(value, str) else value))


#: A GPU window lasts at least this long: NVML's energy counter moves about every 100 ms, so a
#: window needs ten of its steps for a figure within about 10 %. On the H200 the quick plan's
#: windows were 3-130 ms (a layer call of ~30 us x at most 200 repeats): noise.
GPU_MIN_WINDOW_S = 1.0


def repeats_for(once_s: float, plan: Plan, device: torch.device) -> int:
    """Calls per metered window: enough to last the plan's window (on a GPU at least
    GPU_MIN_WINDOW_S, and uncapped, since the window's length bounds the time already)."""
    if device.type == "cuda":
        return max(1, math.ceil(max(plan.min_window_s, GPU_MIN_WINDOW_S) / once_s))
    return int(min(plan.max_repeats, max(1, math.ceil(plan.min_window_s / once_s))))


def sample_configs(plan: Plan) -> list[dict]:
    """The plan's configurations in a fixed order (interleaved by type, so a partial run
    covers every type), each with a config_id stable across reruns of the same plan."""
    plan.ranges.check()
    unknown = [t for t in plan.layer_types if t not in LAYER_TYPES]
    if unknown or not plan.layer_types:
        raise ConfigError(f"layer_types={list(plan.layer_types)!r} is not allowed; choose from {LAYER_TYPES}")
    if plan.per_type < 1:
        raise ConfigError(f"per_type={plan.per_type!r} is not allowed; must be >= 1")
    if not (isinstance(plan.seed, (int, np.integer)) and plan.seed >= 0):
        raise ConfigError(f"seed={plan.seed!r} is not allowed; must be an integer >= 0")
    check_window_s(plan.min_window_s)
    if plan.max_repeats < 1:
        raise ConfigError(f"max_repeats={plan.max_repeats!r} is not allowed; must be >= 1")
    if plan.reference_every < 1:
        raise ConfigError(f"reference_every={plan.reference_every!r} is not allowed; must be >= 1")
    rng = np.random.default_rng(plan.seed)
    r = plan.ranges
    configs = []
    for index in range(plan.per_type):
        for layer_type in plan.layer_types:
            config = {"layer_type": layer_type, "batch_size": _log_uniform(rng, r.batch_size)}
            if layer_type in ("Conv2d", "MaxPool2d"):
                config.update(_spatial(rng, r, layer_type))
            elif layer_type in ("BatchNorm2d", "AdaptiveAvgPool2d"):
                channels, image = _log_uniform(rng, r.channels), _log_uniform(rng, r.image_size)
                config.update(in_channels=channels, out_channels=channels, image_size=image,
                              elements=channels * image * image)
            elif layer_type == "Linear":
                config.update(in_features=_log_uniform(rng, r.features),
                              out_features=_log_uniform(rng, r.features))
            else:
                config["elements"] = _log_uniform(rng, r.elements)
            config["config_id"] = f"{plan.seed}-{r.key()}-{index}-{layer_type}"
            configs.append(config)
    return configs + zoo_configs(plan)


#: the parameters that make a layer configuration (its identity, for de-duplication)
_SHAPE_KEYS = ("layer_type", "batch_size", "in_channels", "out_channels", "image_size",
               "kernel_size", "stride", "padding", "in_features", "out_features", "elements")


def zoo_configs(plan: Plan) -> list[dict]:
    """The distinct layers (of the plan's types) that the plan's zoo models call for one batch
    of each zoo batch size, as configurations; traced on the meta device, so nothing runs.
    Each config_id names the layer's shape, stable across reruns and model orders."""
    from ..training.models import create_model
    from .layer_data import describe_call
    from .trace import trace_model

    configs: dict[tuple, dict] = {}
    for case in plan.zoo:
        knobs = {k: v for k, v in case.items() if k != "model"}
        model = create_model(case["model"], in_channels=ZOO_INPUT[0], image_size=ZOO_INPUT[1],
                             num_classes=10, seed=plan.seed, **knobs)
        for batch in plan.zoo_batch_sizes:
            for call in trace_model(model, ZOO_INPUT, batch).calls:
                row = describe_call(call)
                if row is None or row["layer_type"] not in plan.layer_types:
                    continue
                config = {k: (int(round(v)) if isinstance(v, float) else v)
                          for k, v in row.items() if k in _SHAPE_KEYS}
                if config["layer_type"] == "MaxPool2d":
                    config.pop("out_channels", None)
                shape = tuple(config.get(k) for k in _SHAPE_KEYS)
                digest = hashlib.sha1(repr(shape).encode()).hexdigest()[:8]
                configs.setdefault(shape, {**config, "config_id": f"zoo-{digest}-{config['layer_type']}"})
    return list(configs.values())


def check_window_s(value: float, name: str = "min_window_s") -> None:
    """A metered window's least length: a finite number of seconds > 0 (ConfigError if not)."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} is not allowed; must be a number of seconds > 0, "
                          "e.g. 0.5")


def _log_uniform(rng, bounds) -> int:
    low, high = bounds
    return int(min(high, max(low, round(math.exp(rng.uniform(math.log(low), math.log(high + 1)) - 1e-9)))))


def _spatial(rng, r: Ranges, layer_type: str) -> dict:
    for _ in range(1000):
        image = _log_uniform(rng, r.image_size)
        kernel = int(rng.integers(r.kernel_size[0], r.kernel_size[1] + 1))
        stride = int(rng.integers(r.stride[0], r.stride[1] + 1))
        padding = int(rng.integers(r.padding[0], r.padding[1] + 1))
        if padding <= kernel // 2 and kernel <= image + 2 * padding:  # what torch accepts
            channels = _log_uniform(rng, r.channels)
            out = _log_uniform(rng, r.channels) if layer_type == "Conv2d" else channels
            return {"in_channels": channels, "out_channels": out, "image_size": image,
                    "kernel_size": kernel, "stride": stride, "padding": padding}
    raise ConfigError(f"calibration ranges admit no valid {layer_type}: padding must be <= "
                      f"kernel_size // 2 and kernel_size <= image_size + 2 x padding")


def build_layer(config: dict, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    """The layer and one random input batch for a configuration."""
    kind, batch = config["layer_type"], config["batch_size"]
    if kind == "Conv2d":
        layer = nn.Conv2d(config["in_channels"], config["out_channels"], config["kernel_size"],
                          config["stride"], config["padding"])
        shape = (batch, config["in_channels"], config["image_size"], config["image_size"])
    elif kind == "MaxPool2d":
        layer = nn.MaxPool2d(config["kernel_size"], config["stride"], config["padding"])
        shape = (batch, config["in_channels"], config["image_size"], config["image_size"])
    elif kind == "Linear":
        layer = nn.Linear(config["in_features"], config["out_features"])
        shape = (batch, config["in_features"])
    elif kind in ("BatchNorm2d", "AdaptiveAvgPool2d"):
        layer = (nn.BatchNorm2d(config["in_channels"]) if kind == "BatchNorm2d"
                 else nn.AdaptiveAvgPool2d(1))
        shape = (batch, config["in_channels"], config["image_size"], config["image_size"])
    else:
        layer = {"ReLU": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh,
                 "Dropout": lambda: nn.Dropout(0.5)}.get(kind, lambda: nn.Softmax(dim=-1))()
        shape = (batch, config["elements"])
    return layer.to(device), torch.randn(shape, device=device)


def forward_fn(layer, x):
    """One forward pass of `layer` on `x` without gradients, as a function of no arguments."""
    def run():
        with torch.no_grad():
            layer(x)
    return run


def train_step_fn(layer, x):
    """One training step as the project's loop does it: forward, backward (also w.r.t. the
    input, as for any layer but the first), SGD with momentum and weight decay."""
    x = x.detach().requires_grad_(True)
    params = [p for p in layer.parameters()]
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9, weight_decay=5e-4) if params else None

    def run():
        out = layer(x)
        out.sum().backward()
        if optimizer:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        x.grad = None
    return run


_METERS: dict[str, object] = {}


def metered(fn, repeats: int, device: torch.device = torch.device("cpu")) -> tuple[float, float, str, str]:
    """(energy_j, seconds, method, kind) of `repeats` calls of fn, in one window of the project's
    meters (energy.meters.build_meters + EnergyMonitor): measured where the hardware allows,
    modelled where not. The energy is the sum of the component readings (cpu, gpu, ram); the
    assumed constant-power figure is used only when no component meter exists."""
    from ..energy import EnergyMonitor
    from ..energy.meters import build_meters
    from ..provenance import cpu_model

    key = str(device)
    if key not in _METERS:
        _METERS[key] = build_meters(["auto"], device, assumed_power_w=70.0, cpu_model=cpu_model())
    monitor = EnergyMonitor(_METERS[key].meters, device)
    monitor.begin_window("calibration")
    for _ in range(repeats):
        fn()
    window = monitor.end_window("calibration")
    readings = [r for r in window.readings if r.component != "assumed-board"] or window.readings
    kind = "measured" if all(r.kind == "measured" for r in readings) else "modelled"
    method = "+".join(dict.fromkeys(r.method for r in readings))
    return sum(r.energy_j for r in readings), window.duration_s, method, kind


def in_dtype(fn, dtype: str, device: torch.device):
    """fn under the device's autocast to `dtype` (as an amp run's forward and backward are:
    autocast-recorded ops run their backward in the same dtype); fn itself for float32."""
    if dtype == "float32":
        return fn
    cast = getattr(torch, dtype)

    def run():
        with torch.autocast(device.type, dtype=cast):
            fn()
    return run


def measure(config: dict, phase: str, plan: Plan, device: torch.device,
            dtype: str = "float32") -> dict:
    """One row: the energy and time of one pass (or step) in `dtype`, averaged over a metered
    window."""
    layer, x = build_layer(config, device)
    fn = in_dtype(forward_fn(layer, x) if phase == "forward" else train_step_fn(layer, x),
                   dtype, device)
    fn()  # warm-up: first-call allocation and kernel selection stay out of the window
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    once_s = max(time.perf_counter() - start, 1e-6)
    repeats = repeats_for(once_s, plan, device)
    energy_j, seconds, method, kind = metered(fn, repeats, device)
    row = {c: "" for c in COLUMNS}
    row.update({k: v for k, v in config.items() if k in row})
    if config["layer_type"] == "MaxPool2d":
        row["out_channels"] = config["in_channels"]
    row.update(phase=phase, dtype=dtype, repeats=repeats, energy_j=energy_j / repeats, seconds=seconds / repeats,
               method=method, kind=kind, seed=plan.seed)
    return row


def measure_reference(device: torch.device, seed: int = 0) -> dict:
    """One reference row (reference.py): the reference training step in fp32, the median of
    REFERENCE_WINDOWS metered windows of at least REFERENCE_WINDOW_S (on a GPU, fewer windows of
    its longer least length), the same in a calibration and before a prediction."""
    plan = Plan(min_window_s=REFERENCE_WINDOW_S, max_repeats=10_000, seed=seed)
    windows = REFERENCE_WINDOWS_GPU if device.type == "cuda" else REFERENCE_WINDOWS
    rows = sorted((measure(REFERENCE_CONFIG, "train_step", plan, device)
                   for _ in range(windows)), key=lambda row: row["energy_j"])
    return {**rows[len(rows) // 2], "phase": REFERENCE_PHASE, "macs": _macs(REFERENCE_CONFIG)}


def probe(device: torch.device) -> dict:
    """The reference step metered now, before a prediction: {"energy_j", "seconds"} per step."""
    steady_allocator()
    row = measure_reference(device)
    return {"energy_j": row["energy_j"], "seconds": row["seconds"]}


def machine_name(device: torch.device) -> str:
    """A file-name-safe name for the hardware a calibration stands for."""
    from ..provenance import cpu_model

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{cpu_model()}-{os.cpu_count()}cpu"
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", name.lower())).strip("-") or "machine"


def _header() -> str:
    """The first line of every calibration file this project writes."""
    buffer = io.StringIO()
    csv.DictWriter(buffer, COLUMNS, lineterminator="\n").writeheader()
    return buffer.getvalue()


def _check_ours(path: Path) -> str:
    """The text of an existing calibration file, if it is one of ours: its first line is exactly
    our header and all of it is text. Anything else is a file this project did not write, which
    is never appended to or replaced: WriteError, one line, nothing changed."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WriteError(f"{path} cannot be read: {error.strerror or error}") from None
    if data.startswith(_header().replace(",fingerprint\n", "\n").encode()):
        raise WriteError(f"{path} is a calibration file of an earlier energy-study, without the "
                         "machine fingerprint of its rows (nothing says which machine measured "
                         "them, so predictions never use it); it was left as it is: move it away "
                         "and calibrate again")
    if data.startswith(_header().replace("phase,dtype,", "phase,").encode()):
        raise WriteError(f"{path} is a calibration file of an earlier energy-study, without the "
                         "dtype column (all fp32); it was left as it is: move it away (it can "
                         "still be read as a fit) and calibrate again")
    if not data.startswith(_header().encode()):
        first = data.split(b"\n", 1)[0][:60]
        raise WriteError(f"{path} exists and is not a calibration file of energy-study (its first "
                         f"line is {first!r}, not the header {_header().strip()!r}); it was left as "
                         "it is: choose another --out-dir or --machine, or move the file away")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WriteError(f"{path} has our header but bytes that are not text at byte "
                         f"{error.start}; it was left as it is: move it away and calibrate again") from None


def _repair(path: Path, text: str) -> str:
    """Cut a half-written last line left by a killed calibration (our own file: checked)."""
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        with path.open("r+b") as handle:
            handle.truncate(len(text.encode("utf-8")))
    return text


def file_fingerprints(text: str) -> set[str]:
    """The machine fingerprints (digests) of a calibration's rows; "" for rows without one."""
    return {row.get("fingerprint") or "" for row in csv.DictReader(io.StringIO(text, newline=""))
            if row.get("energy_j")}


def _usable_energy(value: str | None) -> bool:
    """A row's energy the fit can use (layer_data keeps energy_j > 0): a finite, positive number."""
    try:
        return math.isfinite(number := float(value)) and number > 0
    except (TypeError, ValueError):
        return False


def _done(text: str) -> set[tuple[str, str, str]]:
    """The measurements a resume need not repeat: rows whose energy the fit can use (a NaN or
    non-positive row, which the fit drops, is measured again)."""
    return {(row.get("config_id", ""), row.get("phase", ""), row.get("dtype", ""))
            for row in csv.DictReader(io.StringIO(text, newline=""))
            if _usable_energy(row.get("energy_j"))}


def _create(path: Path) -> None:
    """A new calibration file holding our header, written whole under a temporary name and
    linked into place without replacing anything (a file that appeared meanwhile is kept, and
    refused by `_check_ours` unless it is ours)."""
    try:
        create_new(path, lambda tmp: tmp.write_text(_header(), encoding="utf-8"))
    except FileExistsError:
        pass


def _resolve_device(name: str | torch.device) -> torch.device:
    """The device to calibrate: the CPU or a CUDA GPU that exists here; ConfigError otherwise."""
    from ..training.device import resolve_device

    try:
        device = resolve_device(str(name))
    except EnergyStudyError:
        raise
    except (RuntimeError, ValueError) as error:  # torch.device("gpu"), "cuda:x"
        raise ConfigError(f"device={str(name)!r} is not a device ({' '.join(str(error).split())}); "
                          "use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={str(name)!r} is not supported by calibration; use 'cpu', "
                          "'cuda' or 'cuda:N'")
    return device


def _open_calibration(out_dir: str | Path, machine: str) -> tuple[Path, str]:
    """(the calibration file, its text), every check made before anything is written: the name
    is a plain file name, the folder can take files, an existing file is one of ours."""
    path = Path(out_dir) / check_file_name(machine, "machine")
    path = path.with_name(f"{path.name}.csv")
    check_output_file(path, "calibration file")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _create(path)
    return path, _repair(path, _check_ours(path))


def _append(path: Path, row: dict) -> None:
    buffer = io.StringIO()
    csv.DictWriter(buffer, COLUMNS, lineterminator="\n").writerow(row)
    with path.open("a", newline="") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())


def calibrate(plan: Plan = QUICK_PLAN, *, out_dir: str | Path = DEFAULT_DIR, machine: str | None = None,
              device: str | torch.device = "cpu", progress: bool = True) -> tuple[Path, int, int]:
    """Measure every (configuration, phase) of the plan not yet in the file. Returns (file, rows
    written now, rows already there)."""
    configs = sample_configs(plan)  # validates everything before any measurement
    device = _resolve_device(device)
    steady_allocator()  # rows priced as a training process pays them (allocator.py)
    machine = machine or machine_name(device)
    dtypes = plan_dtypes(plan, device)  # refused before any file is made
    path, text = _open_calibration(out_dir, machine)
    digest = fingerprint(device)["digest"]
    others = file_fingerprints(text) - {digest}
    if others:
        raise WriteError(f"{path} was measured on another machine (fingerprint "
                         f"{', '.join(sorted(others))}; this one is {digest}): its rows are never "
                         "mixed with this machine's; give --machine another name or move it away")
    done = _done(text)
    todo = [(c, phase, dtype) for c in configs for dtype in dtypes
            for phase in ("forward", "train_step") if (c["config_id"], phase, dtype) not in done]
    total = 2 * len(dtypes) * len(configs)
    already = total - len(todo)
    from tqdm.auto import tqdm

    torch.manual_seed(plan.seed)
    bar = tqdm(total=total, initial=already, desc=f"calibrating {machine}",
               unit="meas", disable=not progress)
    try:
        for index, (config, phase, dtype) in enumerate(todo):
            if index % plan.reference_every == 0:  # the machine's state around these rows
                _append(path, {**measure_reference(device, plan.seed), "machine": machine,
                               "fingerprint": digest})
            row = measure(config, phase, plan, device, dtype)
            row["machine"], row["fingerprint"] = machine, digest
            row["macs"] = _macs(config)
            _append(path, row)
            bar.update(1)
        if todo:
            _append(path, {**measure_reference(device, plan.seed), "machine": machine,
                           "fingerprint": digest})
    finally:
        bar.close()
    return path, len(todo), already


def _macs(config: dict) -> int:
    import pandas as pd

    table = pd.DataFrame([config]).reindex(columns=["layer_type", "batch_size", "in_channels",
                                                     "out_channels", "image_size", "kernel_size",
                                                     "stride", "padding", "in_features",
                                                     "out_features"])
    return int(count_macs(table.astype({c: float for c in table.columns if c != "layer_type"})).iloc[0])
