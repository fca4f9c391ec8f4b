"""What a run may set about its model and pruning, checked without importing torch: model names
(registered or `timm:<name>`) and their knobs, init schemes, pruning settings.

A run's configuration is validated wherever it is read (the runner, each cell's kernel, a Dask
worker, the Tracker) before anything is built; importing torch for that took 1.5 s of every
cell's kernel, which training/models.py and training/pruning.py need only to build and prune.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from ..errors import ConfigError

TIMM_PREFIX = "timm:"
TIMM_INSTALL = 'pip install "energy-lib[timm]"'
INIT_SCHEMES = ("default", "xavier", "kaiming")

#: The models this package builds and the knobs beyond the four every constructor takes that a
#: run may set (training/models.py registers each one's constructor under the same name;
#: register_model adds a user's own).
MODEL_KNOBS: dict[str, tuple[str, ...]] = {
    "paper_cnn": ("width",),
    "resnet18": ("width", "shortcut"),
    "resnet34": ("width", "shortcut"),
    "resnet50": ("width", "shortcut"),
    "mlp": ("width", "depth"),
}
TIMM_KNOBS: tuple[str, ...] = ("resize",)
# Allowed values per knob, checked in one place so config and create_model agree.
_KNOB_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "width": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
              "a number > 0"),
    "shortcut": (lambda v: isinstance(v, bool), "true or false"),
    "depth": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
              "an integer >= 1"),
    "resize": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 8),
               "an integer >= 8 (pixels) or none"),
}


class UnknownModel(ConfigError, KeyError):
    """A model name that is neither registered nor a timm model. A KeyError too, since it is a
    failed registry lookup; prints as a plain line (KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def model_names() -> list[str]:
    """Registered names, for messages and config validation (timm models come as `timm:<name>`)."""
    return sorted(MODEL_KNOBS)


def import_timm():
    """timm, or a one-line ConfigError naming the extra that installs it."""
    try:
        import timm
    except ImportError:
        raise ConfigError(f"timm models need the optional timm package: {TIMM_INSTALL}") from None
    return timm


def _unknown_model_message(name: str) -> str:
    close = difflib.get_close_matches(name, model_names(), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (f"model={name!r} is not registered{hint}; registered: {', '.join(model_names())}; "
            f"or any timm model as 'timm:<name>' (needs {TIMM_INSTALL})")


def check_model_name(name: str) -> None:
    """Raise UnknownModel / ConfigError for a name create_model would not accept. For timm names
    this imports timm (a second or so) but builds nothing."""
    if not isinstance(name, str):
        raise UnknownModel(f"model={name!r} must be a string; registered: {', '.join(model_names())}")
    if name.startswith(TIMM_PREFIX):
        timm_name = name[len(TIMM_PREFIX):]
        timm = import_timm()
        if not timm_name or not timm.is_model(timm_name):
            close = difflib.get_close_matches(timm_name, timm.list_models(), n=5, cutoff=0.6)
            hint = (f"; close matches: {', '.join(TIMM_PREFIX + c for c in close)}" if close
                    else "; see timm.list_models()")
            raise UnknownModel(f"model={name!r}: timm has no model {timm_name!r}{hint}")
        return
    if name not in MODEL_KNOBS:
        raise UnknownModel(_unknown_model_message(name))


def model_knobs(name: str) -> tuple[str, ...]:
    """The knobs `name` accepts (timm models: `resize` only; they have no width multiplier)."""
    if name.startswith(TIMM_PREFIX):
        return TIMM_KNOBS
    check_model_name(name)
    return MODEL_KNOBS[name]


def check_model_knobs(name: str, **knobs: Any) -> None:
    """Refuse a knob the model does not have, or a knob value that is not allowed.

    Pass the knobs the run sets (`width=1.0` counts as unset: it is every model's natural size,
    so it is allowed on timm models too).
    """
    allowed = model_knobs(name)
    for knob, value in knobs.items():
        if knob == "width" and value == 1.0 and not isinstance(value, bool):
            continue
        if knob not in allowed:
            has = ", ".join(allowed) if allowed else "none"
            raise ConfigError(f"{knob}={value!r} is not a knob of model {name!r}; "
                              f"its knobs: {has}")
        rule = _KNOB_RULES.get(knob)
        if rule is not None and not rule[0](value):
            raise ConfigError(f"{knob}={value!r} for model {name!r} must be {rule[1]}")


PRUNE_METHODS = ("none", "unstructured", "structured")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_prune_settings(method: str, *, amount: float, every_epochs: int,
                         target_sparsity: float, current_sparsity: float = 0.0,
                         epochs: int | None = None) -> None:
    """Raise ConfigError (one line: field, value, what is allowed) for settings that cannot
    work; nothing is checked for method "none"."""
    if method not in PRUNE_METHODS:
        raise ConfigError(f"prune={method!r} is not allowed; choose one of {', '.join(PRUNE_METHODS)}")
    if method == "none":
        return
    if not _is_number(amount) or not 0 < amount < 1:
        raise ConfigError(f"prune_amount={amount!r} must be a fraction in (0, 1): the share of the "
                          "remaining weights or channels removed at each pruning step")
    if not isinstance(every_epochs, int) or isinstance(every_epochs, bool) or every_epochs < 1:
        raise ConfigError(f"prune_every_epochs={every_epochs!r} must be an integer >= 1")
    if epochs is not None and every_epochs >= epochs:
        raise ConfigError(f"prune_every_epochs={every_epochs} with epochs={epochs} never prunes a "
                          "model that is trained afterwards; it must be < epochs")
    if not _is_number(target_sparsity) or not 0 < target_sparsity < 1:
        raise ConfigError(f"prune_target_sparsity={target_sparsity!r} must be in (0, 1)")
    if target_sparsity <= current_sparsity:
        raise ConfigError(f"prune_target_sparsity={target_sparsity} is already reached: the model's "
                          f"sparsity is {current_sparsity:.4f}")


def check_init_scheme(scheme: str) -> None:
    if scheme not in INIT_SCHEMES:
        raise ConfigError(f"init={scheme!r} is not allowed; choose one of {', '.join(INIT_SCHEMES)}")
