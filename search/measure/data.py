"""Image datasets for proxy training: find them, load them into memory, split and augment them.

Datasets live in memory as uint8 NCHW tensors (CIFAR-10 is 150 MiB), so no torchvision
dataset or DataLoader is needed and one batch is one indexing operation.

Where a dataset is looked for, in this order (the first hit wins):
  1. `root=` given by the caller (`data.root=...`). It is authoritative: when it is given and
     the dataset is not there, that is an error, never a silent fall-back elsewhere.
  2. the directory in the environment variable `ASCAN_DATA`;
  3. the project's sibling `../shared/data` (the parent of the repository holds `shared/`);
  4. the user cache `~/.cache/ascan-search` (where `data.download=true` puts CIFAR-10);
  5. Fashion-MNIST only: `/usr/share/datasets`, where Debian's `dataset-fashion-mnist` puts it.

Every loaded dataset is checked before use (`check_arrays`): uint8 N x C x H x W images of at
least 8 x 8 pixels, integer labels as many as the images and inside the class range, at least
2 training images per class. Files are read without pickles (`np.load(allow_pickle=False)`,
an unpickler that rebuilds only arrays), with their sizes checked before reading; a broken
file is one `DataError` line naming the file and the array.

The search never looks at the test split: `make_split` draws a stratified train subset and a
held-out validation slice from the TRAIN split. `final_split` (train vs. test) is for final
reporting only.
"""
from __future__ import annotations

import functools
import gzip
import math
import os
import pickle
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

DATA_ENV_VAR = "ASCAN_DATA"
DATASETS = ("cifar10", "fashion_mnist", "imagefolder")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"  # published on the CIFAR-10 page
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")
MIN_IMAGE_SIZE = 8  # pixels per side: the four stages halve the resolution
MIN_PER_CLASS = 2  # training images per class: one for training, one for validation
MAX_FILE_BYTES = 2 << 30  # one array or batch file; CIFAR-10 whole is 180 MB
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataError(ValueError):
    """A dataset is missing, malformed or asked for the impossible (the message is one line,
    of bounded length: it quotes paths and values that come from users)."""

    def __init__(self, message: str):
        message = " ".join(message.split())
        super().__init__(message if len(message) <= 500 else message[:497] + "...")


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A whole dataset in memory. Tensors are shared by every user: treat them as read-only."""

    name: str
    x_train: torch.Tensor  # uint8, N x C x H x W
    y_train: torch.Tensor  # int64, N
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    source: Path

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def img_size(self) -> int:
        return int(self.x_train.shape[-1])


# ---------------------------------------------------------------------------- lookup
def project_data_dir() -> Path:
    """`../shared/data` next to the repository that holds this package."""
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def user_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ascan-search"


def _candidates(name: str, base: Path) -> list[Path]:
    """Paths under `base` that could hold dataset `name`, most specific first."""
    if name == "cifar10":
        return [base, base / "cifar10.npz", base / "cifar-10-batches-py"]
    if name == "fashion_mnist":
        return [base, base / "fashion-mnist", base / "fashion_mnist", base / "FashionMNIST" / "raw"]
    return [base]


def _holds(name: str, path: Path) -> bool:
    try:
        return _holds_unchecked(name, path)
    except OSError:  # e.g. a name longer than the file system allows: nothing is there
        return False


def _holds_unchecked(name: str, path: Path) -> bool:
    if name == "cifar10":
        return (path.is_file() and path.suffix == ".npz") or (path / "data_batch_1").is_file()
    if name == "fashion_mnist":
        return any((path / f"train-images-idx3-ubyte{ext}").is_file() for ext in (".gz", ""))
    return path.is_dir()


def find_dataset_root(name: str, root: str | Path | None = None) -> Path:
    """The file or directory holding dataset `name` (see the module docstring for the order)."""
    if name not in DATASETS:
        raise DataError(f"dataset {name!r}: unknown (choose one of {', '.join(DATASETS)})")
    if name == "imagefolder" and root is None:
        raise DataError("dataset 'imagefolder': needs data.root=<directory with one sub-folder per class>")
    if root is not None:
        bases = [Path(root).expanduser()]
    else:
        env = os.environ.get(DATA_ENV_VAR)
        bases = ([Path(env).expanduser()] if env else []) + [project_data_dir(), user_cache_dir()]
        if name == "fashion_mnist":
            bases.append(Path("/usr/share/datasets"))
    for base in bases:
        for path in _candidates(name, base):
            if _holds(name, path):
                return path
    raise DataError(f"dataset {name!r} not found (looked in: {', '.join(map(str, bases))}); {_how_to_get(name)}")


def _how_to_get(name: str, downloading: bool = False) -> str:
    if name == "cifar10":
        fetch = "" if downloading else f"run with data.download=true to fetch it into {user_cache_dir()}, or "
        return f"{fetch}put cifar10.npz or cifar-10-batches-py/ in one of them, or set {DATA_ENV_VAR}"
    if name == "fashion_mnist":
        return f"`apt-get install dataset-fashion-mnist`, or put its *-idx*-ubyte.gz files in a directory in {DATA_ENV_VAR}"
    return "point data.root at a directory of class sub-folders (optionally under train/ and test/)"


# ---------------------------------------------------------------------------- loading
def load_dataset(name: str = "cifar10", root: str | Path | None = None, img_size: int | None = None,
                 download: bool = False) -> ImageDataset:
    """Load a dataset into memory, resized to `img_size` when given (cached per process)."""
    try:
        path = find_dataset_root(name, root)
    except DataError:
        if not (download and name == "cifar10"):
            raise
        path = download_cifar10(Path(root).expanduser() if root is not None else user_cache_dir())
    return _load_cached(name, path.resolve(), img_size)


@functools.lru_cache(maxsize=2)
def _load_cached(name: str, path: Path, img_size: int | None) -> ImageDataset:
    as_stored: dict = {}  # how the file lays out its images, for messages (we hold N x C x H x W)
    if name == "cifar10" and path.is_file():
        arrays, class_names = _read_cifar_npz(path), CIFAR10_CLASSES
        as_stored = {"stored": lambda s: (s[0], *s[2:], s[1]), "layout": "N x H x W x C"}
    elif name == "cifar10":
        arrays, class_names = _read_cifar_batches(path), CIFAR10_CLASSES
    elif name == "fashion_mnist":
        arrays = _read_fashion_mnist(path)
        class_names = FASHION_CLASSES
    else:
        arrays, class_names = _read_image_folder(path, img_size or 32)
    check_arrays(path, arrays, len(class_names), **as_stored)
    x_train, y_train, x_test, y_test = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    if img_size is not None:
        x_train, x_test = resize_images(x_train, img_size), resize_images(x_test, img_size)
    return ImageDataset(name, x_train, y_train.long(), x_test, y_test.long(), tuple(class_names), path)


ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")


def check_arrays(source: Path, arrays: tuple[np.ndarray, ...], num_classes: int,
                 stored: Callable[[tuple[int, ...]], tuple[int, ...]] = tuple, layout: str = "N x C x H x W") -> None:
    """Raise a one-line `DataError` naming `source` and the array unless (x_train, y_train,
    x_test, y_test) form a usable dataset: see the module docstring. The test split may be empty.
    `stored` maps an image array's shape (N, C, H, W) back to the file's own layout, `layout`
    names that layout: a message shows the shape as the user finds it in the file."""
    def fail(name: str, problem: str) -> DataError:
        return DataError(f"{source}: {name}: {problem}")

    if num_classes < 2:  # one class: every network scores 1.000, a meaningless search
        raise fail("y_train", f"{num_classes} class; a search needs at least 2")
    for x_name, y_name, x, y in (("x_train", "y_train", *arrays[:2]), ("x_test", "y_test", *arrays[2:])):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
            shape = stored(x.shape) if x.ndim == 4 else x.shape
            raise fail(x_name, f"expected uint8 images {layout} with 1 or 3 channels, got {x.dtype} {shape}")
        if len(x) and min(x.shape[2:]) < MIN_IMAGE_SIZE:
            raise fail(x_name, f"images of {x.shape[2]} x {x.shape[3]} px are below {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}")
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise fail(y_name, f"expected a 1-D array of integer labels, got {y.dtype} {y.shape}")
        if len(y) != len(x):
            raise fail(y_name, f"{len(y)} labels for {len(x)} images in {x_name}")
        if len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise fail(y_name, f"labels range {y.min()}..{y.max()}, outside 0..{num_classes - 1} ({num_classes} classes)")
    if arrays[0].shape[2:] != arrays[2].shape[2:] and len(arrays[2]):
        raise fail("x_test", f"images of {arrays[2].shape[2:]} px, but x_train has {arrays[0].shape[2:]}")
    counts = np.bincount(arrays[1], minlength=num_classes)
    if counts.min() < MIN_PER_CLASS:
        raise fail("y_train", f"class {int(counts.argmin())} has {int(counts.min())} images, need at least {MIN_PER_CLASS}")


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array in an `.npz`, read from the headers alone, so that
    a file claiming a huge or object array is refused before anything is allocated."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
            if dtype.hasobject:
                raise DataError(f"{path}: {name}: holds Python objects (dtype {dtype}); only numeric arrays are read")
            if math.prod(shape) * dtype.itemsize > MAX_FILE_BYTES:
                raise DataError(f"{path}: {name}: shape {shape} of {dtype} is larger than {MAX_FILE_BYTES >> 30} GiB")
            headers[name] = (shape, dtype)
    return headers


def _read_cifar_npz(path: Path) -> tuple[np.ndarray, ...]:
    """`.npz` with `x_train` uint8 NHWC, `y_train`, `x_test`, `y_test` (the layout of shared/data)."""
    try:
        headers = _npz_headers(path)
        missing = set(ARRAY_NAMES) - set(headers)
        if missing:
            raise DataError(f"{path}: missing arrays {sorted(missing)} (need {', '.join(ARRAY_NAMES)})")
        for name in ("x_train", "x_test"):
            shape, dtype = headers[name]
            if len(shape) != 4 or shape[-1] not in (1, 3):
                raise DataError(f"{path}: {name}: expected images N x H x W x C with 1 or 3 channels, got {dtype} {shape}")
        with np.load(path, allow_pickle=False) as archive:
            x_train, y_train, x_test, y_test = (archive[name] for name in ARRAY_NAMES)
    except DataError:
        raise
    # What numpy and zipfile raise for truncated, bit-flipped, garbage or empty files.
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as err:
        raise DataError(f"{path}: not a readable .npz of arrays ({_first_line(err)})") from None
    return x_train.transpose(0, 3, 1, 2), y_train, x_test.transpose(0, 3, 1, 2), y_test


def _first_line(err: BaseException, limit: int = 120) -> str:
    text = (str(err).splitlines() or [type(err).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """The official CIFAR batches are pickles; pickles can run code. This unpickler resolves
    only the few globals needed to rebuild numpy arrays and bytes, and refuses everything else."""

    _sample = np.zeros(1, np.uint8)
    ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _sample.__reduce__()[0],
        ("numpy._core.multiarray", "_reconstruct"): _sample.__reduce__()[0],
        ("numpy.core.numeric", "_frombuffer"): _sample.__reduce_ex__(5)[0],
        ("numpy._core.numeric", "_frombuffer"): _sample.__reduce_ex__(5)[0],
        ("_codecs", "encode"): __import__("codecs").encode,  # how Python 3 pickles bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}") from None


def _unpickle_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images N x 3 x 32 x 32 uint8, labels N int64), shapes checked
    before any conversion (a list of shared references can claim billions of items)."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {path.stat().st_size} bytes, larger than a CIFAR-10 batch can be")
    try:
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="bytes").load()
    # A malformed pickle can fail in any of the allowed constructors; each means "not a batch".
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, MemoryError) as err:
        raise DataError(f"{path}: not a CIFAR-10 batch ({_first_line(err)})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (expected a dict, got {type(batch).__name__})")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        shown = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: data: expected a uint8 array N x 3072, got {shown}")
    if isinstance(labels, list) and len(labels) == len(data) and all(type(label) is int for label in labels):
        labels = np.asarray(labels, np.int64)
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        shown = f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray) else f"{type(labels).__name__}"
        raise DataError(f"{path}: labels: expected {len(data)} integers, got {shown}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_cifar_batches(directory: Path) -> tuple[np.ndarray, ...]:
    """The official `cifar-10-batches-py`: data_batch_1..5 and test_batch."""
    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [_unpickle_batch(directory / f) for f in files]
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

    train_files = sorted(p.name for p in directory.glob("data_batch_*"))
    if not (directory / "test_batch").is_file():
        raise DataError(f"{directory}: missing test_batch")
    return (*read(train_files), *read(["test_batch"]))


def download_cifar10(target: Path) -> Path:
    """Fetch the official archive with torchvision's downloader, check its MD5, and keep it as
    `target/cifar10.npz` in the layout this module reads (x uint8 N x H x W x C); returns that
    path. The archive and its batches are unpacked in a temporary folder and removed after."""
    from torchvision.datasets.utils import check_integrity, download_url

    target.mkdir(parents=True, exist_ok=True)
    out = target / "cifar10.npz"
    with tempfile.TemporaryDirectory(dir=target, prefix=".cifar10-") as tmp:
        archive = Path(tmp) / "cifar-10-python.tar.gz"
        print(f"downloading CIFAR-10 (170 MB) from {CIFAR10_URL} into {target}", flush=True)
        try:
            download_url(CIFAR10_URL, tmp, archive.name)
        except (OSError, RuntimeError) as err:  # no network, HTTP errors, too many redirects
            raise DataError(f"cifar10: download from {CIFAR10_URL} failed ({_first_line(err)}); "
                            f"{_how_to_get('cifar10', downloading=True)}") from None
        if not check_integrity(archive, CIFAR10_MD5):
            raise DataError(f"cifar10: {CIFAR10_URL} does not have the published MD5 {CIFAR10_MD5}; not using it")
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError) as err:
            raise DataError(f"cifar10: {archive.name}: cannot unpack ({_first_line(err)})") from None
        x_train, y_train, x_test, y_test = _read_cifar_batches(Path(tmp) / "cifar-10-batches-py")
        check_arrays(archive, (x_train, y_train, x_test, y_test), len(CIFAR10_CLASSES))
        partial = Path(tmp) / out.name
        np.savez(partial, x_train=x_train.transpose(0, 2, 3, 1), y_train=y_train,
                 x_test=x_test.transpose(0, 2, 3, 1), y_test=y_test)
        os.replace(partial, out)  # atomic: a half-written file is never found
    return out


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic with dtype code and rank, big-endian sizes, data."""
    try:
        with (gzip.open(path) if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read(MAX_FILE_BYTES + 1)  # bounded: a small .gz can inflate to any size
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: not a readable IDX file ({_first_line(err)})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise DataError(f"{path}: more than {MAX_FILE_BYTES >> 30} GiB of data")
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    data = np.frombuffer(bytearray(raw), np.uint8, offset=4 + 4 * rank)  # writable, for torch
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _read_fashion_mnist(directory: Path) -> tuple[np.ndarray, ...]:
    def read(stem: str) -> np.ndarray:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                return _read_idx(candidate)
        raise DataError(f"{directory}: missing {stem}.gz")

    x_train, x_test = read("train-images-idx3-ubyte"), read("t10k-images-idx3-ubyte")
    return (x_train[:, None], read("train-labels-idx1-ubyte").astype(np.int64),
            x_test[:, None], read("t10k-labels-idx1-ubyte").astype(np.int64))


def _read_image_folder(root: Path, img_size: int) -> tuple[tuple[np.ndarray, ...], list[str]]:
    """`root/<class>/*.png`, or `root/train/<class>/...` with an optional `root/test/` (or `val/`)."""
    from PIL import Image  # Pillow comes with torchvision; only this loader needs it

    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next((root / d for d in ("test", "val") if train_dir != root and (root / d).is_dir()), None)
    class_names = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not class_names:
        raise DataError(f"{train_dir}: no class sub-folders found")
    if len(class_names) < 2:  # one class: every network scores 1.000, a meaningless search
        raise DataError(f"{train_dir}: one class sub-folder ({class_names[0]!r}); a search needs at least 2 classes")

    def decode(file: Path) -> np.ndarray:
        """Every image is decoded here, when the folder is opened: a broken one is named now,
        not met as a PIL traceback in the middle of a training."""
        try:
            with Image.open(file) as img:
                rgb = img.convert("RGB").resize((img_size, img_size), Image.Resampling.BILINEAR)
        except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
            raise DataError(f"{file}: not a readable image ({_first_line(err)})") from None
        return np.asarray(rgb).transpose(2, 0, 1)

    def listed(folder: Path) -> list[Path]:
        return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []

    def read(directory: Path | None) -> tuple[np.ndarray, np.ndarray]:
        files = {cls: listed(directory / cls) for cls in class_names} if directory is not None else {}
        if directory is train_dir and not any(files.values()):
            raise DataError(f"{train_dir}: no images with suffix {', '.join(sorted(IMAGE_SUFFIXES))}")
        if any(files.values()):  # the test split may be absent, but not lack a class
            cls, few = min(files.items(), key=lambda item: len(item[1]))
            if len(few) < MIN_PER_CLASS:
                raise DataError(f"{directory / cls}: {len(few)} images, need at least {MIN_PER_CLASS} per class")
        images, labels = [], []
        for label, cls in enumerate(class_names):
            images += [decode(file) for file in files.get(cls, [])]
            labels += [label] * len(files.get(cls, []))
        shape = (len(images), 3, img_size, img_size)
        return (np.stack(images) if images else np.zeros(shape, np.uint8)), np.asarray(labels, np.int64)

    x_train, y_train = read(train_dir)
    return (x_train, y_train, *read(test_dir)), class_names


def resize_images(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 N x C x H x W tensor (in chunks to bound memory)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


# ---------------------------------------------------------------------------- splitting
def _quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` across classes in proportion to `counts` (largest remainder, ties to lower class)."""
    exact = total * counts / counts.sum()
    quotas = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(counts)), -(exact - quotas)))
    quotas[order[: total - quotas.sum()]] += 1
    return quotas


def stratified_split(labels: torch.Tensor | np.ndarray, *, val_size: int, seed: int,
                     train_size: int | None = None, train_per_class: int | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint, deterministic, class-stratified (train_idx, val_idx) into `labels`.

    Each class is shuffled with `seed`; its validation images come first, its training images
    next. So the validation slice depends only on (labels, val_size, seed): presets that train
    on different amounts of data are still scored on the same images. Give `train_size` (total,
    split in proportion to class sizes), `train_per_class`, or neither (all the rest).
    """
    if train_size is not None and train_per_class is not None:
        raise DataError("stratified_split: give train_size or train_per_class, not both")
    labels = np.asarray(labels, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    for what, value in (("val_size", val_size), ("train_size", train_size), ("train_per_class", train_per_class)):
        if value is not None and value < 0:
            raise DataError(f"stratified_split: {what}={value} must be >= 0")
    val_quota = _quotas(counts, val_size)
    if train_per_class is not None:
        train_quota = np.full_like(counts, train_per_class)
    elif train_size is not None:
        train_quota = _quotas(counts, train_size)
    else:
        train_quota = counts - val_quota
    rng = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for cls, count, n_val, n_train in zip(classes, counts, val_quota, train_quota):
        if n_val + n_train > count:
            raise DataError(f"stratified_split: class {cls} has {count} images, asked {n_train} train + {n_val} val")
        members = rng.permutation(np.flatnonzero(labels == cls))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:n_val + n_train])
    return (torch.from_numpy(np.sort(np.concatenate(train_parts))),
            torch.from_numpy(np.sort(np.concatenate(val_parts))))


@dataclass(frozen=True, eq=False)
class DataSplit:
    """What one proxy training sees: a train subset and the slice it is scored on.

    `eval_split` says what the scoring images are: "val" (held out of the train split; what the
    search uses) or "test" (final reporting only). `mean`/`std` are per channel, in 0..1 units,
    computed on the training images alone.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    name: str
    eval_split: str = "val"

    @classmethod
    def build(cls, name: str, x_train, y_train, x_val, y_val, num_classes: int, eval_split: str) -> "DataSplit":
        pixels = x_train.transpose(0, 1).reshape(x_train.shape[1], -1).double() / 255.0
        mean = tuple(pixels.mean(dim=1).tolist())
        std = tuple(pixels.std(dim=1).clamp_min(1e-3).tolist())
        return cls(x_train, y_train, x_val, y_val, mean, std, num_classes, name, eval_split)

    def to(self, device: torch.device | str) -> "DataSplit":
        """The same split with its tensors on `device` (done once, before training on a GPU)."""
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return DataSplit(move(self.x_train), move(self.y_train), move(self.x_val), move(self.y_val),
                         self.mean, self.std, self.num_classes, self.name, self.eval_split)


def make_split(dataset: ImageDataset, *, val_size: int = 2000, seed: int = 0, train_size: int | None = None,
               train_per_class: int | None = None) -> DataSplit:
    """A stratified train subset and a disjoint validation slice, both from the TRAIN split."""
    train_idx, val_idx = stratified_split(dataset.y_train, val_size=val_size, seed=seed, train_size=train_size,
                                          train_per_class=train_per_class)
    return DataSplit.build(dataset.name, dataset.x_train[train_idx], dataset.y_train[train_idx],
                           dataset.x_train[val_idx], dataset.y_train[val_idx], dataset.num_classes, "val")


def final_split(dataset: ImageDataset, *, seed: int = 0, train_size: int | None = None) -> DataSplit:
    """Train subset vs. the TEST split: for final reports (export, reproduction), never for search."""
    if len(dataset.y_test) == 0:
        raise DataError(f"dataset {dataset.name!r} at {dataset.source}: has no test split")
    train_idx, _ = stratified_split(dataset.y_train, val_size=0, seed=seed, train_size=train_size)
    return DataSplit.build(dataset.name, dataset.x_train[train_idx], dataset.y_train[train_idx],
                           dataset.x_test, dataset.y_test, dataset.num_classes, "test")


# ---------------------------------------------------------------------------- augmentation
def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero padding, plus a random horizontal flip, for a whole N x C x H x W batch.

    Both are one gather: each image reads its rows/columns at a random offset into the padded
    batch, and a flipped image reads its columns backwards.
    """
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=device)
    flip = torch.rand((n, 1), generator=generator, device=device) < 0.5
    cols = torch.arange(w, device=device).expand(n, w)
    cols = torch.where(flip, w - 1 - cols, cols) + dx
    rows = torch.arange(h, device=device) + dy
    batch = torch.arange(n, device=device)[:, None, None, None]
    chans = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


class Normalizer:
    """uint8 images -> float32 (x / 255 - mean) / std, fused into one multiply-add."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu"):
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, images: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
                 ) -> torch.Tensor:
        out = torch.addcmul(self.shift, images.float(), self.scale)
        return out.contiguous(memory_format=memory_format)
