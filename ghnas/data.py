"""Image data for proxies, meta-training and brief training.

Small image datasets (CIFAR-10 and any ImageFolder tree of small images) are held whole in
memory as one uint8 tensor, in the style of airbench: batches are cut by indexing, moved to
the device as uint8 and normalised (and augmented) there, with no DataLoader in between.

Three sources, one entry point, :func:`load`:

- ``'cifar10'``: an ImageFolder copy (``root/train/<class>/*.jpg`` and ``root/test/...``) or
  the original files read by ``torchvision.datasets.CIFAR10`` (``root/cifar-10-batches-py``).
- ``'imagefolder:PATH'``: any ImageFolder tree, with ``train/`` and ``test/`` (or ``val/``)
  split folders, or a single tree of class folders.
- ``'sample'``: 1,000 CIFAR-10 test images (100 per class) shipped inside the package, so
  proxies can be scored offline.

Decoding a folder of JPEGs is slow (about 10 s for CIFAR-10's 60,000 files on two cores), so
the decoded arrays are cached under ``$GHNAS_CACHE`` (default ``~/.cache/ghnas``) and reused
until the folder's files change.

Example::

    >>> from ghnas import data
    >>> d = data.load('sample')
    >>> len(d), tuple(d.images.shape[1:]), len(d.classes)
    (1000, (3, 32, 32), 10)
    >>> x, y = next(d.batches(64, shuffle=True, seed=0, augment=True))
    >>> x.dtype, tuple(x.shape), tuple(y.shape)
    (torch.float32, (64, 3, 32, 32), (64,))
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import os
import re
import tempfile
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "IMG_EXTENSIONS",
    "SPLITS",
    "ImageData",
    "cache_dir",
    "default_root",
    "load",
    "random_crop_flip",
    "train_val", "default_val_size"]

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

SPLITS: tuple[str, ...] = ("train", "val", "test", "train+val")
NAMES: tuple[str, ...] = ("cifar10", "imagefolder:PATH", "sample")
# the same suffixes torchvision.datasets.ImageFolder accepts
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif",
                                   ".tiff", ".webp")
SAMPLE_FILE = "cifar10_test_sample.npz"
# bump when the cache layout or decoding changes, so old cache files are re-made
_CACHE_VERSION = 1


# --------------------------------------------------------------------------------------
# the in-memory dataset
# --------------------------------------------------------------------------------------
@dataclass(repr=False)
class ImageData:
    """A labelled image set held in memory as uint8, normalised batch by batch.

    Attributes:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: int64 tensor ``(N,)`` of class indices into ``classes``.
        classes: class names.
        mean, std: per-channel normalisation constants on the 0..1 scale (CIFAR-10's
            by default); :meth:`normalize` and :meth:`batches` use them.
        source: a short description of where the images came from (for logs).

    Example::

        >>> import torch
        >>> from ghnas.data import ImageData
        >>> d = ImageData(torch.zeros(10, 3, 8, 8, dtype=torch.uint8), torch.arange(10) % 2,
        ...               ['even', 'odd'])
        >>> [tuple(x.shape) for x, _ in d.batches(4)]
        [(4, 3, 8, 8), (4, 3, 8, 8), (2, 3, 8, 8)]
        >>> len(d.subset(4, seed=0)), d.subset(4, seed=0).labels.bincount().tolist()
        (4, [2, 2])
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] = CIFAR10_MEAN
    std: tuple[float, ...] = CIFAR10_STD
    source: str = ""
    # (device, mean, std) -> (scale, shift) tensors, so batches skip a host-to-device copy
    _norm: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W); got {self.images.dtype} "
                             f"with shape {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise ValueError(f"labels must have shape ({len(self.images)},) to match images; got "
                             f"{tuple(self.labels.shape)}")
        if self.labels.dtype != torch.int64:
            self.labels = self.labels.long()
        self.classes = list(self.classes)
        self.mean, self.std = tuple(self.mean), tuple(self.std)
        c = self.images.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"mean and std need one value per channel ({c}); got "
                             f"mean={self.mean}, std={self.std}")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        shape = tuple(self.images.shape[1:])
        src = f", source={self.source!r}" if self.source else ""
        return (f"ImageData(n={len(self)}, shape={shape}, classes={len(self.classes)}, "
                f"device={self.images.device}{src})")

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> "ImageData":
        """Return a copy whose tensors (still uint8 images) live on ``device``."""
        return dataclasses.replace(self, images=self.images.to(device),
                                   labels=self.labels.to(device))

    def subset(self, n: int, seed: int = 0) -> "ImageData":
        """Return ``n`` images chosen at random with a fixed ``seed``, class-balanced.

        Each class gets ``n // num_classes`` images (classes with too few images give all
        they have and the rest is shared out among the others); the leftover images go to
        randomly chosen classes. The chosen images keep their relative order.
        """
        if not 0 <= n <= len(self):
            raise ValueError(f"subset size n={n} must be between 0 and len(data)={len(self)}")
        labels = self.labels.cpu().numpy()
        idx = _balanced_pick(labels, n, np.random.default_rng(seed))
        return self._take(torch.from_numpy(idx))

    def _take(self, idx: torch.Tensor) -> "ImageData":
        idx = idx.to(self.images.device)
        return dataclasses.replace(self, images=self.images[idx], labels=self.labels[idx])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map a uint8 batch ``(N, C, H, W)`` (or one image ``(C, H, W)``) to normalised float32.

        Works on whatever device ``images`` is on: ``(images / 255 - mean) / std``.
        """
        if images.dtype != torch.uint8:
            raise ValueError(f"normalize expects uint8 images; got {images.dtype}")
        key = (images.device, self.mean, self.std)
        if key not in self._norm:
            mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
            std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
            # fold the /255 into the affine map: one multiply and one subtract per pixel
            self._norm[key] = ((1.0 / (255.0 * std)).to(images.device),
                               (mean / std).to(images.device))
        scale, shift = self._norm[key]
        return images.float().mul_(scale).sub_(shift)

    def batches(self, batch_size: int, shuffle: bool = False, seed: int | None = None,
                device: torch.device | str | None = None, augment: bool = False,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield one pass over the data as normalised float32 ``(x, y)`` batches.

        Args:
            batch_size: images per batch.
            shuffle: visit the images in a random order.
            seed: seeds the order and the augmentation (same seed, same batches); ``None``
                draws from torch's global generator, so ``torch.manual_seed`` applies.
            device: where the batches go (default: where the images are). Images move as
                uint8 and are normalised on ``device``.
            augment: random crop with 4-pixel zero padding and random horizontal flip, the
                usual CIFAR training augmentation (see :func:`random_crop_flip`).
            drop_last: skip a final batch smaller than ``batch_size``.

        Example::

            >>> from ghnas.data import load
            >>> d = load('sample')
            >>> sum(len(y) for _, y in d.batches(300, drop_last=True))
            900
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        device = torch.device(device) if device is not None else self.images.device
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        n = len(self)
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            if drop_last and len(idx) < batch_size:
                break
            x = self.images[idx].to(device, non_blocking=True)
            y = self.labels[idx].to(device, non_blocking=True)
            if augment:
                x = random_crop_flip(x, generator=gen)
            yield self.normalize(x), y


def random_crop_flip(images: torch.Tensor, pad: int = 4,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly crop each image after zero-padding by ``pad`` pixels, then flip half of them.

    Works on a batch ``(N, C, H, W)`` of any dtype on any device, in one gather; the random
    numbers come from ``generator`` (a CPU generator; ``None`` means torch's global one).
    Equivalent to torchvision's ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip()``.
    """
    n, c, h, w = images.shape
    dev = images.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    # a flipped crop reads the crop's columns right to left
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    padded = F.pad(images, (pad, pad, pad, pad))
    return padded[torch.arange(n, device=dev)[:, None, None, None],
                  torch.arange(c, device=dev)[None, :, None, None],
                  rows.to(dev)[:, None, :, None],
                  cols.to(dev)[:, None, None, :]]


# --------------------------------------------------------------------------------------
# load()
# --------------------------------------------------------------------------------------
def load(name: str = "cifar10", root: str | os.PathLike | None = None, split: str | None = None,
         download: bool = False, val_size: int | None = None, seed: int = 0, cache: bool = True,
         image_size: int | None = None) -> ImageData:
    """Load an image dataset into memory as an :class:`ImageData`.

    Args:
        name: ``'cifar10'``, ``'imagefolder:PATH'`` or ``'sample'``.

            - ``'cifar10'`` reads ``root`` if it is an ImageFolder tree with ``train/`` and
              ``test/`` class folders; otherwise the original CIFAR-10 files through
              ``torchvision.datasets.CIFAR10(root)`` (``root`` holds ``cifar-10-batches-py``;
              default :func:`default_root`).
            - ``'imagefolder:PATH'`` reads any ImageFolder tree: either ``PATH/train`` plus
              ``PATH/test`` (or ``PATH/val``, used as the test split), or class folders right
              under ``PATH`` (then there is no ``'test'`` split). A relative PATH is taken
              relative to ``root`` when ``root`` is given.
            - ``'sample'``: 1,000 CIFAR-10 test images (100 per class) shipped with ghnas,
              for offline proxy scoring; only ``split='test'`` (or ``None``) is valid.
        root: where the data lives (see ``name``).
        split: ``'train'``, ``'val'``, ``'test'`` or ``'train+val'``. ``'val'`` is a seeded,
            class-stratified hold-out of ``val_size`` images carved from the training
            folder/files, and ``'train'`` is the rest of them; ``'train+val'`` is all of them;
            ``'test'`` is the official test set. ``None`` means ``'train'``, except for
            ``'sample'`` where it means ``'test'``.
        download: let torchvision download the original CIFAR-10 (~170 MB) into ``root``.
        val_size: size of the ``'val'`` split; ``None``: :func:`default_val_size` of the
            training images (5,000 for CIFAR-10, a tenth of a small ImageFolder).
        seed: fixes the train/val split and the order of the returned images (each split
            comes back in a seeded random order, so that even an unshuffled first batch
            holds a mix of classes).
        cache: reuse/write decoded arrays of ImageFolder trees under :func:`cache_dir`.
        image_size: resize (shorter side) and centre-crop every image to this square size;
            needed when an ImageFolder's images differ in size.

    Returns:
        An :class:`ImageData` on the CPU with CIFAR-10 normalisation constants.

    Example::

        >>> from ghnas.data import load
        >>> test = load('sample')
        >>> test
        ImageData(n=1000, shape=(3, 32, 32), classes=10, device=cpu, source='sample:test')
        >>> test.labels.bincount().tolist()
        [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"unknown dataset name {name!r}; valid names: {', '.join(NAMES)}")
    key = name.strip().lower()
    if key == "sample":
        split = "test" if split is None else split
        _check_split(split)
        if split != "test":
            raise ValueError(f"split {split!r} is not available for 'sample', which holds only "
                             "CIFAR-10 test images; use split='test' (or leave split out), or "
                             "name='cifar10' for train/val splits")
        data = _load_sample()
        return _seeded_order(data, seed)

    split = "train" if split is None else split
    _check_split(split)
    if val_size is not None and (not isinstance(val_size, int) or isinstance(val_size, bool) or val_size < 0):
        from .errors import InputError

        raise InputError(f"val_size must be a non-negative integer (or None for the default); got {val_size!r}")

    if key == "cifar10":
        base = Path(root).expanduser() if root is not None else default_root()
        if _is_split_tree(base, need_test=True):
            data = _load_from_tree(base, split, val_size, seed, cache, image_size, "cifar10")
        else:
            data = _load_torchvision_cifar10(base, split, val_size, seed, download)
        if data.classes != list(_CIFAR10_CLASSES):
            warnings.warn(f"CIFAR-10 at {base} has classes {data.classes}, expected "
                          f"{list(_CIFAR10_CLASSES)}", stacklevel=2)
        return data

    if key.startswith("imagefolder:"):
        path_str = name.strip()[len("imagefolder:"):]
        if not path_str:
            raise ValueError("'imagefolder:' needs a path, e.g. 'imagefolder:/data/my_images'")
        path = Path(path_str).expanduser()
        if root is not None and not path.is_absolute():
            path = Path(root).expanduser() / path
        if not path.is_dir():
            raise FileNotFoundError(f"ImageFolder path {str(path)!r} (from {name!r}) is not a "
                                    "directory; give a folder holding class folders, or "
                                    "train/ and test/ (or val/) folders of class folders")
        if download:
            raise ValueError("download=True only applies to name='cifar10'")
        return _load_from_tree(path, split, val_size, seed, cache, image_size, f"imagefolder:{path}")

    raise ValueError(f"unknown dataset name {name!r}; valid names: {', '.join(NAMES)}")


def train_val(name: str = "cifar10", root: str | os.PathLike | None = None, n_train: int = 5000,
              n_val: int = 500, seed: int = 0) -> tuple[ImageData, ImageData]:
    """A training set and a disjoint validation set of at most ``n_train`` / ``n_val`` images.

    For ``'cifar10'`` and ``'imagefolder:PATH'`` they are class-balanced subsets of the
    ``train`` and ``val`` splits (see :func:`load`). The shipped ``'sample'`` holds only
    1,000 test images: its first part trains and the rest validates (at least 100 images
    are kept for validation), which is for demos and smoke tests, not for results.

    Example:
        >>> tr, va = train_val("sample", n_train=600, n_val=300)
        >>> len(tr), len(va)
        (600, 300)
    """
    if n_train < 1 or n_val < 1:
        raise ValueError(f"n_train and n_val must be >= 1, got {n_train} and {n_val}")
    if name == "sample":
        full = load("sample", seed=seed)
        a = min(n_train, len(full) - 100)
        b = min(a + n_val, len(full))
        return full._take(torch.arange(a)), full._take(torch.arange(a, b))
    tr = load(name, root=root, split="train", seed=seed)
    va = load(name, root=root, split="val", seed=seed)
    return tr.subset(min(n_train, len(tr)), seed=seed), va.subset(min(n_val, len(va)), seed=seed)


def default_root() -> Path:
    """Where ``load('cifar10')`` looks when no ``root`` is given: ``$GHNAS_DATA`` or
    ``~/.cache/ghnas/datasets``."""
    env = os.environ.get("GHNAS_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/ghnas/datasets").expanduser()


def cache_dir() -> Path:
    """Folder for decoded-array caches: ``$GHNAS_CACHE/data`` (default ``~/.cache/ghnas/data``)."""
    from ._util import cache_root

    return cache_root() / "data"


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                    "dog", "frog", "horse", "ship", "truck")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _seeded_order(data: ImageData, seed: int, idx: np.ndarray | None = None) -> ImageData:
    """Take ``idx`` (default: all) from ``data`` in a seeded random order, in one copy."""
    idx = np.arange(len(data)) if idx is None else idx
    perm = np.random.default_rng([seed, 1]).permutation(len(idx))
    return data._take(torch.from_numpy(idx[perm]))


def default_val_size(n_train_images: int) -> int:
    """The validation split carved from ``n_train_images`` when none is asked for: a tenth
    of them, at most 5,000 (CIFAR-10's 50,000 give the usual 5,000; a 600-image
    ImageFolder gives 60), at least one."""
    return max(1, min(5000, int(n_train_images) // 10))


def _carve(data: ImageData, split: str, val_size: int | None, seed: int) -> ImageData:
    """Cut ``split`` out of the training pool ``data`` and give it a seeded order."""
    idx = None
    if val_size is None:
        val_size = default_val_size(len(data))
    if split != "train+val":
        if val_size >= len(data):
            from .errors import InputError

            raise InputError(f"val_size={val_size} must be smaller than the {len(data)} training "
                             f"images of {data.source or 'this dataset'}")
        if split == "val" and val_size == 0:
            from .errors import InputError

            raise InputError("split='val' needs val_size > 0")
        val_idx = _stratified_pick(data.labels.numpy(), val_size, np.random.default_rng(seed))
        mask = np.zeros(len(data), dtype=bool)
        mask[val_idx] = True
        idx = np.flatnonzero(mask if split == "val" else ~mask)
    data.source = f"{data.source}:{split}"
    return _seeded_order(data, seed, idx)


def _stratified_pick(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``n`` indices with class counts proportional to the class frequencies."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (n / len(labels))
    quota = np.floor(exact).astype(np.int64)
    # largest remainders get the leftover picks; ties go to the lower class index
    leftover = n - int(quota.sum())
    quota[np.argsort(-(exact - quota), kind="stable")[:leftover]] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def _balanced_pick(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick ``n`` indices with (as far as the class sizes allow) equal counts per class."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    remaining = n
    while remaining > 0:
        open_ = np.flatnonzero(quota < counts)
        share = remaining // len(open_)
        if share == 0:
            # fewer picks left than open classes: give one each to randomly chosen classes
            quota[rng.choice(open_, size=remaining, replace=False)] += 1
            break
        add = np.minimum(share, counts[open_] - quota[open_])
        quota[open_] += add
        remaining -= int(add.sum())
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------------------
# the shipped sample
# --------------------------------------------------------------------------------------
def _load_sample() -> ImageData:
    res = resources.files("ghnas") / "assets" / SAMPLE_FILE
    if not res.is_file():
        raise FileNotFoundError(f"the CIFAR-10 sample {SAMPLE_FILE} is missing from the installed "
                                "ghnas package (ghnas/assets/); reinstall ghnas")
    with np.load(io.BytesIO(res.read_bytes()), allow_pickle=False) as z:
        jpeg, offsets = z["jpeg"], z["offsets"]
        labels, classes = z["labels"], [str(c) for c in z["classes"]]
    blobs = [jpeg[offsets[i]:offsets[i + 1]] for i in range(len(labels))]
    # PIL, not torchvision: the same pixels, and no second-long torchvision import in a
    # call that only scores 100 architectures
    images = torch.stack([_decode_pil(b, f"{SAMPLE_FILE}[{i}]") for i, b in enumerate(blobs)])
    return ImageData(images, torch.from_numpy(labels.astype(np.int64)), classes, source="sample:test")


# --------------------------------------------------------------------------------------
# original CIFAR-10 through torchvision
# --------------------------------------------------------------------------------------
def _load_torchvision_cifar10(root: Path, split: str, val_size: int | None, seed: int,
                              download: bool) -> ImageData:
    from torchvision.datasets import CIFAR10

    if root.name == CIFAR10.base_folder:  # root given as the batches folder itself
        root = root.parent
    batches = root / CIFAR10.base_folder
    if not download and not batches.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 not found: {str(root)!r} holds neither {CIFAR10.base_folder}/ (the original "
            "python version) nor an ImageFolder tree with train/ and test/ class folders. "
            f"Pass download=True to fetch the original (~170 MB) into {str(root)!r}, or "
            "root=<folder containing cifar-10-batches-py, or train/ and test/>, or use "
            "name='imagefolder:<path>'; name='sample' gives 1,000 test images offline.")
    try:
        ds = CIFAR10(str(root), train=split != "test", download=download)
    except RuntimeError as err:  # torchvision's message for missing or corrupt files
        raise FileNotFoundError(
            f"CIFAR-10 in {str(batches)!r} is incomplete or corrupt ({err}); delete it and pass "
            "download=True, or point root= at a good copy") from err
    images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    data = ImageData(images, torch.tensor(ds.targets, dtype=torch.int64), list(ds.classes),
                     source=f"cifar10:{batches}")
    if split == "test":
        data.source += ":test"
        return _seeded_order(data, seed)
    return _carve(data, split, val_size, seed)


# --------------------------------------------------------------------------------------
# ImageFolder trees, with the decoded-array cache
# --------------------------------------------------------------------------------------
def _is_split_tree(path: Path, need_test: bool) -> bool:
    if not (path / "train").is_dir():
        return False
    return not need_test or (path / "test").is_dir()


def _load_from_tree(path: Path, split: str, val_size: int | None, seed: int, cache: bool,
                    image_size: int | None, label: str) -> ImageData:
    if _is_split_tree(path, need_test=False):
        train_dir = path / "train"
        test_dir = next((path / s for s in ("test", "val") if (path / s).is_dir()), None)
    else:
        train_dir, test_dir = path, None
    classes = _find_classes(train_dir)
    if split == "test":
        if test_dir is None:
            raise ValueError(f"split 'test' needs a test/ (or val/) folder next to train/ in "
                             f"{str(path)!r}, which has only class folders; valid splits here: "
                             "train, val, train+val")
        extra = sorted(set(_find_classes(test_dir)) - set(classes))
        if extra:
            raise ValueError(f"{str(test_dir)!r} has class folders {extra} that "
                             f"{str(train_dir)!r} lacks; valid classes: {classes}")
        data = _read_folder(test_dir, classes, cache, image_size)
        data.source = f"{label}:test"
        return _seeded_order(data, seed)
    data = _read_folder(train_dir, classes, cache, image_size)
    data.source = label
    return _carve(data, split, val_size, seed)


def _find_classes(folder: Path) -> list[str]:
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"no class folders in {str(folder)!r}; an ImageFolder tree has "
                                "one folder of images per class")
    return classes


def _scan(folder: Path, classes: Sequence[str],
          image_size: int | None) -> tuple[list[str], np.ndarray, str]:
    """List image files per class (sorted, nested folders included, as ImageFolder does) and
    build the cache key from their count, total size and newest mtime."""
    files: list[str] = []
    labels: list[int] = []
    total_bytes = newest = 0
    for label, cls in enumerate(classes):
        cdir = folder / cls
        if not cdir.is_dir():
            continue
        for dirpath, dirnames, filenames in sorted(os.walk(cdir, followlinks=True)):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.startswith(".") or not fn.lower().endswith(IMG_EXTENSIONS):
                    continue
                full = os.path.join(dirpath, fn)
                st = os.stat(full)
                total_bytes += st.st_size
                newest = max(newest, st.st_mtime_ns)
                files.append(full)
                labels.append(label)
    if not files:
        raise FileNotFoundError(f"no images found in {str(folder)!r} (looked in class folders "
                                f"{list(classes)} for {', '.join(IMG_EXTENSIONS)})")
    key = (f"v{_CACHE_VERSION}|{folder.resolve()}|classes={','.join(classes)}|n={len(files)}"
           f"|bytes={total_bytes}|mtime={newest}|size={_size_key(image_size)}")
    return files, np.asarray(labels, dtype=np.int64), key


def _size_key(image_size: int | None) -> str:
    return "orig" if image_size is None else str(int(image_size))


def _cache_file(folder: Path, image_size: int | None) -> Path:
    resolved = str(folder.resolve())
    digest = hashlib.sha1(f"{resolved}|{_size_key(image_size)}".encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{folder.resolve().parent.name}_{folder.name}")
    return cache_dir() / f"{stem}-{digest}.npz"


def _read_folder(folder: Path, classes: Sequence[str], cache: bool,
                 image_size: int | None) -> ImageData:
    files, labels, key = _scan(folder, classes, image_size)
    cfile = _cache_file(folder, image_size)
    if cache:
        hit = _read_cache(cfile, key)
        if hit is not None:
            images, cached_labels = hit
            return ImageData(images, cached_labels, list(classes), source=str(folder))
    images = _decode_files(files, image_size)
    if cache:
        _write_cache(cfile, key, images, labels, classes)
    return ImageData(images, torch.from_numpy(labels), list(classes), source=str(folder))


def _read_cache(cfile: Path, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not cfile.is_file():
        return None
    try:
        with np.load(cfile, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            return torch.from_numpy(z["images"]), torch.from_numpy(z["labels"].astype(np.int64))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        warnings.warn(f"ignoring unreadable cache file {cfile}: {err}", stacklevel=3)
        return None


def _write_cache(cfile: Path, key: str, images: torch.Tensor, labels: np.ndarray,
                 classes: Sequence[str]) -> None:
    try:
        cfile.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cfile.parent, prefix=cfile.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, key=np.array(key), images=images.numpy(), labels=labels,
                         classes=np.array(list(classes)))
            os.replace(tmp, cfile)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:  # a read-only or full cache disk must not stop the load
        warnings.warn(f"could not write the data cache {cfile}: {err}", stacklevel=3)


def _decode_files(files: Sequence[str], image_size: int | None) -> torch.Tensor:
    """Read and decode image files to one uint8 tensor (N, 3, H, W), in a thread pool (file
    reads and the torchvision decoders release the GIL)."""
    def work(chunk: Sequence[str]) -> list[torch.Tensor]:
        out = []
        for f in chunk:
            with open(f, "rb") as fh:
                raw = fh.read()
            out.append(_decode_bytes(raw, image_size, name=f))
        return out

    chunk = 256
    chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    workers = min(8, 2 * (os.cpu_count() or 1), len(chunks))
    with _quiet_decoder_deprecation():
        if workers <= 1:
            decoded = [work(c) for c in chunks]
        else:
            with ThreadPoolExecutor(workers) as ex:
                decoded = list(ex.map(work, chunks))
    images = [im for part in decoded for im in part]
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        first = tuple(images[0].shape)
        odd = next(i for i, im in enumerate(images) if tuple(im.shape) != first)
        raise ValueError(f"images differ in size ({files[0]} is {first[1]}x{first[2]}, "
                         f"{files[odd]} is {images[odd].shape[1]}x{images[odd].shape[2]}); "
                         "pass image_size=<pixels> to resize and centre-crop them all")
    return torch.stack(images)


@functools.lru_cache(maxsize=1)
def _tv_decoder() -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torchvision's decoder when it exists: 2-3x faster than PIL on small JPEGs."""
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None
    return lambda data: decode_image(data, mode=ImageReadMode.RGB)


@contextlib.contextmanager
def _quiet_decoder_deprecation() -> Iterator[None]:
    """torchvision 0.29 deprecates its decoders in favour of torchcodec and warns on every
    call; silence just that message while we decode (the PIL path takes over once they
    are removed). Entered by the calling thread; the filter covers the pool's threads."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities",
                                category=DeprecationWarning)
        yield


def _decode_pil(raw, name: str) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(raw))) as pil:
            arr = np.asarray(pil.convert("RGB"))
    except Exception as err:
        raise ValueError(f"cannot decode image file {name}: {err}") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _decode_bytes(raw, image_size: int | None, name: str = "<bytes>") -> torch.Tensor:
    """Decode one encoded image to a uint8 RGB tensor (3, H, W), optionally resized."""
    decode = _tv_decoder()
    img = None
    if decode is not None:
        try:
            img = decode(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        except RuntimeError:
            pass  # formats torchvision.io cannot read (bmp, ppm, tiff, ...) go through PIL
    if img is None:
        img = _decode_pil(raw, name)
    if image_size is not None:
        from torchvision.transforms.v2 import functional as TF

        img = TF.center_crop(TF.resize(img, [int(image_size)], antialias=True), [int(image_size)] * 2)
    return img
