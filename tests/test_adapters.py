"""energy_lib.adapters: Lightning's and Hugging Face's trainers drive a Tracker from callbacks --
real trainers, a small MLP on 512 random samples on the CPU, real records read back by
records.read_record. Each framework is skipped where its extra is not installed. The tests that
train are marked slow: importing Lightning or transformers' Trainer alone takes 1-5 s each on a
2-core VM (the first test of each framework pays it), the training itself ~1-3 s."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from energy_lib import BudgetExceeded
from energy_lib.adapters._run import numbers
from energy_lib.records import Status, read_record

QUIET = {"idle_s": 0, "idle_after_s": 0, "quiet": True}
SAMPLES, BATCH = 512, 32  # 16 batches an epoch: enough for epoch 1's steady window


def _data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES, 32, generator=generator)
    return x, (x[:, 0] > 0).long()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 2))


def _check_ok_record(callback, metrics: set[str]) -> None:
    """Two epochs, each with its train and evaluation windows and the framework's numbers."""
    record = read_record(callback.tracker.record_path)
    assert record.status == Status.OK, record.error
    assert [row["epoch"] for row in record.epochs] == [1, 2]
    for row in record.epochs:
        assert row["train_s"] > 0 and row["eval_s"] > 0, row
        assert metrics <= set(row) and all(isinstance(row[m], float) for m in metrics), row
    measured = [r for r in record.energy if r["phase"] != "predicted"]
    assert {(r["phase"], r["epoch"]) for r in measured} >= {
        ("run", None), ("train", 1), ("train", 2), ("eval", 1), ("eval", 2), ("steady", 1)}
    assert all(r["kind"] in ("measured", "modelled") and r["scope"] for r in measured)
    assert [r["epoch"] for r in record.energy if r["phase"] == "predicted"] == [1]
    assert record.summary["status"] == "ok" and record.summary["epochs_completed"] == 2


def _check_stopped_record(callback) -> None:
    record = read_record(callback.tracker.record_path)
    assert record.status == Status.STOPPED, record.error
    assert [row["epoch"] for row in record.epochs] == [1]
    assert isinstance(callback.stopped, BudgetExceeded)
    assert record.summary["stop_reason"].startswith("budget: predicted")


def test_numbers_keeps_single_numbers_under_safe_names():
    found = numbers({"val/acc": torch.tensor(0.5), "loss": 1, "lr": 0.1, "flag": True,
                     "name": "x", "many": torch.ones(3), "one": torch.ones(1),
                     "epoch": 2.0, "eval_s": 1.0, "///": 3.0, "n": __import__("numpy").float32(2)})
    assert found == {"val_acc": 0.5, "loss": 1.0, "lr": 0.1, "one": 1.0, "n": 2.0}
    assert numbers(None) == {}


def test_importing_energy_lib_loads_neither_framework():
    """The adapters are imported only when used: `energy_lib`, its Tracker and the adapters
    package load neither Lightning nor transformers."""
    code = ("import sys, energy_lib, energy_lib.adapters, energy_lib.adapters._run; "
            "energy_lib.Tracker; "
            "print(sorted(m for m in ('lightning', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------
# Lightning
# ------------------------------------------------------------------------------------------

def _lightning_fit(tmp_path, max_epochs: int, fail_at_step: int | None = None,
                   budget_s: float | None = None, **trainer_options):
    """fit() of a LightningModule with validation every epoch; nothing written outside
    tmp_path (no logger, checkpoints or progress bar). Returns (trainer, callback)."""
    pl = pytest.importorskip("lightning.pytorch")
    from energy_lib.adapters.lightning import EnergyCallback

    x, y = _data()

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch, index):
            if self.global_step == fail_at_step:
                raise RuntimeError("loss became nan\nsecond line")
            loss = nn.functional.cross_entropy(self.net(batch[0]), batch[1])
            self.log("train_loss", loss, on_epoch=True)
            return loss

        def validation_step(self, batch, index):
            logits = self.net(batch[0])
            self.log("val/loss", nn.functional.cross_entropy(logits, batch[1]))
            self.log("val_acc_pct", (logits.argmax(1) == batch[1]).float().mean() * 100)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    callback = EnergyCallback("lit", out=tmp_path / "runs", budget_s=budget_s, **QUIET)
    trainer = pl.Trainer(max_epochs=max_epochs, callbacks=[callback], accelerator="cpu",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         **trainer_options)
    loader = lambda shuffle, batch: torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=shuffle)
    trainer.fit(Module(), loader(True, BATCH), loader(False, 128))
    return trainer, callback


@pytest.mark.slow
def test_lightning_fit_leaves_an_ok_record_with_its_metrics(tmp_path):
    """The sanity check's validation opens no window; each epoch's validation (run inside the
    training epoch, after its last batch) gets an evaluation window of its own."""
    trainer, callback = _lightning_fit(tmp_path, max_epochs=2)
    _check_ok_record(callback, {"train_loss", "val_loss", "val_acc_pct"})
    record = read_record(callback.tracker.record_path)
    assert all(row["steps"] == SAMPLES // BATCH for row in record.epochs)
    assert record.config["epochs"] == 2  # from the trainer's max_epochs
    assert 0 <= record.summary["best_val_acc_pct"] <= 100
    assert {p.name for p in tmp_path.iterdir()} == {"runs"}


@pytest.mark.slow
def test_lightning_validation_inside_an_epoch_stays_in_its_window(tmp_path):
    """val_check_interval=0.5: the mid-epoch validation counts as training (windows never
    nest), the one after the last batch as the epoch's evaluation."""
    trainer, callback = _lightning_fit(tmp_path, max_epochs=2, val_check_interval=0.5,
                                       num_sanity_val_steps=0)
    _check_ok_record(callback, {"train_loss", "val_loss", "val_acc_pct"})


@pytest.mark.slow
def test_lightning_budget_stop_ends_fit_after_epoch_1(tmp_path):
    trainer, callback = _lightning_fit(tmp_path, max_epochs=50, budget_s=1e-6)
    _check_stopped_record(callback)
    assert trainer.global_step == SAMPLES // BATCH  # not one batch of epoch 2 ran
    assert read_record(callback.tracker.record_path).config["epochs"] == 50


@pytest.mark.slow
def test_lightning_exception_in_training_step_gives_a_failed_record(tmp_path):
    with pytest.raises(RuntimeError, match="loss became nan"):
        _lightning_fit(tmp_path, max_epochs=2, fail_at_step=SAMPLES // BATCH + 3)
    [path] = (tmp_path / "runs").glob("*.ipynb")
    record = read_record(path)
    assert record.status == Status.FAILED
    assert record.error == "RuntimeError: loss became nan"
    assert [row["epoch"] for row in record.epochs] == [1]  # epoch 2 raised: no row


# ------------------------------------------------------------------------------------------
# Hugging Face
# ------------------------------------------------------------------------------------------

class _Samples(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y = _data()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return {"x": self.x[index], "labels": self.y[index]}


class _Model(nn.Module):
    """A plain torch module the way the Trainer takes one: the loss in its output."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.net, self.fail = _mlp(), fail

    def forward(self, x, labels=None):
        if self.fail and self.training:
            raise RuntimeError("loss became nan\nsecond line")
        logits = self.net(x)
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def _hf_trainer(tmp_path, epochs: int, fail: bool = False, **callback_keywords):
    """A Trainer that evaluates every epoch and writes nothing outside tmp_path (no reporting,
    no checkpoints). Returns (trainer, callback)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from energy_lib.adapters.huggingface import EnergyCallback

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=epochs, learning_rate=0.1,
        per_device_train_batch_size=BATCH, per_device_eval_batch_size=128,
        eval_strategy="epoch", logging_strategy="epoch", save_strategy="no", report_to=[],
        use_cpu=True, disable_tqdm=True, remove_unused_columns=False, dataloader_num_workers=0)
    accuracy = lambda p: {"acc_pct": float((p.predictions.argmax(-1) == p.label_ids).mean() * 100)}
    callback = EnergyCallback("hf", out=tmp_path / "runs", **QUIET, **callback_keywords)
    trainer = transformers.Trainer(model=_Model(fail), args=args, train_dataset=_Samples(),
                                   eval_dataset=_Samples(), compute_metrics=accuracy,
                                   callbacks=[callback])
    return trainer, callback


@pytest.mark.slow
def test_huggingface_train_leaves_an_ok_record_with_its_metrics(tmp_path):
    trainer, callback = _hf_trainer(tmp_path, epochs=2)
    trainer.train()
    _check_ok_record(callback, {"loss", "eval_loss", "eval_acc_pct"})
    record = read_record(callback.tracker.record_path)
    assert all(row["steps"] == SAMPLES // BATCH for row in record.epochs)
    assert record.config["epochs"] == 2  # from num_train_epochs
    assert "train_runtime" not in record.epochs[-1]  # the run's closing log is not an epoch's
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*.safetensors"))


@pytest.mark.slow
def test_huggingface_budget_stop_ends_training_after_epoch_1(tmp_path):
    trainer, callback = _hf_trainer(tmp_path, epochs=50, budget_s=1e-6)
    trainer.train()
    _check_stopped_record(callback)
    # the Trainer looks at the stop after a step: one step of epoch 2, then no evaluation
    assert trainer.state.global_step == SAMPLES // BATCH + 1
    assert not [log for log in trainer.state.log_history if log.get("epoch", 0) > 1
                and "eval_loss" in log]


@pytest.mark.slow
def test_huggingface_exception_gives_a_failed_record(tmp_path):
    """Inside `with callback:` the record says what raised; outside it, the next train()
    writes the abandoned run's record as failed before its own."""
    trainer, callback = _hf_trainer(tmp_path, epochs=2, fail=True)
    with pytest.raises(RuntimeError, match="loss became nan"), callback:
        trainer.train()
    record = read_record(callback.tracker.record_path)
    assert record.status == Status.FAILED and record.error == "RuntimeError: loss became nan"
    assert record.epochs == []

    with pytest.raises(RuntimeError, match="loss became nan"):
        trainer.train()  # no `with`: the tracker is left open
    abandoned = callback.tracker
    trainer.model.fail = False
    trainer.train()
    record = read_record(abandoned.record_path)
    assert record.status == Status.FAILED and "without on_train_end" in record.error
    assert read_record(callback.tracker.record_path).status == Status.OK
    assert len(list((tmp_path / "runs").glob("*.ipynb"))) == 3
