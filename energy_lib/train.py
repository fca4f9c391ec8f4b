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
from typing import Callable, ContextManager

import torch
from torch import nn

from . import provenance
from .config import RunConfig
from .data import make_loaders
from .device import Runtime, device_name, resolve_runtime
from .energy.metering import Metering, carbon_facts
from .energy.table import Phase
from .models import create_model

STATUS_OK, STATUS_DIVERGED = "ok", "diverged"


@dataclass
class EpochStats:
    loss: float
    acc_pct: float
    samples: int
    logits_dtype: str = ""


@dataclass
class RunResult:
    config: RunConfig
    status: str = STATUS_OK
    epochs: list[dict] = field(default_factory=list)  # per epoch: losses, accuracies, seconds
    energy: list[dict] = field(default_factory=list)  # the energy table (energy.table.EnergyRow)
    summary: dict = field(default_factory=dict)  # accuracy, time, model and device facts
    carbon: dict = field(default_factory=dict)  # intensity, its source, PUE
    provenance: dict = field(default_factory=dict)
    timeline: list[dict] = field(default_factory=list)  # t_s, component, power_w, method
    timeline_marks: list[dict] = field(default_factory=list)  # t_s, label
    meters: dict = field(default_factory=dict)  # what each component's figure is, and notes

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
                memory_format: torch.memory_format = torch.contiguous_format) -> EpochStats:
    """One pass over `loader`: forward under `autocast()`, scaled backward, optimiser step."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen, logits = 0, None
    for x, y in loader:
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
             memory_format: torch.memory_format = torch.contiguous_format) -> EpochStats:
    """Loss and accuracy over `loader`, without gradients."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    with torch.inference_mode(), autocast():
        for x, y in loader:
            x = x.to(device, non_blocking=True, memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            logits = model(x)
            loss_sum += criterion(logits.float(), y) * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
    return EpochStats(loss_sum.item() / max(seen, 1), 100.0 * correct.item() / max(seen, 1), seen)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _progress(total: int, description: str):
    """A bar over epochs: a widget in an interactive notebook, text when the study runner
    executes the notebook (it streams the kernel's stderr to the terminal)."""
    if os.environ.get("ENERGY_STUDY_TEXT_PROGRESS"):
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(total=total, desc=description, unit="epoch")


def train(config: RunConfig, *, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None) -> RunResult:
    """Train `config`; return its epoch table, energy table, summary and provenance."""
    runtime = resolve_runtime(config)  # raises ConfigError before any data is loaded
    device = runtime.device
    started = _now()
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    train_loader, eval_loader, spec, sources = make_loaders(config, device)
    model = create_model(config.model, width=config.width, in_channels=spec.channels,
                         image_size=spec.image_size, num_classes=spec.num_classes)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    step_model = torch.compile(model) if config.torch_compile else model
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    criterion = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.use_grad_scaler)
    train_autocast = lambda: autocast_for(runtime)  # noqa: E731
    eval_autocast = lambda: autocast_for(runtime, runtime.eval_autocast)  # noqa: E731

    result = RunResult(config=config)
    bar = _progress(config.epochs, config.cell or config.study) if progress else None
    compute_dtype = ""
    try:
        with Metering.for_config(config, device) as metering:
            metering.measure_idle(config.idle_s)
            with metering.window(Phase.RUN):
                for epoch in range(1, config.epochs + 1):
                    with metering.window(Phase.TRAIN, epoch):
                        fit = train_epoch(step_model, train_loader, optimizer, scaler, train_autocast,
                                          criterion, device, memory_format)
                    compute_dtype = compute_dtype or fit.logits_dtype
                    row = {"epoch": epoch, "train_loss": fit.loss, "train_acc_pct": fit.acc_pct,
                           "val_loss": math.nan, "val_acc_pct": math.nan,
                           "train_s": metering.last_duration_s, "eval_s": 0.0}
                    if not math.isfinite(fit.loss):
                        result.status = STATUS_DIVERGED
                        result.epochs.append(row)
                        break
                    with metering.window(Phase.EVAL, epoch):
                        check = evaluate(step_model, eval_loader, eval_autocast, criterion, device,
                                         memory_format)
                    row.update(val_loss=check.loss, val_acc_pct=check.acc_pct,
                               eval_s=metering.last_duration_s)
                    result.epochs.append(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{fit.loss:.3f}", val_acc=f"{check.acc_pct:.1f}%")
                        bar.update()
                    if on_epoch is not None:
                        on_epoch(row)
    finally:
        if bar is not None:
            bar.close()
    result.energy = metering.rows
    result.meters = metering.info()
    result.timeline, result.timeline_marks = metering.timeline.rows(), metering.timeline.mark_rows()
    result.carbon = carbon_facts(config)
    result.summary = summarise(result.epochs, result.status) | {
        "compute_dtype": compute_dtype, "device_name": device_name(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "assumed_power_w": config.assumed_power_w, "pipeline": config.pipeline,
        "idle_s": config.idle_s}
    result.provenance = provenance.collect(device) | {
        "started": started, "finished": _now(), "data_sources": sources}
    return result


def summarise(epochs: list[dict], status: str) -> dict:
    """Accuracy and time over the run (energy figures derive from the energy table instead)."""
    finished = [r for r in epochs if math.isfinite(r["val_acc_pct"])]
    train_s = sum(r["train_s"] for r in epochs)
    eval_s = sum(r["eval_s"] for r in epochs)
    return {
        "status": status,
        "epochs_completed": len(epochs),
        "best_val_acc_pct": max((r["val_acc_pct"] for r in finished), default=math.nan),
        "final_val_acc_pct": finished[-1]["val_acc_pct"] if finished else math.nan,
        "final_train_loss": epochs[-1]["train_loss"] if epochs else math.nan,
        "final_val_loss": finished[-1]["val_loss"] if finished else math.nan,
        "train_s_total": train_s,
        "eval_s_total": eval_s,
        "total_s": train_s + eval_s,
        "s_per_epoch": (train_s + eval_s) / len(epochs) if epochs else math.nan,
    }
