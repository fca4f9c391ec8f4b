"""Per-layer energy measurements in one long format: the bundled Getzner et al. (2023) data and
this project's own calibration files (calibration/<machine>.csv) read into the same table, and
the regression features computed from it.

One row = one layer configuration measured in one phase (`forward` or `train_step`) at one
compute dtype (`float32`, or the autocast dtype a mixed-precision run computes in: `bfloat16` on
a CPU, `float16` on CUDA): layer parameters, its MACs, and the energy (J) and time (s) of ONE
pass of one batch.
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..folders import CALIBRATION
from .reference import reference_state

# The long format: also the header of a calibration file.
PARAMETERS = ["batch_size", "in_channels", "out_channels", "image_size", "kernel_size", "stride",
              "padding", "in_features", "out_features", "elements"]
#: `fingerprint`: the digest of the machine a row was measured on (provenance.fingerprint): a
#: calibration is used for predictions only on a machine with the same digest
COLUMNS = ["machine", "layer_type", "phase", "dtype", *PARAMETERS, "macs", "repeats", "energy_j",
           "seconds", "method", "kind", "seed", "config_id", "fingerprint"]
#: The compute dtypes a fit can know: fp32 and the autocast dtypes of amp runs.
DTYPES = ["float32", "bfloat16", "float16"]
FP32 = "float32"
REQUIRED = ["layer_type", "phase", "batch_size", "macs", "energy_j"]
#: The element-wise types a calibration adds beside Getzner's (the ResNets' and the MLP's
#: layers): their work is the elements they touch, like an activation's.
ELEMENTWISE = ["BatchNorm2d", "AdaptiveAvgPool2d", "Dropout"]
LAYER_TYPES = ["Conv2d", "Linear", "MaxPool2d", "ReLU", "Sigmoid", "Tanh", "Softmax", *ELEMENTWISE]
ACTIVATIONS = ["ReLU", "Sigmoid", "Tanh", "Softmax"]
PHASES = ["forward", "train_step"]

GETZNER_FILES = {"Conv2d": "conv2d.csv", "Linear": "linear.csv", "MaxPool2d": "maxpool2d.csv",
                 "ReLU": "relu.csv", "Sigmoid": "sigmoid.csv", "Tanh": "tanh.csv",
                 "Softmax": "softmax.csv"}
GETZNER_MACHINE = "Intel Xeon Gold 5120, 2 cores, CPU package energy (RAPL via CodeCarbon)"
KWH_TO_J = 3.6e6


def conv_output_side(image_size, kernel_size, stride, padding):
    return np.floor((image_size + 2 * padding - kernel_size) / stride) + 1


def count_macs(table: pd.DataFrame) -> pd.Series:
    """MACs of one pass without bias additions (the trace's convention): Conv2d: outputs x
    in_channels x k^2; Linear: batch x in x out; other layers 0."""
    t = table
    side = conv_output_side(t.image_size, t.kernel_size, t.stride, t.padding)
    conv = t.batch_size * t.out_channels * side ** 2 * t.in_channels * t.kernel_size ** 2
    linear = t.batch_size * t.in_features * t.out_features
    return pd.Series(np.select([t.layer_type == "Conv2d", t.layer_type == "Linear"],
                               [conv, linear], 0.0), index=t.index)


@lru_cache(maxsize=1)
def getzner2023() -> pd.DataFrame:
    """The bundled measurements of Getzner, Charpentier & Günnemann (2023; MIT; see
    energy_lib/data/getzner2023/README.md) in the long format.

    Energy per pass: the shipped `cpu_energy` (kWh) is already per forward pass -- these files
    are the authors' output of their normalising step, which divides every energy column by
    `forward_passes` and averages the repeats (hence rep_no values like 1.5). Evidence in the
    data: cpu_energy x 3.6e6 equals cpu_power x duration / forward_passes (~75 W x the time of
    one pass) for the median row to within 1 % (Conv2d, Linear, MaxPool2d, ReLU) and 4 % (the
    other activations). So energy_j = cpu_energy x 3.6e6; dividing by
    forward_passes again would make energy grow with the square of the time per pass.
    MACs are recounted without bias (the authors' ptflops counts include one add per output).
    """
    frames = []
    for layer_type, name in GETZNER_FILES.items():
        text = resources.files("energy_lib").joinpath(f"data/getzner2023/{name}")
        with resources.as_file(text) as path:
            raw = pd.read_csv(path)
        raw = raw[raw["cpu_energy"] > 0]
        frame = pd.DataFrame({"layer_type": layer_type, "phase": "forward",
                              "batch_size": raw["batch_size"].astype(float)})
        for column in ("in_channels", "out_channels", "image_size", "kernel_size", "stride", "padding"):
            frame[column] = raw[column].astype(float) if column in raw else np.nan
        if layer_type == "MaxPool2d":
            frame["out_channels"] = frame["in_channels"]
        frame["in_features"] = raw["input_size"].astype(float) if layer_type == "Linear" else np.nan
        frame["out_features"] = raw["output_size"].astype(float) if layer_type == "Linear" else np.nan
        frame["elements"] = raw["input_size"].astype(float) if layer_type in ACTIVATIONS else np.nan
        frame["energy_j"] = raw["cpu_energy"] * KWH_TO_J
        frame["seconds"] = raw["duration"] / raw["forward_passes"]
        frame["repeats"] = raw["forward_passes"]
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table["macs"] = count_macs(table)
    table["machine"] = GETZNER_MACHINE
    table["method"], table["kind"] = "rapl-codecarbon", "measured"
    table["dtype"] = FP32  # the authors measured fp32 layers only
    return table


def read_calibration(path: str | Path) -> pd.DataFrame:
    """A calibration file's layer rows in the long format. Missing, empty or malformed ->
    ConfigError, one line naming the file and what it needs."""
    return read_calibration_with_reference(path)[0]


def read_calibration_with_reference(path: str | Path) -> tuple[pd.DataFrame, float | None]:
    """(read_calibration's rows, the file's median reference step in J: the machine state its
    rows now stand for; None when the file holds no reference rows)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"calibration file {str(file)!r} does not exist; {available_fits_text()}")
    try:
        table = pd.read_csv(file, comment="#", on_bad_lines="skip")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        table = pd.DataFrame()
    missing = [c for c in REQUIRED if c not in table.columns]
    if table.empty or missing:
        what = f"lacks columns {missing}" if missing and not table.empty else "is empty"
        raise ConfigError(f"calibration file {str(file)!r} {what}; a calibration needs the columns "
                          f"{','.join(COLUMNS)} (write one with `energy-study calibrate`)")
    table, reference_j = reference_state(table)
    if "dtype" not in table:  # written before calibrations measured amp: every row is fp32
        table["dtype"] = FP32
    table["dtype"] = table["dtype"].fillna(FP32).astype(str)
    for column in PARAMETERS + ["macs", "energy_j", "seconds", "repeats"]:
        if column in table:
            table[column] = pd.to_numeric(table[column], errors="coerce")
        else:
            table[column] = np.nan
    valid = (table["layer_type"].isin(LAYER_TYPES) & table["phase"].isin(PHASES)
             & table["dtype"].isin(DTYPES) & (table["energy_j"] > 0) & (table["batch_size"] >= 1))
    if not valid.any():
        raise ConfigError(f"calibration file {str(file)!r} has no usable rows; need layer_type in "
                          f"{LAYER_TYPES}, phase in {PHASES}, dtype in {DTYPES}, energy_j > 0, batch_size >= 1")
    return table[valid].reset_index(drop=True), reference_j


def available_fits_text(calibration_dir: str | Path = CALIBRATION) -> str:
    found = sorted(str(p) for p in Path(calibration_dir).glob("*.csv"))
    return ("available fits: 'getzner2023'" + (f" and calibration files {found}" if found else
            f" (no calibration files under {str(calibration_dir)!r})"))


def features(table: pd.DataFrame, layer_type: str) -> tuple[pd.DataFrame, np.ndarray]:
    """(features, work) for rows of one layer type. Work is what the energy is divided by before
    fitting -- MACs for Conv2d/Linear, window comparisons for MaxPool2d, elements for
    activations -- so the model learns energy per unit of work (an efficiency), never an
    additive per-layer constant. Features are logs of the layer parameters plus the memory
    traffic per unit of work (bytes of input + output + weights, fp32)."""
    t = table
    batch = t["batch_size"].to_numpy(float)
    if layer_type in ("Conv2d", "MaxPool2d"):
        side = conv_output_side(t.image_size, t.kernel_size, t.stride, t.padding).to_numpy(float)
        c_out = t["out_channels"].to_numpy(float)
        c_in = t["in_channels"].to_numpy(float)
        inputs = batch * c_in * t["image_size"].to_numpy(float) ** 2
        outputs = batch * c_out * side ** 2
        k2 = t["kernel_size"].to_numpy(float) ** 2
        if layer_type == "Conv2d":
            work, weights = t["macs"].to_numpy(float), c_in * c_out * k2
        else:
            work, weights = outputs * k2, 0.0
        named = {"log_work": np.log(work), "log_batch": np.log(batch), "log_in_channels": np.log(c_in),
                 "log_kernel": np.log(t["kernel_size"].to_numpy(float)),
                 "log_stride": np.log(t["stride"].to_numpy(float)),
                 "log_image": np.log(t["image_size"].to_numpy(float)),
                 "padding": t["padding"].to_numpy(float),
                 "log_bytes_per_work": np.log(4 * (inputs + outputs + weights) / work)}
        if layer_type == "Conv2d":
            named["log_out_channels"] = np.log(c_out)
    elif layer_type == "Linear":
        n_in, n_out = t["in_features"].to_numpy(float), t["out_features"].to_numpy(float)
        work = t["macs"].to_numpy(float)
        named = {"log_work": np.log(work), "log_batch": np.log(batch), "log_in": np.log(n_in),
                 "log_out": np.log(n_out),
                 "log_bytes_per_work": np.log(4 * (batch * (n_in + n_out) + n_in * n_out) / work)}
    else:
        elements = t["elements"].to_numpy(float)
        work = batch * elements
        named = {"log_work": np.log(work), "log_batch": np.log(batch),
                 "log_elements": np.log(elements)}
    return pd.DataFrame(named, index=t.index), work


def describe_call(call) -> dict | None:
    """A traced layer call in the long format's parameter columns, or None for types no fit
    knows. Non-square images and kernels enter as geometric means."""
    from torch import nn

    m, shape = call.module, call.input_shape
    batch = shape[0]
    row = {"layer_type": type(m).__name__, "batch_size": batch, "macs": call.macs}
    if isinstance(m, nn.Conv2d):
        row["layer_type"] = "Conv2d"
        row.update(in_channels=m.in_channels // m.groups, out_channels=m.out_channels,
                   image_size=_geo(shape[-2:]), kernel_size=_geo(m.kernel_size),
                   stride=_geo(m.stride), padding=_padding(m))
    elif isinstance(m, nn.Linear):
        row.update(layer_type="Linear", batch_size=math.prod(shape[:-1]),
                   in_features=m.in_features, out_features=m.out_features)
    elif isinstance(m, nn.MaxPool2d):
        kernel = _pairs(m.kernel_size)
        stride = _pairs(m.stride if m.stride is not None else m.kernel_size)
        row.update(layer_type="MaxPool2d", in_channels=math.prod(shape[1:-2]),
                   out_channels=math.prod(shape[1:-2]), image_size=_geo(shape[-2:]),
                   kernel_size=_geo(kernel), stride=_geo(stride), padding=_geo(_pairs(m.padding)))
    elif isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.Dropout)):
        row.update(layer_type=type(m).__name__, elements=math.prod(shape[1:]))
    elif isinstance(m, (nn.BatchNorm2d, nn.AdaptiveAvgPool2d)):
        row.update(layer_type=type(m).__name__, in_channels=shape[1],
                   image_size=_geo(shape[-2:]), elements=math.prod(shape[1:]))
    else:
        return None
    return row


def _pairs(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _geo(values) -> float:
    values = [float(v) for v in values]
    return math.prod(values) ** (1 / len(values))


def _padding(conv) -> float:
    if isinstance(conv.padding, str):  # 'same' keeps the size, 'valid' adds nothing
        return 0.0 if conv.padding == "valid" else (_geo(conv.kernel_size) - 1) / 2
    return _geo(conv.padding)
