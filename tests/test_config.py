"""RunConfig rules: every bad value fails at construction with a message naming the field and the
value; and device.resolve_runtime's device/precision decisions on this CPU-only machine."""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch

from energy_lib import ConfigError, RunConfig
from energy_lib.config import FIELD_NAMES
from energy_lib.training.device import describe_accelerator, resolve_device, resolve_runtime


def make(**values) -> RunConfig:
    return RunConfig.from_dict(values)


def error_of(**values) -> str:
    with pytest.raises(ConfigError) as info:
        make(**values)
    return str(info.value)


# ------------------------------------------------------------------------------------------
# names and types
# ------------------------------------------------------------------------------------------

def test_defaults_are_valid_and_match_the_original_study():
    config = RunConfig()
    assert (config.width, config.precision, config.dataset) == (1.0, "fp32", "cifar10")
    assert (config.epochs, config.batch_size, config.lr) == (30, 128, 0.1)
    assert config.assumed_power_w == 70.0
    assert config.train_size == 50_000 and config.test_size == 10_000


def test_unknown_parameter_is_named():
    message = error_of(widht=2)
    assert "unknown parameter 'widht'" in message
    assert "allowed:" in message and "width" in message


def test_several_unknown_parameters_are_all_named():
    message = error_of(widht=2, epocs=3, lr=0.1)
    assert "unknown parameters" in message
    assert "'epocs'" in message and "'widht'" in message
    assert "'lr'" not in message.split(";")[0]


def test_unknown_parameter_is_a_value_error_too():
    with pytest.raises(ValueError):
        make(nonsense=1)


@pytest.mark.parametrize("value", [True, False])
def test_bool_is_not_a_width(value):
    message = error_of(width=value)
    assert f"width={value!r}" in message and "number" in message


def test_string_width_rejected():
    message = error_of(width="2")
    assert "width='2'" in message and "expected a finite number" in message


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_width_rejected(value):
    message = error_of(width=value)
    assert f"width={value!r}" in message and "finite" in message


@pytest.mark.parametrize("field", ["lr", "momentum", "weight_decay", "assumed_power_w"])
def test_nan_rejected_for_every_float(field):
    message = error_of(**{field: math.nan})
    assert f"{field}=nan" in message


@pytest.mark.parametrize("field,value", [("epochs", 2.5), ("batch_size", 64.5), ("seed", 0.1),
                                          ("train_subset", 100.5), ("crop_padding", 1.5)])
def test_non_whole_number_rejected_for_ints(field, value):
    message = error_of(**{field: value})
    assert f"{field}={value!r}" in message and "whole number" in message


@pytest.mark.parametrize("field", ["epochs", "batch_size", "seed", "num_workers"])
def test_nan_and_text_rejected_for_ints(field):
    assert f"{field}=nan" in error_of(**{field: math.nan})
    assert f"{field}='3'" in error_of(**{field: "3"})


def test_bool_rejected_for_int():
    assert "epochs=True" in error_of(epochs=True)


def test_optional_int_message_mentions_none():
    message = error_of(train_subset=1.5)
    assert "train_subset=1.5" in message and "or none" in message


def test_whole_floats_accepted_for_ints():
    config = make(epochs=2.0, batch_size=64.0, seed=3.0, train_subset=1000.0)
    assert config.epochs == 2 and type(config.epochs) is int
    assert config.batch_size == 64 and type(config.batch_size) is int
    assert config.seed == 3 and type(config.seed) is int
    assert config.train_subset == 1000 and type(config.train_subset) is int


def test_ints_accepted_for_floats():
    config = make(width=2, lr=1, assumed_power_w=70)
    assert type(config.width) is float and config.width == 2.0
    assert type(config.lr) is float and type(config.assumed_power_w) is float


@pytest.mark.parametrize("field", ["download", "random_crop", "random_flip", "channels_last"])
@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_bools_must_be_bools(field, value):
    message = error_of(**{field: value})
    assert f"{field}={value!r}" in message and "true or false" in message


@pytest.mark.parametrize("field", ["precision", "dataset", "device", "data_dir", "study"])
def test_text_fields_must_be_text(field):
    message = error_of(**{field: 3})
    assert f"{field}=3" in message and "expected text" in message


def test_none_only_for_optional_fields():
    assert make(eval_batch_size=None, train_subset=None, test_subset=None).eval_batch_size is None
    assert "epochs=None" in error_of(epochs=None)
    assert "width=None" in error_of(width=None)


# ------------------------------------------------------------------------------------------
# value rules
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, -1, -0.5, 0.0])
def test_width_must_be_positive(value):
    message = error_of(width=value)
    assert f"width={float(value)!r}" in message and "> 0" in message


@pytest.mark.parametrize("value", [0.25, 0.26, 1.5, 3])
def test_fractional_width_ok(value):
    assert make(width=value).width == float(value)


@pytest.mark.parametrize("field,value", [("precision", "fp16"), ("precision", "FP32"),
                                          ("dataset", "mnist"), ("pipeline", "dali"),
                                          ("optimizer", "rmsprop"), ("lr_schedule", "linear"),
                                          ("prune", "random")])
def test_unknown_choice_named_with_allowed_values(field, value):
    message = error_of(**{field: value})
    assert f"{field}={value!r}" in message and "choose one of" in message


def test_unknown_model_lists_the_registered_ones_and_timm():
    message = error_of(model="resnet19")
    assert message.startswith("model='resnet19' is not registered (did you mean resnet18")
    assert "paper_cnn" in message and "timm:<name>" in message and "\n" not in message


@pytest.mark.parametrize("changes,expected", [
    (dict(shortcut=False), "shortcut=False is not a knob of model 'paper_cnn'"),
    (dict(model="mlp", shortcut=True), "shortcut=True is not a knob of model 'mlp'"),
    (dict(model="resnet18", depth=3), "depth=3 is not a knob of model 'resnet18'"),
    (dict(optimizer="adam", momentum=0.9), "momentum=0.9 is not allowed with optimizer='adam'"),
    (dict(lr_schedule="step", lr_step_epochs=0), "lr_step_epochs=0 is not allowed"),
    (dict(prune="unstructured", prune_amount=1.0), "prune_amount=1.0 must be a fraction in (0, 1)"),
    (dict(prune="structured", prune_every_epochs=0), "prune_every_epochs=0 must be an integer >= 1"),
    (dict(prune="unstructured", prune_target_sparsity=1.5), "prune_target_sparsity=1.5 must be in (0, 1)"),
    (dict(init="orthogonal"), "init='orthogonal'"),
])
def test_model_and_training_knobs_refused_in_one_line(changes, expected):
    message = error_of(**changes)
    assert expected in message and "\n" not in message


def test_model_knobs_and_momentum_default():
    config = RunConfig(model="resnet18", shortcut=False, optimizer="sgd")
    assert config.model_knobs == {"shortcut": False} and config.effective_momentum == 0.9
    assert RunConfig(model="mlp", depth=2).model_knobs == {"depth": 2}
    assert RunConfig(optimizer="adamw").momentum is None


def test_choice_messages_list_allowed_values():
    assert "fp32, amp, bf16" in error_of(precision="half")
    assert "cifar10" in error_of(dataset="imagenet") and "fashion_mnist" in error_of(dataset="x")
    assert "paper_cnn" in error_of(model="vgg")
    assert "tensor, torchvision" in error_of(pipeline="x")


@pytest.mark.parametrize("precision", ["fp32", "amp", "bf16"])
def test_known_precisions_ok(precision):
    assert make(precision=precision).precision == precision


@pytest.mark.parametrize("value", [0, -3])
def test_epochs_at_least_one(value):
    message = error_of(epochs=value)
    assert f"epochs={value}" in message and ">= 1" in message


def test_one_epoch_ok():
    assert make(epochs=1).epochs == 1


@pytest.mark.parametrize("value", [0, -1])
def test_batch_size_at_least_one(value):
    assert f"batch_size={value}" in error_of(batch_size=value)


def test_batch_size_larger_than_training_set():
    message = error_of(dataset="fashion_mnist", batch_size=60_001)
    assert "batch_size=60001" in message and "60000" in message


def test_batch_size_larger_than_train_subset():
    message = error_of(train_subset=100, batch_size=128)
    assert "batch_size=128" in message and "100 images" in message
    assert make(train_subset=128, batch_size=128).batch_size == 128


def test_eval_batch_size_at_least_one():
    assert "eval_batch_size=0" in error_of(eval_batch_size=0)


@pytest.mark.parametrize("field,limit", [("train_subset", 60_000), ("test_subset", 10_000)])
def test_subset_larger_than_dataset(field, limit):
    message = error_of(dataset="fashion_mnist", **{field: limit + 1})
    assert f"{field}={limit + 1}" in message and f"{limit}" in message
    assert "fashion_mnist" in message
    assert getattr(make(dataset="fashion_mnist", **{field: limit}), field) == limit


@pytest.mark.parametrize("field", ["train_subset", "test_subset"])
def test_subset_at_least_one(field):
    assert f"{field}=0" in error_of(**{field: 0})


def test_subset_sets_the_sizes():
    config = make(dataset="fashion_mnist", train_subset=512, test_subset=128)
    assert (config.train_size, config.test_size) == (512, 128)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:12"])
def test_device_forms_accepted(device):
    assert make(device=device).device == device


@pytest.mark.parametrize("device", ["gpu", "CUDA", "cuda:", "cuda:x", "mps0", "", "cpu:0"])
def test_device_forms_rejected(device):
    message = error_of(device=device)
    assert f"device={device!r}" in message and "cuda:N" in message


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1])
def test_momentum_range(value):
    message = error_of(momentum=value)
    assert f"momentum={value!r}" in message and "[0, 1)" in message


@pytest.mark.parametrize("value", [0, 0.5, 0.99])
def test_momentum_in_range_ok(value):
    assert make(momentum=value).momentum == value


def test_negative_weight_decay():
    message = error_of(weight_decay=-1e-4)
    assert "weight_decay=-0.0001" in message and ">= 0" in message
    assert make(weight_decay=0).weight_decay == 0.0


@pytest.mark.parametrize("value", [0, -70])
def test_lr_must_be_positive(value):
    assert f"lr={float(value)!r}" in error_of(lr=value)


@pytest.mark.parametrize("value", [0, -1.0])
def test_assumed_power_must_be_positive(value):
    message = error_of(assumed_power_w=value)
    assert f"assumed_power_w={float(value)!r}" in message and "> 0" in message


def test_negative_seed_and_padding_and_workers():
    assert "seed=-1" in error_of(seed=-1)
    assert "crop_padding=-1" in error_of(crop_padding=-1)
    assert "num_workers=-1" in error_of(num_workers=-1)


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_data_dir(value):
    message = error_of(data_dir=value)
    assert "data_dir=" in message and "give a path" in message


def test_blank_data_dir_message_names_the_value():
    assert "data_dir='   '" in error_of(data_dir="   ")


def test_replace_revalidates():
    config = make(epochs=2)
    assert config.replace(epochs=3).epochs == 3
    with pytest.raises(ConfigError, match="epochs=0"):
        config.replace(epochs=0)


def test_config_is_frozen():
    with pytest.raises(Exception):
        RunConfig().width = 2.0  # type: ignore[misc]


def test_to_dict_round_trip_covers_every_field():
    config = make(width=0.5, precision="bf16", dataset="fashion_mnist", epochs=2,
                  train_subset=100, batch_size=50)
    values = config.to_dict()
    assert tuple(values) == FIELD_NAMES
    assert RunConfig.from_dict(values) == config


# ------------------------------------------------------------------------------------------
# device.resolve_runtime on a machine without CUDA
# ------------------------------------------------------------------------------------------

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@cpu_only
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_unavailable_raises_config_error(device):
    config = make(device=device)
    with pytest.raises(ConfigError) as info:
        resolve_runtime(config)
    assert f"device={device!r}" in str(info.value) and "not available" in str(info.value)


@cpu_only
def test_auto_resolves_to_cpu():
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_runtime(make(device="auto")).device.type == "cpu"


def test_amp_on_cpu_is_bfloat16_without_scaler():
    runtime = resolve_runtime(make(device="cpu", precision="amp"))
    assert runtime.device == torch.device("cpu")
    assert runtime.autocast_dtype is torch.bfloat16
    assert runtime.use_grad_scaler is False
    assert runtime.eval_autocast is False  # as the original study: eval without autocast


def test_bf16_on_cpu():
    runtime = resolve_runtime(make(device="cpu", precision="bf16"))
    assert runtime.autocast_dtype is torch.bfloat16
    assert runtime.use_grad_scaler is False and runtime.eval_autocast is True


def test_fp32_has_no_autocast():
    runtime = resolve_runtime(make(device="cpu", precision="fp32"))
    assert runtime.autocast_dtype is None
    assert runtime.use_grad_scaler is False and runtime.eval_autocast is False


def fake_cuda_gpu(monkeypatch, name: str, capability: tuple[int, int]) -> list:
    """One CUDA GPU of `capability`, as torch.cuda answers for it: is_bf16_supported() counts
    emulation by default (True on a T4), and only capability 8.0+ with including_emulation=False,
    for the current device (returned: the devices made current to ask it)."""
    props = SimpleNamespace(name=name, major=capability[0], minor=capability[1],
                            total_memory=16 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability[0] >= 8)
    made_current = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext(
        made_current.append(device)))
    return made_current


def test_bf16_refused_on_a_gpu_that_only_emulates_it(monkeypatch):
    fake_cuda_gpu(monkeypatch, "Tesla T4", (7, 5))
    with pytest.raises(ConfigError) as info:
        resolve_runtime(make(device="cuda", precision="bf16"))
    message = str(info.value)
    assert "\n" not in message
    assert "precision='bf16' is not supported on Tesla T4" in message and "'amp'" in message
    assert resolve_runtime(make(device="cuda", precision="amp")).autocast_dtype is torch.float16
    assert "bf16 emulated only" in describe_accelerator()


def test_bf16_accepted_on_a_gpu_that_computes_it(monkeypatch):
    made_current = fake_cuda_gpu(monkeypatch, "NVIDIA A100", (8, 0))
    runtime = resolve_runtime(make(device="cuda", precision="bf16"))
    assert made_current == [torch.device("cuda")]  # torch answers for the run's own GPU
    assert runtime.device == torch.device("cuda") and runtime.autocast_dtype is torch.bfloat16
    assert "bf16 native" in describe_accelerator()


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_contention_threshold_is_a_share(value):
    with pytest.raises(ConfigError, match=r"contention_threshold=.* must be in \[0, 1\]"):
        RunConfig(contention_threshold=value)
    assert RunConfig(contention_threshold=0).contention_threshold == 0.0
    assert RunConfig().contention_threshold == 0.25
