"""Dataset loading, lookup, splitting and augmentation, on real CIFAR-10 and Fashion-MNIST slices."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from search.measure import data as data_mod
from search.measure.data import (DataError, Normalizer, find_dataset_root, final_split, load_dataset, make_split,
                         random_crop_flip, stratified_split)

SHARED_NPZ = data_mod.project_data_dir() / "cifar10.npz"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_cifar = pytest.mark.skipif(not SHARED_NPZ.is_file(), reason=f"CIFAR-10 not at {SHARED_NPZ}")
needs_fashion = pytest.mark.skipif(not FASHION_DIR.is_dir(),
                                   reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist")


@pytest.fixture(autouse=True)
def no_env_data(monkeypatch):
    """Tests decide the lookup themselves: no ASCAN_DATA from the caller's shell."""
    monkeypatch.delenv(data_mod.DATA_ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def cifar_slice():
    """600 train and 200 test images of the real npz, in its NHWC layout."""
    if not SHARED_NPZ.is_file():
        pytest.skip(f"CIFAR-10 not at {SHARED_NPZ}")
    with np.load(SHARED_NPZ) as npz:
        return {k: npz[k][:600] if "train" in k else npz[k][:200] for k in ("x_train", "y_train", "x_test", "y_test")}


def write_batches_dir(directory: Path, arrays: dict) -> Path:
    """The official cifar-10-batches-py layout: 5 pickled train batches and a test batch."""
    directory.mkdir(parents=True)

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                 b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"filenames": [b"x.png"] * len(x)}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))

    for i, part in enumerate(np.array_split(np.arange(len(arrays["x_train"])), 5), start=1):
        dump(f"data_batch_{i}", arrays["x_train"][part], arrays["y_train"][part])
    dump("test_batch", arrays["x_test"], arrays["y_test"])
    return directory


# ---------------------------------------------------------------------------- loaders
def test_shared_npz_loads_whole_dataset_as_uint8_nchw(cifar):
    assert cifar.source == SHARED_NPZ.resolve()
    assert cifar.x_train.shape == (50000, 3, 32, 32) and cifar.x_train.dtype == torch.uint8
    assert cifar.x_test.shape == (10000, 3, 32, 32) and cifar.y_test.dtype == torch.int64
    assert torch.bincount(cifar.y_train).tolist() == [5000] * 10
    assert cifar.class_names[0] == "airplane" and cifar.num_classes == 10 and cifar.in_chans == 3
    assert load_dataset("cifar10") is cifar  # cached per process


def test_npz_and_batches_dir_formats_give_the_same_images(tmp_path, cifar_slice):
    np.savez(tmp_path / "cifar10.npz", **cifar_slice)
    batches = write_batches_dir(tmp_path / "batches" / "cifar-10-batches-py", cifar_slice)
    from_npz = load_dataset("cifar10", root=tmp_path)
    from_batches = load_dataset("cifar10", root=tmp_path / "batches")
    assert from_npz.source == (tmp_path / "cifar10.npz").resolve() and from_batches.source == batches.resolve()
    expected = torch.from_numpy(cifar_slice["x_train"]).permute(0, 3, 1, 2)
    for ds in (from_npz, from_batches):
        assert torch.equal(ds.x_train, expected)
        assert torch.equal(ds.y_train, torch.from_numpy(cifar_slice["y_train"]).long())
        assert torch.equal(ds.x_test, torch.from_numpy(cifar_slice["x_test"]).permute(0, 3, 1, 2))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_batches_reader_refuses_pickles_that_run_code(tmp_path, cifar_slice, monkeypatch):
    directory = write_batches_dir(tmp_path / "cifar-10-batches-py", cifar_slice)
    (directory / "data_batch_3").write_bytes(pickle.dumps({b"data": _Exploit()}, protocol=2))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR-10 batch \(refusing global (posix|os)\.system\)"):
        load_dataset("cifar10", root=directory)
    assert not (tmp_path / "pwned").exists()


def test_resize_on_load(tmp_path, cifar_slice):
    np.savez(tmp_path / "cifar10.npz", **cifar_slice)
    small = load_dataset("cifar10", root=tmp_path, img_size=16)
    assert small.x_train.shape == (600, 3, 16, 16) and small.x_test.shape == (200, 3, 16, 16)
    full = torch.from_numpy(cifar_slice["x_train"][:1]).permute(0, 3, 1, 2).float()
    assert abs(small.x_train[:1].float().mean() - full.mean()) < 2  # same picture, fewer pixels


@needs_fashion
def test_fashion_mnist_from_debian_idx_gz_files():
    ds = load_dataset("fashion_mnist")
    assert ds.source == FASHION_DIR.resolve()
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10 and ds.in_chans == 1
    assert 70 < ds.x_train[:1000].float().mean() < 80  # published mean 0.286 * 255 = 72.9


@needs_fashion
def test_idx_reader_rejects_a_truncated_file(tmp_path):
    images = load_dataset("fashion_mnist").x_train[:5, 0].numpy()
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 5, 28, 28)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()[:-10]))
    with pytest.raises(DataError, match=r"header says \(5, 28, 28\)"):
        data_mod._read_idx(tmp_path / "train-images-idx3-ubyte.gz")


def test_image_folder_with_train_and_test(tmp_path, cifar_slice):
    from PIL import Image
    names = ["airplane", "automobile"]
    for split, (x, y) in {"train": (cifar_slice["x_train"], cifar_slice["y_train"]),
                          "test": (cifar_slice["x_test"], cifar_slice["y_test"])}.items():
        for label, cls in enumerate(names):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in np.flatnonzero(y == label)[:3]:
                Image.fromarray(x[i]).save(tmp_path / split / cls / f"{i:04d}.png")
    ds = load_dataset("imagefolder", root=tmp_path, img_size=32)
    assert ds.class_names == tuple(names)
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    first = int(np.flatnonzero(cifar_slice["y_train"] == 0)[0])
    assert torch.equal(ds.x_train[0], torch.from_numpy(cifar_slice["x_train"][first]).permute(2, 0, 1))  # PNG is lossless
    assert len(ds.y_test) == 6
    assert load_dataset("imagefolder", root=tmp_path, img_size=16).x_test.shape == (6, 3, 16, 16)


# ---------------------------------------------------------------------------- lookup
def test_lookup_order_explicit_root_then_env_var(tmp_path, cifar_slice, monkeypatch):
    (tmp_path / "env").mkdir()
    (tmp_path / "mine").mkdir()
    np.savez(tmp_path / "env" / "cifar10.npz", **cifar_slice)
    np.savez(tmp_path / "mine" / "cifar10.npz", **cifar_slice)
    monkeypatch.setenv(data_mod.DATA_ENV_VAR, str(tmp_path / "env"))
    assert find_dataset_root("cifar10") == tmp_path / "env" / "cifar10.npz"
    assert find_dataset_root("cifar10", root=tmp_path / "mine") == tmp_path / "mine" / "cifar10.npz"


@needs_cifar
def test_lookup_falls_back_to_the_shared_sibling_directory():
    assert find_dataset_root("cifar10") == SHARED_NPZ


def test_missing_data_error_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv(data_mod.DATA_ENV_VAR, str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "project_data_dir", lambda: tmp_path / "shared")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10")
    message = str(err.value)
    assert "\n" not in message
    for place in (tmp_path / "env", tmp_path / "shared", tmp_path / "cache" / "ascan-search"):
        assert str(place) in message
    assert "data.download=true" in message and "ASCAN_DATA" in message
    with pytest.raises(DataError, match=f"not found \\(looked in: {tmp_path / 'nowhere'}\\)"):
        load_dataset("cifar10", root=tmp_path / "nowhere")  # an explicit root is never second-guessed
    with pytest.raises(DataError, match="imagefolder.*needs data.root"):
        load_dataset("imagefolder")
    with pytest.raises(DataError, match="unknown"):
        load_dataset("mnist3d")


# ---------------------------------------------------------------------------- download
def cifar_archive(folder: Path, arrays: dict) -> Path:
    """A real archive in the official format (cifar-10-python.tar.gz), from a slice of the data."""
    import tarfile

    batches = write_batches_dir(folder / "src" / "cifar-10-batches-py", arrays)
    archive = folder / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    return archive


@pytest.fixture
def offline_download(tmp_path, cifar_slice, monkeypatch):
    """torchvision's `download_url` replaced by a copy of a real small archive (this machine
    has no internet); the checksum, unpacking and conversion are the real ones. Returns the
    list of URLs asked for."""
    import hashlib
    import shutil

    import torchvision.datasets.utils as tv_utils

    archive = cifar_archive(tmp_path / "server", cifar_slice)
    monkeypatch.setattr(data_mod, "CIFAR10_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    asked = []

    def download_url(url, root, filename=None, md5=None, max_redirect_hops=3):
        asked.append(url)
        shutil.copy(archive, Path(root) / filename)

    monkeypatch.setattr(tv_utils, "download_url", download_url)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(data_mod, "project_data_dir", lambda: tmp_path / "no-shared")
    return asked


def test_download_fetches_checks_converts_and_is_found_next_time(tmp_path, cifar_slice, offline_download):
    data_mod._load_cached.cache_clear()
    dataset = load_dataset("cifar10", download=True)
    assert offline_download == [data_mod.CIFAR10_URL]
    cached = tmp_path / "cache" / "ascan-search" / "cifar10.npz"
    assert dataset.source == cached and sorted(p.name for p in cached.parent.iterdir()) == ["cifar10.npz"]
    assert torch.equal(dataset.x_train, torch.from_numpy(cifar_slice["x_train"]).permute(0, 3, 1, 2))
    assert torch.equal(dataset.y_test, torch.from_numpy(cifar_slice["y_test"]).long())
    assert find_dataset_root("cifar10") == cached
    load_dataset("cifar10", download=True)
    assert len(offline_download) == 1  # found in the cache: not fetched again


def test_download_with_the_wrong_checksum_keeps_nothing(tmp_path, offline_download, monkeypatch):
    monkeypatch.setattr(data_mod, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(DataError, match="does not have the published MD5"):
        load_dataset("cifar10", download=True)
    assert list((tmp_path / "cache" / "ascan-search").iterdir()) == []


def test_the_command_line_names_data_download_and_accepts_it(tmp_path, offline_download):
    from search.app.settings import SettingsError, parse_args, validate

    args = ["space=paper", f"results_dir={tmp_path / 'results'}"]
    with pytest.raises(SettingsError, match="data.download=true"):
        validate(parse_args(args))
    validate(parse_args([*args, "data.download=true"]))  # fetched when the run loads it, not here
    assert offline_download == []


# ---------------------------------------------------------------------------- splitting
def test_stratified_split_is_deterministic_disjoint_and_balanced(cifar):
    train, val = stratified_split(cifar.y_train, train_size=5000, val_size=2000, seed=0)
    again_train, again_val = stratified_split(cifar.y_train, train_size=5000, val_size=2000, seed=0)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert len(train) == 5000 and len(val) == 2000
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.bincount(cifar.y_train[train]).tolist() == [500] * 10
    assert torch.bincount(cifar.y_train[val]).tolist() == [200] * 10
    other_seed, _ = stratified_split(cifar.y_train, train_size=5000, val_size=2000, seed=1)
    assert not torch.equal(train, other_seed)
    # the scoring slice does not move when a preset trains on more images
    bigger, same_val = stratified_split(cifar.y_train, train_per_class=1000, val_size=2000, seed=0)
    assert torch.equal(val, same_val) and set(train.tolist()) < set(bigger.tolist())


def test_stratified_split_of_unbalanced_labels_and_impossible_requests():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    train, val = stratified_split(labels, train_size=50, val_size=20, seed=3)
    assert np.bincount(labels[val]).tolist() == [12, 6, 2]
    assert np.bincount(labels[train]).tolist() == [30, 15, 5]
    with pytest.raises(DataError, match="class 2 has 10 images, asked 9 train \\+ 2 val"):
        stratified_split(labels, train_per_class=9, val_size=20, seed=0)


def test_search_split_never_touches_test_and_final_split_does(cifar):
    split = make_split(cifar, train_size=1000, val_size=500, seed=0)
    train_idx, val_idx = stratified_split(cifar.y_train, train_size=1000, val_size=500, seed=0)
    assert split.eval_split == "val" and torch.equal(split.x_val, cifar.x_train[val_idx])
    assert torch.equal(split.x_train, cifar.x_train[train_idx])
    np.testing.assert_allclose(split.mean, (0.4913, 0.4821, 0.4465), atol=0.01)
    final = final_split(cifar, train_size=1000, seed=0)
    assert final.eval_split == "test" and torch.equal(final.x_val, cifar.x_test)


# ---------------------------------------------------------------------------- augmentation
def test_random_crop_flip_is_a_shifted_possibly_mirrored_window(cifar):
    images = cifar.x_train[:16]
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    again = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape and torch.equal(out, again)
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    flips = 0
    for i in range(len(images)):
        windows = [(flip, padded[i, :, dy:dy + 32, dx:dx + 32]) for dy in range(9) for dx in range(9)
                   for flip in (False, True)]
        matches = [flip for flip, w in windows if torch.equal(out[i], w.flip(-1) if flip else w)]
        assert matches, f"image {i} is no crop of its padded input"
        flips += matches[0]
    assert 2 <= flips <= 14  # about half are mirrored


def test_normalizer_standardises_the_training_images(cifar):
    split = make_split(cifar, train_size=2000, val_size=100, seed=0)
    x = Normalizer(split.mean, split.std)(split.x_train, torch.channels_last)
    assert x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-3)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3)).numpy(), 1, atol=1e-3)
