"""Facts about the supported datasets (sizes, shapes, normalisation), kept free of torch so the
config can check subset and batch sizes before anything is loaded."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    torchvision_class: str
    train_size: int
    test_size: int
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    how_to_get: str
    #: label names in class-index order, for confusion matrices; empty: show the indices
    class_names: tuple[str, ...] = ()
    #: (file name, MD5) of the published files, as torchvision lists them (its `train_list` and
    #: `test_list`); a split read from exactly these files says so in its source
    published_md5: tuple[tuple[str, str], ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(
        "cifar10", "CIFAR10", 50_000, 10_000, 3, 32, 10,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),  # as the original study
        how_to_get="run once with download=true while online, or put cifar-10-python.tar.gz "
        "(or its extracted cifar-10-batches-py/) in the data directory",
        class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                     "ship", "truck"),
        published_md5=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
                       ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                       ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                       ("data_batch_4", "634d18415352ddfa80567beed471001a"),
                       ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                       ("test_batch", "40351d587109b95175f43aff81a1287e")),
    ),
    "cifar100": DatasetSpec(
        "cifar100", "CIFAR100", 50_000, 10_000, 3, 32, 100,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        how_to_get="run once with download=true while online, or put cifar-100-python.tar.gz "
        "(or its extracted cifar-100-python/) in the data directory",
        published_md5=(("train", "16019d7e3df5f24257cddd939b257f8d"),
                       ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc")),
    ),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", "FashionMNIST", 60_000, 10_000, 1, 28, 10,
        mean=(0.2860,), std=(0.3530,),
        how_to_get="`apt-get install dataset-fashion-mnist` (works offline; files land in "
        "/usr/share/datasets/fashion-mnist), or run once with download=true while online",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
    ),
}

#: Where Debian's package `dataset-fashion-mnist` installs the original gzip files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
