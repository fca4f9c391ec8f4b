"""Reading datasets (CIFAR pickle fixtures written here, the real Fashion-MNIST files) and the two
input pipelines: batch shapes, normalisation, determinism and per-sample augmentation."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import CIFAR_PER_BATCH, fashion_mnist_dir, needs_fashion_mnist
from energy_lib import ConfigError, DatasetNotFound, RunConfig
from energy_lib.training.data import Split, TensorLoader, load_split, make_loaders
from energy_lib.training.datasets import DATASETS, DatasetSpec

CPU = torch.device("cpu")


def cifar_config(root: Path, **values) -> RunConfig:
    return RunConfig.from_dict({"dataset": "cifar10", "data_dir": str(root), "download": False,
                                "batch_size": 16, "device": "cpu", **values})


def random_split(n=24, channels=3, height=10, width=13, seed=0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, height, width), generator=g, dtype=torch.uint8)
    return Split(images, torch.arange(n, dtype=torch.int64), "memory")


def spec_for(split: Split, exact_stats: bool = False) -> DatasetSpec:
    channels = split.images.shape[1]
    if exact_stats:
        x = split.images.double() / 255
        mean = tuple(x.mean(dim=(0, 2, 3)).tolist())
        std = tuple(x.std(dim=(0, 2, 3), unbiased=False).tolist())
    else:
        mean, std = (0.5, 0.4, 0.3)[:channels], (0.25, 0.2, 0.3)[:channels]
    return DatasetSpec("fixture", "None", len(split), len(split), channels,
                       split.images.shape[-1], 10, mean=mean, std=std, how_to_get="")


def normalise(images: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def gather(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


# ------------------------------------------------------------------------------------------
# CIFAR in the official pickle format
# ------------------------------------------------------------------------------------------

def test_cifar10_train_split_shapes_and_pixels(cifar10_dir):
    root, written = cifar10_dir
    split = load_split(cifar_config(root), train=True)
    data, labels = written["train"]
    assert split.images.shape == (5 * CIFAR_PER_BATCH, 3, 32, 32)
    assert split.images.dtype == torch.uint8
    assert split.labels.dtype == torch.int64
    assert split.labels.tolist() == labels  # batches 1..5 in order
    # the official row layout: 1024 red, then 1024 green, then 1024 blue, each row-major
    assert torch.equal(split.images.reshape(len(split), -1), torch.from_numpy(data))
    i, c, y, x = 37, 2, 5, 29
    assert split.images[i, c, y, x].item() == data[i, c * 1024 + y * 32 + x]
    assert split.images[i, 0, 31, 0].item() == data[i, 31 * 32]
    assert split.source.endswith("cifar-10-batches-py")


def test_cifar10_test_split(cifar10_dir):
    root, written = cifar10_dir
    split = load_split(cifar_config(root), train=False)
    data, labels = written["test"]
    assert split.images.shape == (CIFAR_PER_BATCH, 3, 32, 32)
    assert split.labels.tolist() == labels
    assert torch.equal(split.images, torch.from_numpy(data).reshape(-1, 3, 32, 32))


def test_cifar100_reads_fine_labels(cifar100_dir):
    root, written = cifar100_dir
    config = RunConfig(dataset="cifar100", data_dir=str(root), download=False, batch_size=8)
    for train, name in ((True, "train"), (False, "test")):
        split = load_split(config, train=train)
        data, fine = written[name]
        assert split.images.shape == (len(fine), 3, 32, 32) and split.images.dtype == torch.uint8
        assert split.labels.tolist() == fine
        assert max(fine) >= 10  # fine labels (0..99), not the 20 coarse ones
        assert torch.equal(split.images, torch.from_numpy(data).reshape(-1, 3, 32, 32))


def test_cifar_subset_is_fixed_and_independent_of_the_run_seed(cifar10_dir):
    root, _ = cifar10_dir
    full = load_split(cifar_config(root), train=True)
    a = load_split(cifar_config(root, train_subset=9, batch_size=4, seed=0), train=True)
    b = load_split(cifar_config(root, train_subset=9, batch_size=4, seed=7), train=True)
    assert len(a) == 9 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # the subset is made of images of the full split (with their own labels), not new ones
    rows = {bytes(img.numpy().tobytes()): int(lab) for img, lab in zip(full.images, full.labels)}
    for img, lab in zip(a.images, a.labels):
        assert rows[bytes(img.numpy().tobytes())] == int(lab)
    assert "subset of 9" in a.source


def test_missing_cifar_without_download(tmp_path):
    with pytest.raises(DatasetNotFound) as info:
        load_split(cifar_config(tmp_path / "empty"), train=True)
    message = str(info.value)
    assert "dataset='cifar10' not found" in message
    assert str(tmp_path / "empty" / "cifar-10-batches-py") in message  # where it looked
    assert "cifar-10-python.tar.gz" in message and "download=true" in message  # how to get it
    assert isinstance(info.value, FileNotFoundError)


def test_incomplete_cifar_folder_is_not_found(cifar10_dir):
    root, _ = cifar10_dir
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFound, match="looked in"):
        load_split(cifar_config(root), train=True)
    assert len(load_split(cifar_config(root), train=False)) == CIFAR_PER_BATCH  # test intact


def test_missing_cifar100_names_its_archive(tmp_path):
    config = RunConfig(dataset="cifar100", data_dir=str(tmp_path), download=False)
    with pytest.raises(DatasetNotFound) as info:
        load_split(config, train=False)
    assert "cifar-100-python" in str(info.value) and "cifar-100-python.tar.gz" in str(info.value)


def test_unwritable_data_dir_with_download_is_a_config_error(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    data_dir = tmp_path / "afile" / "sub"
    config = RunConfig(dataset="cifar10", data_dir=str(data_dir), download=True)
    with pytest.raises(ConfigError) as info:
        load_split(config, train=True)
    message = str(info.value)
    assert f"data_dir={str(data_dir)!r}" in message and "not writable" in message
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("download", [False, True])
def test_missing_fashion_mnist_one_line_every_place_nothing_created(tmp_path, monkeypatch,
                                                                      download):
    """Offline: one line naming data_dir's folder, FASHION_MNIST_DIR and the Debian folder; the
    missing data_dir is not left behind (torchvision's download, faked here, creates folders
    and fails with a message over several lines, as it does offline)."""
    import torchvision.datasets as tvd

    from energy_lib.training import data as data_module

    class OfflineFashionMNIST:
        def __init__(self, root, train, download):
            (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True)
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n"
                               "Tried https://example.invalid/, got:\n<urlopen error offline>\n")

    monkeypatch.setattr(tvd, "FashionMNIST", OfflineFashionMNIST)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "debian"))
    config = RunConfig(dataset="fashion_mnist", data_dir=str(tmp_path / "d" / "e"),
                       download=download)
    with pytest.raises(DatasetNotFound) as info:
        load_split(config, train=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    looked = message.split("looked in: ")[1].split("; ")[0]
    assert looked == ", ".join([str(tmp_path / "d" / "e" / "FashionMNIST" / "raw"),
                                str(tmp_path / "nowhere"), str(tmp_path / "debian")])
    assert "apt-get install dataset-fashion-mnist" in message
    assert ("download failed: Error downloading" in message) == download
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no data_dir created


# ------------------------------------------------------------------------------------------
# Fashion-MNIST, the real files
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion():
    if not fashion_mnist_dir().is_dir():
        pytest.skip("Fashion-MNIST not installed")
    config = RunConfig(dataset="fashion_mnist", data_dir="unused-data-dir", download=False)
    return load_split(config, train=True), load_split(config, train=False)


@needs_fashion_mnist
def test_fashion_mnist_shapes_and_labels(fashion):
    train, test = fashion
    assert train.images.shape == (60_000, 1, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    # the published class balance: 6000 per class in train, 1000 per class in test
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.images.max().item() == 255 and train.images.min().item() == 0
    assert train.source == str(fashion_mnist_dir())


@needs_fashion_mnist
def test_fashion_mnist_subset_is_deterministic_and_seed_independent(fashion):
    train, _ = fashion
    base = dict(dataset="fashion_mnist", train_subset=300, test_subset=50, batch_size=10,
                download=False)
    a = load_split(RunConfig(seed=0, **base), train=True)
    b = load_split(RunConfig(seed=123, **base), train=True)
    c = load_split(RunConfig(seed=0, **base), train=True)
    assert a.images.shape == (300, 1, 28, 28)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.images, c.images)
    # a subset of the real images, with matching labels
    keep = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))[:300].sort().values
    assert torch.equal(a.images, train.images[keep]) and torch.equal(a.labels, train.labels[keep])
    assert len(set(a.labels.tolist())) == 10  # a spread of classes, not the first 300 rows
    t = load_split(RunConfig(seed=5, **base), train=False)
    assert len(t) == 50


@needs_fashion_mnist
def test_fashion_mnist_from_torchvision_layout_in_data_dir(tmp_path, monkeypatch, fashion):
    """Files under data_dir/FashionMNIST/raw (torchvision's download layout, gz or not) are used
    first."""
    _, test = fashion
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(fashion_mnist_dir() / f"{name}.gz", "rb") as src:
            (raw / name).write_bytes(src.read())
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    split = load_split(RunConfig(dataset="fashion_mnist", data_dir=str(tmp_path), download=False),
                       train=False)
    assert split.source == str(raw)
    assert torch.equal(split.images, test.images) and torch.equal(split.labels, test.labels)


@needs_fashion_mnist
def test_fashion_mnist_normalised_full_pass_has_zero_mean_unit_std(fashion):
    train, _ = fashion
    spec = DATASETS["fashion_mnist"]
    loader = TensorLoader(train, spec, 10_000, device=CPU, train=False, channels_last=False)
    total = total_sq = 0.0
    count = 0
    for x, _ in loader:
        x = x.double()
        total += x.sum().item()
        total_sq += (x * x).sum().item()
        count += x.numel()
    mean = total / count
    std = (total_sq / count - mean ** 2) ** 0.5
    assert abs(mean) < 0.01 and abs(std - 1) < 0.01


# ------------------------------------------------------------------------------------------
# TensorLoader
# ------------------------------------------------------------------------------------------

def test_batch_shapes_and_count():
    split = random_split(n=23)
    loader = TensorLoader(split, spec_for(split), 10, device=CPU, train=True, seed=0)
    batches = list(loader)
    assert len(loader) == 3
    assert [tuple(x.shape) for x, _ in batches] == [(10, 3, 10, 13)] * 2 + [(3, 3, 10, 13)]
    assert [tuple(y.shape) for _, y in batches] == [(10,), (10,), (3,)]
    assert all(x.dtype == torch.float32 and y.dtype == torch.int64 for x, y in batches)
    _, labels = gather(loader)
    assert sorted(labels.tolist()) == list(range(23))  # every sample once per epoch


def test_normalisation_with_own_statistics_is_exact():
    split = random_split(n=40, seed=4)
    spec = spec_for(split, exact_stats=True)
    loader = TensorLoader(split, spec, 16, device=CPU, train=False)
    x, _ = gather(loader)
    per_channel_mean = x.double().mean(dim=(0, 2, 3))
    per_channel_std = x.double().std(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(per_channel_mean, torch.zeros(3, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(per_channel_std, torch.ones(3, dtype=torch.float64), atol=1e-4)


def test_eval_loader_keeps_order_and_does_not_augment():
    split = random_split(n=23)
    spec = spec_for(split)
    loader = TensorLoader(split, spec, 10, device=CPU, train=False, seed=99, random_crop=True,
                          crop_padding=4, random_flip=True)
    for _ in range(2):  # every epoch the same
        x, y = gather(loader)
        assert torch.equal(y, split.labels)
        assert torch.allclose(x, normalise(split.images, spec), atol=1e-5)


def test_same_seed_same_batches_different_seed_different():
    split = random_split(n=30)
    spec = spec_for(split)

    def epochs(seed, count=2):
        loader = TensorLoader(split, spec, 8, device=CPU, train=True, seed=seed)
        return [gather(loader) for _ in range(count)]

    a, b, c = epochs(5), epochs(5), epochs(6)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(a[0][1], c[0][1])  # another seed, another order
    assert not torch.equal(a[0][1], a[1][1])  # a new order each epoch


def test_augmentation_is_decided_per_sample():
    """64 copies of one asymmetric image in one batch: crops and flips differ between copies."""
    image = torch.arange(3 * 10 * 13, dtype=torch.int64).remainder(251).to(torch.uint8)
    split = Split(image.view(1, 3, 10, 13).repeat(64, 1, 1, 1), torch.zeros(64, dtype=torch.long),
                  "memory")
    spec = spec_for(split)
    x, _ = next(iter(TensorLoader(split, spec, 64, device=CPU, train=True, seed=0)))
    distinct = torch.unique(x.reshape(64, -1), dim=0)
    assert len(distinct) > 10  # 9 x 9 offsets x 2 flips available
    flipped_only = TensorLoader(split, spec, 64, device=CPU, train=True, seed=0, random_crop=False)
    y, _ = next(iter(flipped_only))
    plain = normalise(split.images[:1], spec)
    is_plain = torch.isclose(y, plain, atol=1e-5).flatten(1).all(1)
    is_flipped = torch.isclose(y, plain.flip(3), atol=1e-5).flatten(1).all(1)
    assert torch.all(is_plain | is_flipped)
    assert 0 < int(is_flipped.sum()) < 64


@pytest.mark.parametrize("padding,flip", [(2, True), (4, True), (3, False)])
def test_crop_and_flip_match_a_per_sample_reference(padding, flip):
    split = random_split(n=21, height=10, width=13, seed=1)  # not square: rows and cols differ
    spec = spec_for(split)
    options = dict(device=CPU, train=True, seed=11, crop_padding=padding, random_flip=flip)
    loader = TensorLoader(split, spec, 8, **options)
    plan = TensorLoader(split, spec, 8, **options).epoch_plan()  # same seed: same decisions
    x, y = gather(loader)
    assert torch.equal(y, split.labels[plan["order"]])
    assert plan["dy"].unique().numel() > 1 and plan["dx"].unique().numel() > 1
    assert int(plan["dy"].max()) <= 2 * padding and int(plan["dx"].min()) >= 0
    height, width = split.images.shape[-2:]
    for k in range(len(split)):
        i, dy, dx = int(plan["order"][k]), int(plan["dy"][k]), int(plan["dx"][k])
        padded = F.pad(split.images[i], (padding,) * 4)  # zero fill on all four sides
        crop = padded[:, dy:dy + height, dx:dx + width]
        if bool(plan["flip"][k]):
            crop = crop.flip(-1)
        expected = normalise(crop.unsqueeze(0), spec)[0]
        assert torch.allclose(x[k], expected, atol=1e-5), f"sample {k} (image {i})"
    if flip:
        assert 0 < int(plan["flip"].sum()) < len(split)
    else:
        assert not plan["flip"].any()


def test_no_augmentation_when_switched_off():
    split = random_split(n=12)
    spec = spec_for(split)
    loader = TensorLoader(split, spec, 5, device=CPU, train=True, seed=2, random_crop=False,
                          random_flip=False)
    x, y = gather(loader)
    assert not torch.equal(y, split.labels)  # still shuffled
    assert torch.allclose(x, normalise(split.images[y], spec), atol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_channels_last_memory_format(train):
    split = random_split(n=6)
    spec = spec_for(split)
    x, _ = next(iter(TensorLoader(split, spec, 6, device=CPU, train=train, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    x, _ = next(iter(TensorLoader(split, spec, 6, device=CPU, train=train, channels_last=False)))
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------
# make_loaders: both pipelines
# ------------------------------------------------------------------------------------------

def test_make_loaders_tensor_pipeline(cifar10_dir):
    root, _ = cifar10_dir
    config = cifar_config(root, batch_size=16, eval_batch_size=6, channels_last=True)
    train_loader, eval_loader, spec, sources = make_loaders(config, CPU)
    assert spec is DATASETS["cifar10"]
    assert isinstance(train_loader, TensorLoader) and train_loader.padding == 4
    assert eval_loader.padding == 0 and not eval_loader.flip
    x, y = next(iter(train_loader))
    assert x.shape == (16, 3, 32, 32) and y.shape == (16,)
    assert [len(y) for _, y in eval_loader] == [6, 6, 6, 2]
    assert sources["train"].endswith("cifar-10-batches-py")


def test_torchvision_pipeline_matches_tensor_pipeline(cifar10_dir):
    root, _ = cifar10_dir
    base = dict(batch_size=16, eval_batch_size=8, num_workers=0)
    tv_config = cifar_config(root, pipeline="torchvision", **base)
    tv_train, tv_eval, spec, _ = make_loaders(tv_config, CPU)
    _, tensor_eval, _, _ = make_loaders(cifar_config(root, pipeline="tensor", **base), CPU)
    assert len(tv_train) == -(-5 * CIFAR_PER_BATCH // 16)  # batches per epoch, last one partial
    x, y = next(iter(tv_train))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    low = min((0 - m) / s for m, s in zip(spec.mean, spec.std))
    high = max((1 - m) / s for m, s in zip(spec.mean, spec.std))
    assert low - 1e-4 <= x.min().item() and x.max().item() <= high + 1e-4
    # without augmentation both pipelines give the same normalised images in the same order
    xa, ya = gather(tv_eval)
    xb, yb = gather(tensor_eval)
    assert xa.shape == xb.shape == (CIFAR_PER_BATCH, 3, 32, 32)
    assert torch.equal(ya, yb)
    assert torch.allclose(xa, xb, atol=1e-5)


def _torchvision_epoch(root, num_workers, seed):
    config = cifar_config(root, pipeline="torchvision", num_workers=num_workers, batch_size=25,
                          seed=seed)
    loader = make_loaders(config, CPU)[0]
    x, y = gather(loader)
    torch.rand(3)  # whatever else uses the global RNG in between must not matter
    return x, y


def test_torchvision_pipeline_is_seeded_with_workers(cifar10_dir):
    root, _ = cifar10_dir
    a, b = _torchvision_epoch(root, 2, 3), _torchvision_epoch(root, 2, 3)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])
    c = _torchvision_epoch(root, 2, 4)
    assert not torch.equal(a[1], c[1])


def test_torchvision_pipeline_order_is_seeded_without_workers(cifar10_dir):
    root, _ = cifar10_dir
    a, b = _torchvision_epoch(root, 0, 3), _torchvision_epoch(root, 0, 3)
    assert torch.equal(a[1], b[1])
    assert not torch.equal(a[1], _torchvision_epoch(root, 0, 4)[1])


def test_torchvision_pipeline_augmentation_is_seeded_without_workers(cifar10_dir):
    root, _ = cifar10_dir
    a, b = _torchvision_epoch(root, 0, 3), _torchvision_epoch(root, 0, 3)
    assert torch.equal(a[0], b[0])


@needs_fashion_mnist
def test_torchvision_pipeline_single_channel():
    config = RunConfig(dataset="fashion_mnist", pipeline="torchvision", num_workers=0,
                       train_subset=64, test_subset=32, batch_size=32, download=False)
    train_loader, eval_loader, _, _ = make_loaders(config, CPU)
    x, _ = next(iter(train_loader))
    assert x.shape == (32, 1, 28, 28)
    xs, _ = gather(eval_loader)
    ref, _ = gather(make_loaders(config.replace(pipeline="tensor"), CPU)[1])
    assert torch.allclose(xs, ref, atol=1e-5)
