# %% [markdown]
# # Measure your own model
#
# A model and a training loop of your own -- here a small two-convolution network on Fashion-MNIST, written in plain PyTorch -- measured by `energy_lib.Tracker` with the same meters, windows, idle baseline, process attribution and contention rule as a study's cell. Nothing in the loop is the project's: the Tracker only opens a window around each epoch (`tracker.epoch()`), counts the steps (`tracker.steps(...)`), opens a window around each evaluation (`tracker.evaluation()`) and keeps the numbers you log (`tracker.log(...)`). When the `with` block ends it writes the run's lab record into `out`, a notebook that `energy-study report <out>` reports with any other records there.
#
# Replace the model, the data and the step with yours; keep the four Tracker calls.

# %% tags=["parameters"]
epochs = 3
train_subset = 2048  # images of the training split (None: all 60,000)
test_subset = 1000  # images of the test split (None: all 10,000)
batch_size = 128
lr = 0.05
seed = 0
out = "runs/your_model"  # the records' folder; relative: the project root (the folder holding studies/)
idle_s = 1.0  # the idle baseline before the first epoch (0: none)
idle_after_s = 1.0  # idle measured again after the run (drift check; 0: none)

# %% [markdown]
# ## Data and model
#
# Fashion-MNIST read by the project's reader (`energy_lib.training.data.load_split`: the files of Debian's `dataset-fashion-mnist`, or torchvision's download), then kept on the training device as two tensors, normalised once: each step is then only a gather and the model's work.

# %%
import pandas as pd
import torch
from IPython.display import display
from torch import nn

from energy_lib import RunConfig, Tracker
from energy_lib.study.spec import root_above
from energy_lib.training.data import load_split
from energy_lib.training.datasets import DATASETS

pd.set_option("display.max_colwidth", None)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
fashion = DATASETS["fashion_mnist"]
where = RunConfig(dataset="fashion_mnist", train_subset=train_subset, test_subset=test_subset,
                  batch_size=batch_size)  # which images to read (and a check of the sizes)


def on_device(split):
    """A split's images as normalised floats and its labels, both on the training device."""
    images = split.images.to(device).float().div_(255).sub_(fashion.mean[0]).div_(fashion.std[0])
    return images, split.labels.to(device)


train_x, train_y = on_device(load_split(where, train=True))
test_x, test_y = on_device(load_split(where, train=False))


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with pooling, then one linear layer: 28x28 -> 10 classes."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(32 * 7 * 7, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def batches(images, labels, size, shuffle):
    """The (images, labels) batches of one pass, shuffled on the device for training."""
    order = torch.randperm(len(labels), device=device) if shuffle else \
        torch.arange(len(labels), device=device)
    return [(images[i], labels[i]) for i in order.split(size)]


torch.manual_seed(seed)
model = SmallCNN().to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
print(f"{len(train_y)} training and {len(test_y)} test images on {device}; "
      f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ## Training, measured
#
# Your loop, inside the Tracker. It measures the idle baseline first (`idle_s`), then each epoch's training as one window and each evaluation as another; in epoch 1 the steps after the warm-up are a window of their own. After epoch 1 it prints one line: the whole run's energy and time predicted from epoch 1 (`budget_wh` or `budget_s` would stop the run there when the prediction exceeds them).

# %%
with Tracker("your-model", out=root_above() / out, epochs=epochs, device=str(device),
             idle_s=idle_s, idle_after_s=idle_after_s) as tracker:
    for epoch in range(epochs):
        with tracker.epoch():
            model.train()
            loss_sum = torch.zeros((), device=device)
            for x, y in tracker.steps(batches(train_x, train_y, batch_size, shuffle=True)):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach() * len(y)
        with tracker.evaluation():
            model.eval()
            correct = torch.zeros((), device=device, dtype=torch.long)
            with torch.inference_mode():
                for x, y in batches(test_x, test_y, 1000, shuffle=False):
                    correct += (model(x).argmax(1) == y).sum()
        val_acc_pct = 100 * correct.item() / len(test_y)
        tracker.log(val_acc_pct=val_acc_pct, train_loss=loss_sum.item() / len(train_y))
        print(f"epoch {epoch + 1}: validation accuracy {val_acc_pct:.1f} %")

# %% [markdown]
# ## The run's summary
#
# `energy_j` is the headline: per component and window the best available figure, summed over the training and evaluation windows -- *measured* where a meter read the hardware (GPU: NVML's energy counter; CPU and DRAM: RAPL), else *modelled* (CPU: TDP × utilisation; RAM: power per GB). `energy_kind` says which (`mixed` when the components differ), `energy_methods` how. `energy_scope` says whose energy it is: `process` is this kernel's share of machine-level CPU and RAM figures (its CPU time over the machine's, its memory over the memory in use), `machine` the whole machine's; `machine_energy_j` keeps the whole machine's figure beside it. `contended` says whether other processes took more of the CPU than the contention threshold while it trained: then its time and machine-level energy are not its own. The record (`record`) keeps every row these figures come from.

# %%
tracker.summary

# %% [markdown]
# ## Predicted after epoch 1, against the run
#
# The prediction is an *estimate* (kind `estimated`): epoch 1's headline energy and time scaled to every epoch, from its steady steps where epoch 1 had enough of them (the line printed first says how).

# %%
if tracker.prediction is not None:
    print(tracker.prediction["flag"])  # how it was made
    display(pd.DataFrame({"predicted after epoch 1": [tracker.prediction["energy_j"],
                                                      tracker.prediction["duration_s"]],
                          "measured": [tracker.summary["energy_j"], tracker.summary["total_s"]]},
                         index=["energy (J, headline)", "training + evaluation (s)"]))

# %% [markdown]
# ## Energy per epoch, from the record
#
# Read back from the lab record the Tracker wrote (`energy_lib.records.read_record`), as the report reads it: the methods of each component (measured or modelled, and why), then per epoch the headline energy of its training and evaluation windows with its kind and scope, the whole machine's figure of the same windows (`machine_energy_j`), and the original study's constant-power estimate (an *assumed* board power × time, `constant_power_energy_j`; never part of the headline). The figure plots the headline per epoch and names the machine it was measured on: figures from different machines are not comparable as they stand. Epoch 1 often costs more than the others (warm-up: first allocations, kernel selection); a contended epoch costs more too.

# %%
import matplotlib.pyplot as plt

import energy_lib.lab as lab
from energy_lib.energy import derive
from energy_lib.records import read_record
from energy_lib.report.tracked import energy_per_epoch

record = read_record(tracker.record_path)
print(f"{record.path}: {record.status}")
print(lab.meters_text(record))
per_epoch = derive.per_epoch(record.energy).assign(cell=record.cell)
display(per_epoch[["epoch", "energy_j", "energy_kind", "energy_scope", "energy_methods",
                   "machine_energy_j", "constant_power_energy_j"]])
figure = energy_per_epoch(per_epoch, f"Measured on: {record.provenance.get('machine') or 'not recorded'}.")
display(figure)
plt.close(figure)

# %% [markdown]
# ## Next
#
# Every run of this notebook adds a record to `out` (`your-model.ipynb`, `your-model-2.ipynb`, ...; a record is never replaced). Runs that share a Tracker name are repeats of one setting: `energy-study report runs/your_model` writes their findings, each name's mean energy, time and accuracy with 95 % intervals over its finished, uncontended runs, every prediction beside what was then measured, and this figure for all of them.
