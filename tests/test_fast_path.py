"""The fast training path computes the same function as the simple one: same seed -> the same
augmentation decisions (checked per sample elsewhere) and equal losses over several SGD steps,
within float32 tolerance, whether the batches come from the whole-epoch gather in channels_last
or from a per-sample crop/flip/normalise fed to an NCHW model."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import needs_fashion_mnist
from energy_lib.config import RunConfig
from energy_lib.training.data import TensorLoader, load_split
from energy_lib.training.datasets import DATASETS
from energy_lib.training.models import create_model

pytestmark = [needs_fashion_mnist]
SPEC = DATASETS["fashion_mnist"]
CPU = torch.device("cpu")


def simple_batches(split, plan, batch_size: int, padding: int):
    """The obvious per-sample version of one epoch: pad, slice, mirror, normalise, in NCHW."""
    mean, std = SPEC.mean[0], SPEC.std[0]
    for start in range(0, len(split), batch_size):
        images, labels = [], []
        for i in range(start, min(start + batch_size, len(split))):
            j = int(plan["order"][i])
            padded = F.pad(split.images[j].float(), (padding,) * 4)
            dy, dx = int(plan["dy"][i]), int(plan["dx"][i])
            crop = padded[:, dy:dy + split.images.shape[2], dx:dx + split.images.shape[3]]
            if plan["flip"][i]:
                crop = crop.flip(2)
            images.append((crop / 255.0 - mean) / std)
            labels.append(split.labels[j])
        yield torch.stack(images), torch.stack(labels)


def losses(model, batches, steps: int) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    out = []
    for _, (x, y) in zip(range(steps), batches):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        out.append(loss.item())
    return out


def test_fast_and_simple_paths_give_equal_losses():
    config = RunConfig(dataset="fashion_mnist", train_subset=256, batch_size=32, download=False)
    split = load_split(config, train=True)
    plan = fast_with_seed(split, 7).epoch_plan()
    assert plan["flip"].any() and (plan["dx"] != 2).any()  # the epoch really augments

    torch.manual_seed(0)
    simple_model = create_model("paper_cnn", width=0.5, in_channels=1, image_size=28)
    fast_model = create_model("paper_cnn", width=0.5, in_channels=1, image_size=28)
    fast_model.load_state_dict(simple_model.state_dict())
    fast_model = fast_model.to(memory_format=torch.channels_last)

    first_x, _ = next(iter(fast_with_seed(split, 7)))
    assert first_x.is_contiguous(memory_format=torch.channels_last)
    expected_first, _ = next(simple_batches(split, plan, 32, 2))
    assert torch.allclose(first_x, expected_first, atol=1e-5)

    simple = losses(simple_model, simple_batches(split, plan, 32, 2), steps=6)
    fast_losses = losses(fast_model, iter(fast_with_seed(split, 7)), steps=6)
    assert torch.allclose(torch.tensor(fast_losses), torch.tensor(simple), rtol=1e-4, atol=1e-5)
    assert simple[0] != simple[-1]  # the steps did change the model


def fast_with_seed(split, seed: int) -> TensorLoader:
    return TensorLoader(split, SPEC, 32, device=CPU, train=True, seed=seed, crop_padding=2)
