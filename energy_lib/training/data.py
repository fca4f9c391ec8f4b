"""Datasets as uint8 tensors, and the two input pipelines that feed training.

`tensor` (default): the whole split lives on the training device as one uint8 tensor; shuffling,
per-sample random crop with padding, per-sample horizontal flip and normalisation are batched
tensor ops there (the airbench style). No PIL, no worker processes, no per-sample Python.

`torchvision`: the original study's input path -- PIL images through torchvision transforms in a
DataLoader with worker processes -- kept selectable so the two can be compared.

Both draw every random decision from a generator seeded by the config, so a seed fixes data order
and augmentation.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import math
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import DATASETS, DEBIAN_FASHION_MNIST_DIR, DatasetSpec
from ..errors import ConfigError, DatasetNotFound

if TYPE_CHECKING:  # a RunConfig is passed in; the training core never builds one
    from ..config import RunConfig

#: Subsets are drawn with this fixed seed (not the run seed) so every cell of a study trains and
#: evaluates on the same images, whatever its own seed.
SUBSET_SEED = 0


@dataclass(frozen=True)
class Split:
    """One split of a dataset: images (N, C, H, W) uint8 and labels (N,) int64, on the CPU."""

    images: torch.Tensor
    labels: torch.Tensor
    source: str  # where it was read from, for the lab record

    def __len__(self) -> int:
        return len(self.labels)


# --------------------------------------------------------------------------------------------
# Locating and reading datasets
# --------------------------------------------------------------------------------------------

def load_split(config: RunConfig, train: bool) -> Split:
    """Read one split (subset applied) into CPU memory, or raise DatasetNotFound saying where
    it looked and how to get it."""
    spec = DATASETS[config.dataset]
    root = Path(config.data_dir).expanduser()
    reader = _read_fashion_mnist if spec.name == "fashion_mnist" else _read_cifar
    split = reader(spec, root, train, config.download)
    subset = config.train_subset if train else config.test_subset
    if subset is not None and subset < len(split):
        generator = torch.Generator().manual_seed(SUBSET_SEED)
        keep = torch.randperm(len(split), generator=generator)[:subset].sort().values
        split = Split(split.images[keep].contiguous(), split.labels[keep].contiguous(),
                      f"{split.source} (subset of {subset})")
    return split


def _not_found(spec: DatasetSpec, looked: list[Path | str], reason: str = "") -> DatasetNotFound:
    """One line: what is missing, why, every place looked, how to get it (reasons from other
    libraries often span lines; they are joined)."""
    places = ", ".join(dict.fromkeys(str(p) for p in looked))
    extra = f" ({' '.join(reason.split())})" if reason else ""
    return DatasetNotFound(f"dataset={spec.name!r} not found{extra}; looked in: {places}; "
                           f"to get it: {spec.how_to_get}")


def _check_writable(spec: DatasetSpec, root: Path) -> None:
    """Fail before a download if the data directory cannot take the files (checked without
    creating it: a failed look-up leaves nothing behind)."""
    from ..errors import WriteError
    from ..files import check_writable

    try:
        check_writable(root, "data_dir")
    except WriteError as error:
        raise ConfigError(f"data_dir={str(root)!r} is not writable ({error}); {spec.name} must "
                          "be downloaded there: choose a writable data_dir") from None


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None if `path` exists)."""
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def _download(spec: DatasetSpec, root: Path, train: bool, looked: list[Path | str] | None = None):
    """Download with torchvision; on failure remove the folders this attempt created and
    raise DatasetNotFound naming every place looked."""
    import torchvision.datasets as tvd

    _check_writable(spec, root)
    created = _first_missing(root)
    try:  # torchvision verifies the archive's MD5 before extracting it
        return getattr(tvd, spec.torchvision_class)(root=str(root), train=train, download=True)
    except Exception as error:  # URLError, timeouts, integrity failures
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise _not_found(spec, looked or [root], f"download failed: {error}") from None


def _read_cifar(spec: DatasetSpec, root: Path, train: bool, download: bool) -> Split:
    folder = root / ("cifar-10-batches-py" if spec.name == "cifar10" else "cifar-100-python")
    if spec.name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    else:
        files = ["train"] if train else ["test"]
    if not all((folder / f).is_file() for f in files):
        if not download:
            raise _not_found(spec, [folder], "download=false")
        _download(spec, root, train)  # extracts into `folder`
    images, labels, published = [], [], True
    for name in files:
        data, batch_labels, is_published = _read_cifar_batch(spec, folder / name)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
        published &= is_published
    source = f"{folder} (the published files: MD5 checked)" if published else str(folder)
    return Split(torch.from_numpy(np.concatenate(images)),
                 torch.from_numpy(np.concatenate(labels).astype(np.int64)), source)


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """What protocols 0-2 pickle a `bytes` object as (`_codecs.encode(text, "latin1")`), and
    nothing else of `codecs.encode`: no other codec is reachable."""
    if type(text) is not str or encoding != "latin1":
        raise pickle.UnpicklingError("it calls _codecs.encode with other than (text, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args) -> bytes:
    """What protocols 0-2 pickle `b""` as (`bytes()`); `bytes(n)` and the like are refused."""
    if args:
        raise pickle.UnpicklingError("it calls bytes() with arguments")
    return b""


@functools.cache
def _cifar_globals() -> dict[tuple[str, str], object]:
    """Every (module, name) a CIFAR batch file may refer to, and what it stands for: numpy's own
    array reconstruction, under whatever module this or an older numpy names it (taken from what
    `ndarray.__reduce_ex__` returns: `_reconstruct` for protocols 0-4 and the published files,
    `_frombuffer` for protocol 5, e.g. a file re-saved by Python 3.14), and how protocols 0-2 spell
    bytes (`_codecs.encode`, `bytes()`, through the strict stand-ins above)."""
    array = np.zeros(1, np.uint8)
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
        ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes}
    for function in (array.__reduce__()[0], array.__reduce_ex__(5)[0]):
        for package in ("numpy.core", "numpy._core"):
            for module in ("multiarray", "numeric"):
                allowed[(f"{package}.{module}", function.__name__)] = function
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batch format and nothing else: a dict of plain values and numpy
    arrays. `find_class` is the only way a pickle reaches code, so refusing every name outside
    `_cifar_globals()` means a planted file cannot run anything."""

    def find_class(self, module: str, name: str):
        found = _cifar_globals().get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which the format never "
                                         "holds (nothing was run)")
        return found


def _read_cifar_batch(spec: DatasetSpec, path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """(images N x 3072 uint8, labels N int64, whether the file is the published one) of one
    batch file. It is read once; its MD5 is compared with the published file's and it is
    unpickled by `_CifarUnpickler` either way (a re-saved but honest file still loads). Anything
    else -- a file that would run code, a truncated or foreign one -- is DatasetNotFound naming
    the file, in one line."""
    blob = path.read_bytes()
    published = hashlib.md5(blob, usedforsecurity=False).hexdigest() == \
        dict(spec.published_md5).get(path.name)

    def bad(problem: str) -> DatasetNotFound:
        return DatasetNotFound(f"{path} is not a {spec.name} batch file: {' '.join(problem.split())}; "
                               f"replace it with the published file ({spec.how_to_get})")

    try:
        entry = _CifarUnpickler(io.BytesIO(blob), encoding="latin1").load()
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not this format"
        raise bad(str(error) or type(error).__name__) from None
    if not isinstance(entry, dict):
        raise bad(f"it holds a {type(entry).__name__}, not a dict")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    label_key = "labels" if spec.name == "cifar10" else "fine_labels"
    data = entry.get("data")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        raise bad("its 'data' is not an N x 3072 array of uint8")
    try:
        labels = np.asarray(entry.get(label_key))
    except Exception:  # noqa: BLE001 - ragged or odd values: the check below names the problem
        labels = np.asarray(None)
    if not (labels.dtype.kind in "iu" and labels.shape == (len(data),)
            and (labels.size == 0 or (labels.min() >= 0 and labels.max() < spec.num_classes))):
        raise bad(f"its {label_key!r} are not {len(data)} integers in 0..{spec.num_classes - 1}")
    return data, labels, published


def _read_idx_gz(path: Path) -> np.ndarray:
    """Read one (gzip) IDX file of unsigned bytes, the MNIST family's format; anything else (a
    truncated, foreign or not-gzip file) is DatasetNotFound naming the file, in one line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise DatasetNotFound(f"{path} cannot be read as an IDX file: "
                              f"{' '.join(str(error).split())}") from None
    dims = data[3] if len(data) >= 4 else 0
    if len(data) < 4 + 4 * dims or data[:3] != b"\0\0\x08" or dims not in (1, 3):
        raise DatasetNotFound(f"{path} is not an IDX file of unsigned bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    if len(data) != 4 + 4 * dims + math.prod(shape):
        raise DatasetNotFound(f"{path} is not a whole IDX file: its header says {shape} bytes of "
                              f"values, it holds {len(data) - 4 - 4 * dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _read_fashion_mnist(spec: DatasetSpec, root: Path, train: bool, download: bool) -> Split:
    prefix = "train" if train else "t10k"
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    torchvision_raw = root / "FashionMNIST" / "raw"  # where torchvision's download puts them
    places = [torchvision_raw]
    if os.environ.get("FASHION_MNIST_DIR"):
        places.append(Path(os.environ["FASHION_MNIST_DIR"]))
    places.append(Path(DEBIAN_FASHION_MNIST_DIR))
    for place in places:
        for suffix in ("", ".gz"):
            paths = [place / (n + suffix) for n in names]
            if all(p.is_file() for p in paths):
                images, labels = (_read_idx_gz(p) for p in paths)
                if images.ndim != 3 or labels.shape != images.shape[:1] or \
                        (labels.size and labels.max() >= spec.num_classes):
                    raise DatasetNotFound(
                        f"{paths[0]} and {paths[1]} do not belong together: {images.shape} images, "
                        f"{labels.shape} labels (0..{spec.num_classes - 1} expected)")
                return Split(torch.from_numpy(images.copy()).unsqueeze(1),
                             torch.from_numpy(labels.astype(np.int64)), str(place))
    if not download:
        raise _not_found(spec, places, "download=false")
    dataset = _download(spec, root, train, places)
    return Split(dataset.data.unsqueeze(1).contiguous(), dataset.targets.long(), str(torchvision_raw))


# --------------------------------------------------------------------------------------------
# The tensor pipeline
# --------------------------------------------------------------------------------------------

class TensorLoader:
    """Batches of a split kept on the training device, augmented with batched tensor ops.

    At construction the split is padded once and, when flips are on, stored next to its mirror
    image, in the training memory format. Each epoch draws its permutation, crop offsets and flips
    up front from a seeded CPU generator (a few hundred kilobytes), moves them to the device in
    one copy, and builds the whole augmented epoch with a single gather (`augmented_epoch`);
    batches are then slices. Nothing is decided or copied per sample in Python, and the same seed
    gives the same batches on any device.
    """

    def __init__(self, split: Split, spec: DatasetSpec, batch_size: int, *, device: torch.device,
                 train: bool, seed: int = 0, random_crop: bool = True, crop_padding: int = 4,
                 random_flip: bool = True, channels_last: bool = True) -> None:
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.padding = crop_padding if (train and random_crop) else 0
        self.flip = train and random_flip
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        images = split.images.to(device)
        if self.padding:
            images = F.pad(images, (self.padding,) * 4)  # zero fill, as RandomCrop(padding=p)
        if self.flip:  # sample i's mirror image is sample i + N: a flip becomes a choice of source
            images = torch.cat([images, images.flip(3)])
        self.images = images.contiguous(memory_format=self.memory_format)
        self.labels = split.labels.to(device)
        self.size = len(split)
        self.height, self.width = split.images.shape[-2:]
        mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std)  # (x/255 - mean) / std  ==  x * scale + shift
        self.shift = -mean / std
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)

    def epoch_plan(self) -> dict[str, torch.Tensor]:
        """The random decisions of one epoch, drawn in a fixed order from the seeded generator."""
        n, g = self.size, self.generator
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        span = 2 * self.padding + 1
        plan = {
            "order": order,
            "dy": torch.randint(span, (n,), generator=g) if self.padding else torch.zeros(n, dtype=torch.long),
            "dx": torch.randint(span, (n,), generator=g) if self.padding else torch.zeros(n, dtype=torch.long),
            "flip": torch.rand(n, generator=g) < 0.5 if self.flip else torch.zeros(n, dtype=torch.bool),
        }
        return {k: v.to(self.device, non_blocking=True) for k, v in plan.items()}

    def augmented_epoch(self, plan: dict[str, torch.Tensor]) -> torch.Tensor:
        """The whole epoch's images in plan order, cropped and flipped, as uint8 -- one gather.

        A strided view lists every crop window of every stored image, (N, C, 2p+1, 2p+1, H, W),
        without copying; indexing it with (source, dy, dx) per sample takes each sample's crop.
        Cropping at dx and then mirroring equals cropping the mirrored padded image at 2p - dx,
        so a flipped sample reads its mirror copy."""
        source, dy, dx = plan["order"], plan["dy"], plan["dx"]
        if self.flip:
            source = source + self.size * plan["flip"]
            dx = torch.where(plan["flip"], 2 * self.padding - dx, dx)
        if not self.padding:
            return self.images[source]
        n, c = self.images.shape[:2]
        s_n, s_c, s_h, s_w = self.images.stride()
        span = 2 * self.padding + 1
        windows = self.images.as_strided((n, c, span, span, self.height, self.width),
                                         (s_n, s_c, s_h, s_w, s_h, s_w))
        # channels last before indexing, so the gathered epoch comes out in NHWC memory
        return windows.permute(0, 2, 3, 4, 5, 1)[source, dy, dx].permute(0, 3, 1, 2)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self.epoch_plan()
        images = self.augmented_epoch(plan) if self.train else self.images
        labels = self.labels[plan["order"]] if self.train else self.labels
        for start in range(0, self.size, self.batch_size):
            batch = images[start:start + self.batch_size].to(memory_format=self.memory_format)
            yield torch.addcmul(self.shift, batch, self.scale), labels[start:start + self.batch_size]


# --------------------------------------------------------------------------------------------
# The original study's pipeline (torchvision transforms + DataLoader)
# --------------------------------------------------------------------------------------------

class _PILDataset(torch.utils.data.Dataset):
    """A split served one PIL image at a time, as torchvision's own dataset classes do."""

    def __init__(self, split: Split, transform) -> None:
        self.images = split.images.permute(0, 2, 3, 1).numpy()  # N, H, W, C
        self.labels = split.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        image = self.images[i]
        image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        return self.transform(image), self.labels[i]


def torchvision_loader(split: Split, spec: DatasetSpec, batch_size: int, *, train: bool,
                       seed: int = 0, random_crop: bool = True, crop_padding: int = 4,
                       random_flip: bool = True, num_workers: int = 2,
                       pin_memory: bool = False):
    from torchvision import transforms as T

    steps = []
    if train and random_crop:
        steps.append(T.RandomCrop(spec.image_size, padding=crop_padding))
    if train and random_flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    loader = torch.utils.data.DataLoader(
        _PILDataset(split, T.Compose(steps)), batch_size=batch_size, shuffle=train,
        num_workers=num_workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_seed_worker, persistent_workers=num_workers > 0,
    )
    return loader if num_workers > 0 else _SeededInProcess(loader, seed)


class _SeededInProcess:
    """A worker-less DataLoader whose transforms are seeded too: without workers, torchvision's
    transforms draw from torch's global generator, so each epoch seeds it from the loader's own
    seeded stream (workers get their seeds from the DataLoader's generator instead)."""

    def __init__(self, loader: torch.utils.data.DataLoader, seed: int) -> None:
        self.loader = loader
        self.dataset = loader.dataset
        self.batch_size = loader.batch_size
        self.epoch_seeds = torch.Generator().manual_seed(seed + 1)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=self.epoch_seeds)))
        return iter(self.loader)


def _seed_worker(worker_id: int) -> None:
    """DataLoader seeds torch in each worker from its generator; transforms use torch RNG."""
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loaders(config: RunConfig, device: torch.device):
    """(train loader, eval loader, spec, sources) for a config, on the chosen pipeline."""
    spec = DATASETS[config.dataset]
    train_split, test_split = load_split(config, True), load_split(config, False)
    eval_batch = config.eval_batch_size or config.batch_size
    augment = dict(random_crop=config.random_crop, crop_padding=config.crop_padding,
                   random_flip=config.random_flip)
    if config.pipeline == "tensor":
        train_loader = TensorLoader(train_split, spec, config.batch_size, device=device, train=True,
                                    seed=config.seed, channels_last=config.channels_last, **augment)
        eval_loader = TensorLoader(test_split, spec, eval_batch, device=device, train=False,
                                   channels_last=config.channels_last)
    else:
        pin = device.type == "cuda"
        train_loader = torchvision_loader(train_split, spec, config.batch_size, train=True,
                                          seed=config.seed, num_workers=config.num_workers,
                                          pin_memory=pin, **augment)
        eval_loader = torchvision_loader(test_split, spec, eval_batch, train=False,
                                         num_workers=config.num_workers, pin_memory=pin)
    return train_loader, eval_loader, spec, {"train": train_split.source, "test": test_split.source}
