"""train(config) -> RunResult: one short, readable training loop.

Train and eval are separate measurement windows, each opened and closed after synchronising the
device, so their seconds and joules never include queued work of the other; a `run` window spans
all epochs, and an `idle` window before the first epoch gives the idle baseline. Loss and
accuracy are summed on the device and read once per phase: the step never waits for the host.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import torch
from torch import nn

from . import provenance
from .config import RunConfig
from .data import make_loaders
from .device import device_name, resolve_runtime
from .energy import EnergyMonitor, joules_to_kwh
from .energy.carbon import emissions_kg, resolve_intensity
from .energy.setup import build_meters
from .energy.timeline import PowerTimeline
from .models import create_model

STATUS_OK, STATUS_DIVERGED = "ok", "diverged"


@dataclass
class RunResult:
    config: RunConfig
    status: str = STATUS_OK
    epochs: list[dict] = field(default_factory=list)  # one row per epoch (see _epoch_row)
    energy: list[dict] = field(default_factory=list)  # long form: epoch, phase, component, ...
    summary: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    timeline: list[dict] = field(default_factory=list)  # t_s, component, power_w, method
    timeline_marks: list[dict] = field(default_factory=list)  # t_s, label (epoch starts, idle)
    meters: dict = field(default_factory=dict)  # what each component's figure is, and notes

    def epochs_frame(self):
        import pandas as pd

        return pd.DataFrame(self.epochs)


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
    """Train `config` and return its per-epoch table, energy readings, summary and provenance."""
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

    def autocast(enabled: bool):
        if runtime.autocast_dtype is None or not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=runtime.autocast_dtype)

    meter_set = build_meters(config.meter_names, device, assumed_power_w=config.assumed_power_w,
                             cpu_tdp_w=config.cpu_tdp_w, ram_power_w=config.ram_power_w,
                             cpu_model=provenance.cpu_model())
    monitor = EnergyMonitor(meter_set.meters, device)
    timeline = PowerTimeline(meter_set.meters, period_s=config.sample_period_s)
    result = RunResult(config=config)
    result.meters = {"components": meter_set.components(), "descriptions": meter_set.describe()}
    compute_dtype = None
    bar = _progress(config.epochs, config.cell or config.study) if progress else None
    codecarbon = None
    if "codecarbon" in config.meter_names:
        from .energy.codecarbon_backend import CodeCarbonRun

        codecarbon = CodeCarbonRun(config.country, config.study)
    timeline.start()
    try:
        idle_power_w = measure_idle(monitor, timeline, config.idle_s)
        if codecarbon is not None:
            codecarbon.start()
        monitor.begin_window("run")
        for epoch in range(1, config.epochs + 1):
            timeline.mark(f"epoch {epoch}")
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            monitor.begin_window("train")
            for x, y in train_loader:
                x = x.to(device, non_blocking=True, memory_format=memory_format)
                y = y.to(device, non_blocking=True)
                with autocast(True):
                    logits = step_model(x)
                    loss = criterion(logits, y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_sum += loss.detach().float() * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
            train_window = monitor.end_window("train")
            compute_dtype = compute_dtype or str(logits.dtype).removeprefix("torch.")
            train_loss = loss_sum.item() / seen
            train_acc = 100.0 * correct.item() / seen

            if not math.isfinite(train_loss):
                result.status = STATUS_DIVERGED
                result.epochs.append(_epoch_row(epoch, train_loss, train_acc, math.nan, math.nan,
                                                train_window, None))
                result.energy += _energy_rows(epoch, idle_power_w, train=train_window)
                break

            model.eval()
            loss_sum.zero_()
            correct.zero_()
            seen = 0
            monitor.begin_window("eval")
            with torch.inference_mode(), autocast(runtime.eval_autocast):
                for x, y in eval_loader:
                    x = x.to(device, non_blocking=True, memory_format=memory_format)
                    y = y.to(device, non_blocking=True)
                    logits = step_model(x)
                    loss_sum += criterion(logits.float(), y) * len(y)
                    correct += (logits.argmax(1) == y).sum()
                    seen += len(y)
            eval_window = monitor.end_window("eval")
            row = _epoch_row(epoch, train_loss, train_acc, loss_sum.item() / seen,
                             100.0 * correct.item() / seen, train_window, eval_window)
            result.epochs.append(row)
            result.energy += _energy_rows(epoch, idle_power_w, train=train_window, eval=eval_window)
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{row['val_acc_pct']:.1f}%")
                bar.update()
            if on_epoch is not None:
                on_epoch(row)
        result.energy += _energy_rows(None, idle_power_w, run=monitor.end_window("run"))
        codecarbon_figures = codecarbon.stop() if codecarbon is not None else {}
    finally:
        timeline.stop()
        meter_set.close()
        if bar is not None:
            bar.close()
    result.timeline, result.timeline_marks = timeline.rows(), timeline.mark_rows()

    result.summary = summarise(result.epochs, result.status)
    result.summary.update(
        compute_dtype=compute_dtype, device_name=device_name(device),
        parameters=sum(p.numel() for p in model.parameters()),
        assumed_power_w=config.assumed_power_w, energy_method="constant-power",
        energy_kind="modelled", pipeline=config.pipeline, idle_s=config.idle_s,
        **component_summary(result.energy, idle_power_w, result.meters["components"], config),
        **codecarbon_figures,
    )
    result.provenance = provenance.collect(device) | {
        "started": started, "finished": _now(), "data_sources": sources}
    return result


def measure_idle(monitor: EnergyMonitor, timeline: PowerTimeline, idle_s: float) -> dict[str, float]:
    """Idle power per reading ("component/method" -> W) over `idle_s` seconds of doing nothing
    before training. The constant-power estimate has no idle notion and is left out."""
    if idle_s <= 0:
        return {}
    timeline.mark("idle")
    monitor.begin_window("idle")
    time.sleep(idle_s)
    window = monitor.end_window("idle")
    timeline.mark("idle end")
    return {f"{r.component}/{r.method}": r.energy_j / window.duration_s
            for r in window.readings if r.method != "constant-power"}


def _epoch_row(epoch, train_loss, train_acc, val_loss, val_acc, train_window, eval_window) -> dict:
    """One row of the per-epoch table. `energy_j` is the original study's constant-power
    estimate (train + eval); `<component>_energy_j` are the meters' figures (their method and
    kind are in the summary's `components`)."""
    windows = [w for w in (train_window, eval_window) if w is not None]
    energy_j = sum(r.energy_j for w in windows for r in w.readings if r.method == "constant-power")
    row = {
        "epoch": epoch, "train_loss": train_loss, "train_acc_pct": train_acc,
        "val_loss": val_loss, "val_acc_pct": val_acc,
        "train_s": train_window.duration_s,
        "eval_s": eval_window.duration_s if eval_window else 0.0,
        "energy_j": energy_j, "energy_kwh": joules_to_kwh(energy_j),
        "energy_method": "constant-power", "energy_kind": "modelled",
    }
    for window in windows:
        for reading in window.readings:
            if reading.method != "constant-power":
                key = f"{reading.component}_energy_j"
                row[key] = row.get(key, 0.0) + reading.energy_j
    return row


def _energy_rows(epoch: int | None, idle_power_w: dict[str, float], **windows) -> list[dict]:
    """Long-form energy: one row per (phase, component, method), with the energy above idle
    where an idle baseline of that reading exists."""
    rows = []
    for phase, window in windows.items():
        if window is None:
            continue
        for reading in window.readings:
            idle_w = idle_power_w.get(f"{reading.component}/{reading.method}")
            above = reading.energy_j - idle_w * window.duration_s if idle_w is not None else None
            rows.append({"epoch": epoch, "phase": phase, "duration_s": window.duration_s,
                         **reading.to_dict(), "above_idle_j": above})
    return rows


def component_summary(energy: list[dict], idle_power_w: dict[str, float],
                      components: dict[str, str], config: RunConfig) -> dict:
    """Per-component totals over the train + eval windows, their sum, its kind, mean power
    and carbon. A sum of measured and modelled components is labelled `mixed`; a run with no
    component meter (constant power only) has no metered figure: `none`, totals left empty."""
    phases = [r for r in energy if r["phase"] in ("train", "eval")]
    intensity = resolve_intensity(config.country, config.carbon_intensity_g_per_kwh)
    constant_j = sum(r["energy_j"] for r in phases if r["method"] == "constant-power")
    out: dict = {
        "components": components, "idle_power_w": idle_power_w,
        "carbon_intensity_g_per_kwh": intensity.g_per_kwh,
        "carbon_intensity_source": intensity.source,
        "country_iso_code": intensity.country_iso_code, "country_name": intensity.country_name,
        "pue": config.pue,
        "emissions_kg_constant_power": emissions_kg(joules_to_kwh(constant_j), intensity.g_per_kwh,
                                                    config.pue),
        "component_energy_j_total": None, "component_energy_kwh_total": None,
        "component_energy_kind": "none", "component_mean_power_w": None, "emissions_kg": None,
    }
    for component in components:
        rows = [r for r in phases if r["component"] == component]
        out[f"{component}_energy_j"] = sum(r["energy_j"] for r in rows)
        above = [r["above_idle_j"] for r in rows]
        out[f"{component}_above_idle_j"] = sum(above) if above and None not in above else None
    if components:
        total_j = sum(out[f"{c}_energy_j"] for c in components)
        kinds = {label.split("(")[-1].rstrip(")") for label in components.values()}
        first = next(iter(components))
        seconds = sum(r["duration_s"] for r in phases if r["component"] == first)
        out.update(
            component_energy_j_total=total_j,
            component_energy_kwh_total=joules_to_kwh(total_j),
            component_energy_kind=kinds.pop() if len(kinds) == 1 else "mixed",
            component_mean_power_w=total_j / seconds if seconds else None,
            emissions_kg=emissions_kg(joules_to_kwh(total_j), intensity.g_per_kwh, config.pue),
        )
    return out


def summarise(epochs: list[dict], status: str) -> dict:
    """Totals and the original Table 1's columns from the per-epoch rows."""
    finished = [r for r in epochs if math.isfinite(r["val_acc_pct"])]
    train_s = sum(r["train_s"] for r in epochs)
    eval_s = sum(r["eval_s"] for r in epochs)
    energy_j = sum(r["energy_j"] for r in epochs)
    best = max((r["val_acc_pct"] for r in finished), default=math.nan)
    energy_wh = energy_j / 3600.0
    return {
        "status": status,
        "epochs_completed": len(epochs),
        "best_val_acc_pct": best,
        "final_val_acc_pct": finished[-1]["val_acc_pct"] if finished else math.nan,
        "final_train_loss": epochs[-1]["train_loss"] if epochs else math.nan,
        "final_val_loss": finished[-1]["val_loss"] if finished else math.nan,
        "train_s_total": train_s,
        "eval_s_total": eval_s,
        "total_s": train_s + eval_s,
        "s_per_epoch": (train_s + eval_s) / len(epochs) if epochs else math.nan,
        "energy_j_total": energy_j,
        "energy_kwh_total": joules_to_kwh(energy_j),
        "acc_pct_per_wh": best / energy_wh if energy_wh > 0 else math.nan,
    }
