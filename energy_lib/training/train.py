"""The training core -- one epoch of training, one evaluation -- and train(config), which is the
original study's loop plus named measurement windows.

`train_epoch` and `evaluate` are what the benchmarks time too, so a benchmark measures the
shipped loop. Loss and accuracy are summed on the device and read once per phase: the step
never waits for the host. All metering (meters, idle baseline, timeline, CodeCarbon) lives in
`energy.metering.Metering`; the energy figures are rows of its table, never computed here.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, ContextManager

import torch
from torch import nn

from .. import provenance
from ..provenance import device_name
from .data import make_loaders
from .device import Runtime, resolve_runtime, threads_for_free_cores
from ..energy.attribution import run_contention
from ..energy.metering import Metering, carbon_facts
from ..energy.table import Phase
from ..estimators.extrapolate import steady_steps
from ..estimators.predict import early_epochs_prediction, predict_run
from .model_stats import model_stats
from .models import create_model
from ..records import Status
from .allocator import settings as allocator_settings, steady_allocator
from .pruning import finalise, prune_step, rebuild_optimizer, should_prune

if TYPE_CHECKING:  # a RunConfig is passed in; the training core never builds one
    from ..config import RunConfig



@dataclass
class EpochStats:
    loss: float
    acc_pct: float
    samples: int
    logits_dtype: str = ""
    top5_acc_pct: float = math.nan  # evaluation only, for more than 5 classes
    confusion: list[list[int]] | None = None  # evaluation only: rows true class, columns predicted


@dataclass
class RunResult:
    config: RunConfig
    status: Status = Status.OK
    epochs: list[dict] = field(default_factory=list)  # per epoch: losses, accuracies, seconds
    energy: list[dict] = field(default_factory=list)  # the energy table (energy.table.EnergyRow)
    summary: dict = field(default_factory=dict)  # accuracy, time, model and device facts
    carbon: dict = field(default_factory=dict)  # intensity, its source, PUE
    provenance: dict = field(default_factory=dict)
    timeline: list[dict] = field(default_factory=list)  # t_s, component, power_w, method
    timeline_marks: list[dict] = field(default_factory=list)  # t_s, label
    meters: dict = field(default_factory=dict)  # what each component's figure is, and notes
    confusion: list[list[int]] = field(default_factory=list)  # final evaluation's matrix
    predictions: dict = field(default_factory=dict)  # what each estimator covered, and its cost
    windows: list[dict] = field(default_factory=list)  # per window: whose share of the machine
    #                                                    (energy.attribution.WindowShare)

    def epochs_frame(self):
        import pandas as pd

        return pd.DataFrame(self.epochs)


def autocast_for(runtime: Runtime, enabled: bool = True) -> ContextManager:
    """The precision's autocast on the run's device, or nothing (fp32, or disabled)."""
    if runtime.autocast_dtype is None or not enabled:
        return contextlib.nullcontext()
    return torch.autocast(runtime.device.type, dtype=runtime.autocast_dtype)


def train_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, autocast: Callable[[], ContextManager],
                criterion: nn.Module, device: torch.device,
                memory_format: torch.memory_format = torch.contiguous_format,
                before_step: dict[int, Callable[[], None]] | None = None) -> EpochStats:
    """One pass over `loader`: forward under `autocast()`, scaled backward, optimiser step.
    `before_step`: calls made before the step of that index (0-based), outside the step: how
    epoch 1's steady window opens and closes."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, logits = 0, None
    for step, (x, y) in enumerate(loader):
        if before_step and step in before_step:
            before_step[step]()
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast():
            logits = model(x)
            loss = criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach().float() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    dtype = str(logits.dtype).removeprefix("torch.") if logits is not None else ""
    return EpochStats(loss_sum.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1), seen, dtype)


def evaluate(model: nn.Module, loader, autocast: Callable[[], ContextManager],
             criterion: nn.Module, device: torch.device,
             memory_format: torch.memory_format = torch.contiguous_format,
             num_classes: int | None = None) -> EpochStats:
    """Loss, top-1 and top-5 accuracy and the confusion matrix over `loader`, without
    gradients; all summed on the device and read once."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    confusion = (torch.zeros(num_classes * num_classes, device=device, dtype=torch.long)
                 if num_classes else None)
    seen = 0
    with torch.inference_mode(), autocast():
        for x, y in loader:
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            logits = model(x)
            loss_sum += criterion(logits.float(), y) * len(y)
            predicted = logits.argmax(1)
            correct += (predicted == y).sum()
            if num_classes and num_classes > 5:
                correct5 += (logits.topk(5, dim=1).indices == y[:, None]).any(dim=1).sum()
            if confusion is not None:
                confusion += torch.bincount(y * num_classes + predicted,
                                            minlength=num_classes * num_classes)
            seen += len(y)
    seen = max(seen, 1)
    top5 = 100.0 * correct5.item() / seen if num_classes and num_classes > 5 else math.nan
    matrix = confusion.view(num_classes, num_classes).tolist() if confusion is not None else None
    return EpochStats(loss_sum.item() / seen, 100.0 * correct.item() / seen, seen,
                      top5_acc_pct=top5, confusion=matrix)


def make_optimizer(config: RunConfig, parameters) -> torch.optim.Optimizer:
    """SGD with momentum (the original study), Adam or AdamW, with the config's weight decay."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.effective_momentum,
                               weight_decay=config.weight_decay)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return kind(parameters, lr=config.lr, weight_decay=config.weight_decay)


def lr_for_epoch(config: RunConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (1-based). A closed form rather than a torch scheduler
    object: structured pruning replaces the optimiser mid-run, and a formula needs no
    re-attaching. cosine: lr/2 x (1 + cos(pi (epoch-1)/epochs)); step: lr x gamma^floor((epoch-1)/step)."""
    if config.lr_schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * (epoch - 1) / config.epochs))
    if config.lr_schedule == "step":
        return config.lr * config.lr_gamma ** ((epoch - 1) // config.lr_step_epochs)
    return config.lr


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _progress(total: int, description: str, style: str):
    """A bar over epochs: `auto` is a widget in an interactive notebook; `text` is plain text,
    for the study runner, which streams the kernel's stderr to the terminal."""
    if style == "text":
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(total=total, desc=description, unit="epoch")


@dataclass
class Setup:
    """Everything a run trains with, built from its config: what `train` uses, and what the
    plan's probe (training.probe) times, so both step the same model on the same data."""
    config: RunConfig
    runtime: Runtime
    train_loader: object
    eval_loader: object
    spec: object  # datasets.DatasetSpec
    sources: dict
    model: nn.Module
    step_model: nn.Module  # the model, compiled where the config asks
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    scaler: torch.amp.GradScaler
    memory_format: torch.memory_format

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def input_size(self) -> tuple[int, int, int]:
        return (self.spec.channels, self.spec.image_size, self.spec.image_size)

    @property
    def compute_dtype(self) -> str:
        dtype = self.runtime.autocast_dtype
        return str(dtype).removeprefix("torch.") if dtype is not None else "float32"

    def train_autocast(self) -> ContextManager:
        return autocast_for(self.runtime)

    def eval_autocast(self) -> ContextManager:
        return autocast_for(self.runtime, self.runtime.eval_autocast)


def build(config: RunConfig) -> Setup:
    """The run's data, model, optimiser and precision on its device, seeded by its config."""
    runtime = resolve_runtime(config)  # raises ConfigError before any data is loaded
    device = runtime.device
    steady_allocator()  # a step costs what it costs in any process, not a fresh one's page faults
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_loader, eval_loader, spec, sources = make_loaders(config, device)
    model = create_model(config.model, width=config.width, in_channels=spec.channels,
                         image_size=spec.image_size, num_classes=spec.num_classes,
                         init=config.init, seed=config.seed, **config.model_knobs)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    step_model = torch.compile(model) if config.torch_compile else model
    return Setup(config, runtime, train_loader, eval_loader, spec, sources, model, step_model,
                 make_optimizer(config, model.parameters()), nn.CrossEntropyLoss(),
                 torch.amp.GradScaler(device.type, enabled=runtime.use_grad_scaler), memory_format)


def train(config: RunConfig, *, progress: bool | str = True,
          on_epoch: Callable[[dict], None] | None = None,
          codecarbon_dir: str | os.PathLike | None = None) -> RunResult:
    """Train `config`; return its epoch table, energy table, summary and provenance.
    `progress`: False, True/"auto" (tqdm.auto) or "text"; `codecarbon_dir`: where CodeCarbon,
    when among the meters, writes its log (default ./codecarbon)."""
    started = _now()
    setup = build(config)  # raises ConfigError before any data is loaded
    device, spec, sources = setup.device, setup.spec, setup.sources
    train_loader, eval_loader = setup.train_loader, setup.eval_loader
    model, step_model, optimizer = setup.model, setup.step_model, setup.optimizer
    criterion, scaler, memory_format = setup.criterion, setup.scaler, setup.memory_format
    train_autocast, eval_autocast, input_size = setup.train_autocast, setup.eval_autocast, setup.input_size
    stats = model_stats(model, input_size)
    predicted, prediction_facts = predict_run(
        model, input_size=input_size, batch_size=config.batch_size,
        eval_batch_size=config.eval_batch_size or config.batch_size,
        train_size=config.train_size, test_size=config.test_size, epochs=config.epochs,
        compute_dtype=setup.compute_dtype, device=device,
        contention_threshold=config.contention_threshold)

    result = RunResult(config=config)
    quiet_threads = torch.get_num_threads()
    bar = (_progress(config.epochs, config.cell or config.study, "text" if progress == "text"
                     else "auto") if progress else None)
    compute_dtype = ""
    try:
        with Metering.for_config(config, device, codecarbon_dir=codecarbon_dir) as metering:
            metering.rows += predicted  # before training: what the estimators expected
            metering.measure_idle(config.idle_s)
            if device.type == "cpu":  # others busy on some cores: train on the free ones
                idle = next((w for w in metering.windows if w["phase"] == Phase.IDLE), None)
                torch.set_num_threads(threads_for_free_cores(idle, quiet_threads))
            threads = torch.get_num_threads()
            with metering.window(Phase.RUN):
                for epoch in range(1, config.epochs + 1):
                    for group in optimizer.param_groups:
                        group["lr"] = lr_for_epoch(config, epoch)
                    steady = (steady_steps(len(train_loader)) if epoch == 1 and
                              config.predict_after_epochs == 1 < config.epochs else None)
                    with metering.window(Phase.TRAIN, epoch), contextlib.ExitStack() as steady_window:
                        marks = None if steady is None else {
                            steady.start: lambda: steady_window.enter_context(
                                metering.window(Phase.STEADY, epoch)),
                            steady.stop: steady_window.close}
                        fit = train_epoch(step_model, train_loader, optimizer, scaler, train_autocast,
                                          criterion, device, memory_format, marks)
                    compute_dtype = compute_dtype or fit.logits_dtype
                    row = {"epoch": epoch, "lr": lr_for_epoch(config, epoch),
                           "train_loss": fit.loss, "train_acc_pct": fit.acc_pct,
                           "val_loss": math.nan, "val_acc_pct": math.nan,
                           "val_top5_acc_pct": math.nan,
                           "train_s": metering.last_duration_s, "eval_s": 0.0, **stats}
                    if not math.isfinite(fit.loss):
                        result.status = Status.DIVERGED
                        result.epochs.append(row)
                        break
                    with metering.window(Phase.EVAL, epoch):
                        check = evaluate(step_model, eval_loader, eval_autocast, criterion, device,
                                         memory_format, spec.num_classes)
                    row.update(val_loss=check.loss, val_acc_pct=check.acc_pct,
                               val_top5_acc_pct=check.top5_acc_pct, eval_s=metering.last_duration_s)
                    result.epochs.append(row)
                    result.confusion = check.confusion
                    if epoch == config.predict_after_epochs and epoch < config.epochs:
                        metering.rows.append(early_epochs_prediction(
                            result.epochs, metering.rows, config.epochs, steady, len(train_loader)))
                    if config.prune != "none" and should_prune(epoch, config.prune_every_epochs) \
                            and epoch < config.epochs:
                        model, step_model, optimizer, stats = _prune(
                            config, model, step_model, optimizer, train_loader, device,
                            memory_format, input_size)
                    if bar is not None:
                        bar.set_postfix(loss=f"{fit.loss:.3f}", val_acc=f"{check.acc_pct:.1f}%")
                        bar.update()
                    if on_epoch is not None:
                        on_epoch(row)
            metering.measure_idle(config.idle_after_s, after=True)
    finally:
        torch.set_num_threads(quiet_threads)
        if bar is not None:
            bar.close()
    if config.prune == "unstructured":
        finalise(model)
    result.energy = metering.rows
    result.meters = metering.info()
    result.timeline, result.timeline_marks = metering.timeline.rows(), metering.timeline.mark_rows()
    result.carbon = carbon_facts(config)
    result.predictions = prediction_facts
    result.windows = metering.windows
    result.summary = summarise(result.epochs, result.status, result.windows,
                               config.contention_threshold) | model_stats(model, input_size) | {
        "compute_dtype": compute_dtype, "device_name": device_name(device),
        "assumed_power_w": config.assumed_power_w, "pipeline": config.pipeline,
        "idle_s": config.idle_s, "torch_threads": threads, "torch_threads_quiet": quiet_threads}
    result.provenance = provenance.collect(device) | allocator_settings() | {
        "started": started, "finished": _now(), "data_sources": sources}
    return result


def _prune(config, model, step_model, optimizer, loader, device, memory_format, input_size):
    """One pruning step after an epoch (outside every measurement window); a structured step
    replaces parameters, so the optimiser (and a compiled model) are rebuilt."""
    example = next(iter(loader))[0][:2].to(device, memory_format=memory_format)
    step = prune_step(model, config.prune, config.prune_amount, config.prune_target_sparsity,
                      example)
    model = step.model
    if step.shapes_changed:
        optimizer = rebuild_optimizer(optimizer, model)
        step_model = torch.compile(model) if config.torch_compile else model
    return model, step_model, optimizer, model_stats(model, input_size)


def summarise(epochs: list[dict], status: str, windows: list[dict] = (),
              contention_threshold: float = 0.25) -> dict:
    """Accuracy and time over the run (energy figures derive from the energy table instead),
    and whether others competed for the machine while it trained: `contended`,
    `others_cpu_share`, `steal_share`, `runnable_per_core` (time-weighted over the training
    windows, energy.attribution.run_contention) and the `contention_threshold` it was judged by."""
    finished = [r for r in epochs if math.isfinite(r["val_acc_pct"])]
    train_s = sum(r["train_s"] for r in epochs)
    eval_s = sum(r["eval_s"] for r in epochs)
    return {
        "status": status,
        "epochs_completed": len(epochs),
        "best_val_acc_pct": max((r["val_acc_pct"] for r in finished), default=math.nan),
        "final_val_acc_pct": finished[-1]["val_acc_pct"] if finished else math.nan,
        "best_val_top5_acc_pct": max((r.get("val_top5_acc_pct", math.nan) for r in finished),
                                     default=math.nan),
        "final_val_top5_acc_pct": finished[-1].get("val_top5_acc_pct", math.nan) if finished else math.nan,
        "final_train_loss": epochs[-1]["train_loss"] if epochs else math.nan,
        "final_val_loss": finished[-1]["val_loss"] if finished else math.nan,
        "train_s_total": train_s,
        "eval_s_total": eval_s,
        "total_s": train_s + eval_s,
        "s_per_epoch": (train_s + eval_s) / len(epochs) if epochs else math.nan,
        **run_contention(list(windows), contention_threshold).to_summary(),
    }
