"""RunConfig: every run parameter, its type and its rule, in one place.

A config is validated when it is built, before any data is loaded, so a typo in a study file or a
papermill `-p` flag fails in a second with a message that names the field, the value and what is
allowed -- not after an hour of training.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .training.datasets import DATASETS
from .errors import ConfigError

PRECISIONS = ("fp32", "amp", "bf16")
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("none", "cosine", "step")
PIPELINES = ("tensor", "torchvision")
METER_NAMES = ("auto", "nvml", "rapl", "cpu-model", "ram-model", "constant-power", "codecarbon")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")
#: The largest whole number any field takes (a signed 64-bit integer: what torch's generators
#: and integer tensors hold, with room for `seed + 1`). Checked before anything is built.
MAX_WHOLE_NUMBER = 2**63 - 1


@dataclass(frozen=True)
class RunConfig:
    """One cell of a study. Defaults reproduce the original T4 study (see studies/paper.toml)."""

    study: str = "adhoc"
    cell: str = ""
    model: str = "paper_cnn"  # a registered model or "timm:<name>" (the timm extra)
    width: float = 1.0
    shortcut: bool | None = None  # ResNets: false removes every shortcut (the plain net)
    depth: int | None = None  # mlp: hidden layers (None: the model's default, 3)
    resize: int | None = None  # timm models: resize each batch on the device to N x N
    init: str = "default"  # default | xavier | kaiming
    precision: str = "fp32"
    dataset: str = "cifar10"
    epochs: int = 30
    batch_size: int = 128
    eval_batch_size: int | None = None  # None: same as batch_size (as the original study)
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float | None = None  # SGD only; None means 0.9 (the original study)
    weight_decay: float = 5e-4
    lr_schedule: str = "none"  # none | cosine (per epoch, to 0) | step (x lr_gamma every lr_step_epochs)
    lr_step_epochs: int = 10
    lr_gamma: float = 0.1
    prune: str = "none"  # none | unstructured (global magnitude masks) | structured (channels)
    prune_every_epochs: int = 5
    prune_amount: float = 0.2  # share of the remaining weights/channels removed per step
    prune_target_sparsity: float = 0.5
    seed: int = 0
    device: str = "auto"  # auto (CUDA if visible, else CPU) | cpu | cuda | cuda:N | mps
    train_subset: int | None = None
    test_subset: int | None = None
    data_dir: str = "data"
    download: bool = True
    pipeline: str = "tensor"
    random_crop: bool = True
    crop_padding: int = 4
    random_flip: bool = True
    channels_last: bool = True
    torch_compile: bool = False  # faster steps after ~40 s of compiling (2-core CPU): off by default
    num_workers: int = 2
    assumed_power_w: float = 70.0  # the original study's assumed T4 board power
    meters: str = "auto"  # comma-separated METER_NAMES; "codecarbon" adds CodeCarbon alongside
    cpu_tdp_w: float | None = None  # None: CodeCarbon's CPU table, else 85 W
    ram_power_w: float | None = None  # None: 3 W per 8 GB installed
    idle_s: float = 3.0  # idle baseline measured before the first epoch; 0 disables
    idle_after_s: float = 1.0  # idle measured again after training (drift check); 0 disables
    sample_period_s: float = 0.5  # power timeline period (<= 1 s)
    country: str = ""  # ISO 3166-1 alpha-3 for carbon intensity; "" = world average
    pue: float = 1.0  # data-centre power usage effectiveness
    carbon_intensity_g_per_kwh: float | None = None  # overrides the country's figure
    predict_after_epochs: int = 1  # extrapolate the run's energy after k epochs (0 or >= epochs: not)
    contention_threshold: float = 0.25  # contended: others' + steal share of the CPU above this

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _coerce(f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        for rule in _RULES:
            rule(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        """Build from a mapping (study file, papermill parameters); unknown names are errors."""
        unknown = sorted(set(values) - set(FIELD_NAMES))
        if unknown:
            raise ConfigError(
                f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"allowed: {', '.join(FIELD_NAMES)}"
            )
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    @property
    def meter_names(self) -> list[str]:
        """`meters` as a list: "auto, codecarbon" -> ["auto", "codecarbon"]."""
        return [name.strip() for name in self.meters.split(",") if name.strip()]

    @property
    def model_knobs(self) -> dict[str, Any]:
        """The model knobs this config sets (None: the model's default)."""
        return {k: getattr(self, k) for k in ("shortcut", "depth", "resize")
                if getattr(self, k) is not None}

    @property
    def effective_momentum(self) -> float:
        return 0.9 if self.momentum is None else self.momentum

    @property
    def train_size(self) -> int:
        return self.train_subset or DATASETS[self.dataset].train_size

    @property
    def test_size(self) -> int:
        return self.test_subset or DATASETS[self.dataset].test_size


FIELD_NAMES = tuple(f.name for f in fields(RunConfig))


def _field_types() -> dict[str, tuple[type, bool]]:
    """name -> (base type, whether None is allowed), read from RunConfig's annotations: the
    annotations are the one statement of each field's type."""
    hints = typing.get_type_hints(RunConfig)
    types = {}
    for name in FIELD_NAMES:
        hint = hints[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) != len(typing.get_args(hint))
        base = args[0] if optional else hint
        if len(args) > 1 or base not in (bool, int, float, str):
            raise TypeError(f"RunConfig.{name}: unsupported annotation {hint!r}")
        types[name] = (base, optional)
    return types


_FIELD_TYPES = _field_types()


def _shown(value: Any) -> str:
    """A value for a one-line message: a 400-digit number is shortened, not printed whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:12]}...({len(text)} characters)"


def _coerce(name: str, value: Any) -> Any:
    """Check the type of one field; accept ints for floats and whole floats for ints; every
    number within what a float or a signed 64-bit integer holds."""
    kind, optional = _FIELD_TYPES[name]
    if value is None and optional:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}={_shown(value)} is not allowed; use true or false")
    if kind is str:
        if isinstance(value, str):  # a value pasted with a newline means the value without it;
            return value.strip() or value  # a blank one stays as typed, for its rule to name
        raise ConfigError(f"{name}={_shown(value)} is not allowed; expected text")
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is float:
        try:
            number = float(value) if is_number else math.nan
        except OverflowError:  # an int beyond any float
            number = math.inf
        if math.isfinite(number):
            return number
        raise ConfigError(f"{name}={_shown(value)} is not allowed; expected a finite number")
    whole = None
    if isinstance(value, int) and is_number:
        whole = value
    elif is_number and math.isfinite(value) and float(value).is_integer():
        whole = int(value)
    if whole is not None and abs(whole) <= MAX_WHOLE_NUMBER:
        return whole
    if whole is not None:
        raise ConfigError(f"{name}={_shown(value)} is not allowed; whole numbers here are at "
                          f"most 2**63 - 1 ({MAX_WHOLE_NUMBER})")
    extra = " or none" if optional else ""
    raise ConfigError(f"{name}={_shown(value)} is not allowed; expected a whole number{extra}")


def _one_of(name: str, allowed: tuple[str, ...] | list[str]):
    def rule(config: RunConfig) -> None:
        value = getattr(config, name)
        if value not in allowed:
            raise ConfigError(f"{name}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
    return rule


def _at_least(name: str, low: float, strict: bool = False):
    def rule(config: RunConfig) -> None:
        value = getattr(config, name)
        if value is None:
            return
        if value < low or (strict and value == low):
            bound = f"> {low:g}" if strict else f">= {low:g}"
            raise ConfigError(f"{name}={value!r} is not allowed; must be {bound}")
    return rule


def _momentum_fits_optimizer(config: RunConfig) -> None:
    if config.momentum is None:
        return
    if config.optimizer != "sgd":
        raise ConfigError(f"momentum={config.momentum!r} is not allowed with "
                          f"optimizer={config.optimizer!r}: Adam's betas play that part; "
                          "drop momentum or use optimizer='sgd'")
    if not 0 <= config.momentum < 1:
        raise ConfigError(f"momentum={config.momentum!r} is not allowed; must be in [0, 1)")


def _model_and_knobs(config: RunConfig) -> None:
    from .training.settings import check_init_scheme, check_model_knobs, check_model_name

    check_model_name(config.model)
    check_model_knobs(config.model, width=config.width, **config.model_knobs)
    check_init_scheme(config.init)


def _pruning(config: RunConfig) -> None:
    from .training.settings import check_prune_settings

    check_prune_settings(config.prune, amount=config.prune_amount,
                         every_epochs=config.prune_every_epochs,
                         target_sparsity=config.prune_target_sparsity, epochs=config.epochs)


def _device_form(config: RunConfig) -> None:
    if not _DEVICE_PATTERN.match(config.device):
        raise ConfigError(f"device={config.device!r} is not allowed; use auto, cpu, cuda, cuda:N "
                          "or mps")


def _subsets_fit(config: RunConfig) -> None:
    spec = DATASETS[config.dataset]
    for name, limit in (("train_subset", spec.train_size), ("test_subset", spec.test_size)):
        value = getattr(config, name)
        if value is not None and value > limit:
            raise ConfigError(
                f"{name}={value} is larger than {config.dataset}'s split of {limit} images; "
                f"use 1..{limit} or none for all"
            )


def _batch_fits(config: RunConfig) -> None:
    if config.batch_size > config.train_size:
        raise ConfigError(
            f"batch_size={config.batch_size} is larger than the training set "
            f"({config.train_size} images); use 1..{config.train_size}"
        )


def _non_empty(name: str):
    def rule(config: RunConfig) -> None:
        value = getattr(config, name)
        if not value.strip():
            raise ConfigError(f"{name}={value!r} is not allowed; give a path")
    return rule


def _meter_names(config: RunConfig) -> None:
    names = config.meter_names
    if not names or any(n not in METER_NAMES for n in names):
        raise ConfigError(f"meters={config.meters!r} is not allowed; give a comma-separated list "
                          f"of: {', '.join(METER_NAMES)}")


def _codecarbon_ready(config: RunConfig) -> None:
    import importlib.util

    if "codecarbon" not in config.meter_names:
        return
    if importlib.util.find_spec("codecarbon") is None:
        raise ConfigError("meters includes 'codecarbon' but CodeCarbon is not installed; "
                          "pip install 'energy-lib[codecarbon]' or drop it from meters")
    if not config.country:
        raise ConfigError("meters includes 'codecarbon': its offline tracker needs country "
                          "(ISO 3166-1 alpha-3, e.g. 'FRA')")


def _sample_period(config: RunConfig) -> None:
    if not 0 < config.sample_period_s <= 1:
        raise ConfigError(f"sample_period_s={config.sample_period_s!r} is not allowed; "
                          "must be in (0, 1] seconds")


def _contention_threshold(config: RunConfig) -> None:
    if not 0 <= config.contention_threshold <= 1:
        raise ConfigError(f"contention_threshold={config.contention_threshold!r} is not allowed; "
                          "must be in [0, 1] (a share of the machine's CPU capacity)")


def _known_country(config: RunConfig) -> None:
    from .energy.carbon import check_country  # imports nothing of the package but errors

    object.__setattr__(config, "country", check_country(config.country))


_RULES = (
    _at_least("width", 0, strict=True),
    _model_and_knobs,
    _one_of("optimizer", OPTIMIZERS),
    _one_of("lr_schedule", LR_SCHEDULES),
    _at_least("lr_step_epochs", 1),
    _at_least("lr_gamma", 0, strict=True),
    _pruning,
    _one_of("precision", PRECISIONS),
    _one_of("dataset", list(DATASETS)),
    _at_least("epochs", 1),
    _at_least("batch_size", 1),
    _at_least("eval_batch_size", 1),
    _at_least("lr", 0, strict=True),
    _momentum_fits_optimizer,
    _at_least("weight_decay", 0),
    _at_least("seed", 0),
    _device_form,
    _at_least("train_subset", 1),
    _at_least("test_subset", 1),
    _subsets_fit,
    _batch_fits,
    _non_empty("data_dir"),
    _one_of("pipeline", PIPELINES),
    _at_least("crop_padding", 0),
    _at_least("num_workers", 0),
    _at_least("assumed_power_w", 0, strict=True),
    _meter_names,
    _at_least("cpu_tdp_w", 0, strict=True),
    _at_least("ram_power_w", 0, strict=True),
    _at_least("idle_s", 0),
    _at_least("idle_after_s", 0),
    _sample_period,
    _known_country,
    _codecarbon_ready,
    _at_least("pue", 0, strict=True),
    _at_least("carbon_intensity_g_per_kwh", 0),
    _at_least("predict_after_epochs", 0),
    _contention_threshold,
)
