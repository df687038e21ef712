"""Tests for ghnas.data: loading (ImageFolder, original CIFAR-10 format, shipped sample),
splits, the decoded-array cache, batching, normalisation and augmentation."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ghnas.data as gd
from ghnas.data import CIFAR10_MEAN, CIFAR10_STD, ImageData, load, random_crop_flip

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep every test's cache in its own folder, never in the user's ~/.cache."""
    monkeypatch.setenv("GHNAS_CACHE", str(tmp_path / "cache"))


def _image(uid: int, size: int = 8) -> np.ndarray:
    """An image whose pixels all equal (uid % 256, uid // 256, 7): identifies it after a
    lossless round trip."""
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = uid % 256, uid // 256, 7
    return arr


def _uids(d: ImageData) -> list[int]:
    px = d.images[:, :, 0, 0].long()
    return (px[:, 0] + 256 * px[:, 1]).tolist()


def _make_tree(root: Path, classes: list[str], per_class: int, start_uid: int = 0,
               ext: str = "png") -> dict[int, int]:
    """Write an ImageFolder tree; return {uid: label}."""
    truth = {}
    uid = start_uid
    for label, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(_image(uid)).save(root / cls / f"{i:03d}.{ext}")
            truth[uid] = label
            uid += 1
    return truth


def _check_labels(d: ImageData, truth: dict[int, int]) -> None:
    for uid, label in zip(_uids(d), d.labels.tolist()):
        assert truth[uid] == label


# ------------------------------------------------------------------ ImageFolder trees
def test_single_tree_train_val_split_is_seeded_disjoint_and_stratified(tmp_path):
    truth = _make_tree(tmp_path / "imgs", ["a", "b", "c"], per_class=10)
    name = f"imagefolder:{tmp_path / 'imgs'}"
    train = load(name, split="train", val_size=6, seed=0)
    val = load(name, split="val", val_size=6, seed=0)
    both = load(name, split="train+val", val_size=6, seed=0)

    assert (len(train), len(val), len(both)) == (24, 6, 30)
    assert train.classes == ["a", "b", "c"]
    assert val.labels.bincount().tolist() == [2, 2, 2]
    assert set(_uids(train)).isdisjoint(_uids(val))
    assert set(_uids(train)) | set(_uids(val)) == set(truth) == set(_uids(both))
    for d in (train, val, both):
        _check_labels(d, truth)
        assert d.images.dtype == torch.uint8 and tuple(d.images.shape[1:]) == (3, 8, 8)

    again = load(name, split="val", val_size=6, seed=0, cache=False)
    assert torch.equal(again.images, val.images) and torch.equal(again.labels, val.labels)
    other = [set(_uids(load(name, split="val", val_size=6, seed=s))) for s in (1, 2, 3)]
    assert any(o != set(_uids(val)) for o in other)

    # each split comes back in a seeded mixed order, not grouped by class
    assert _uids(both) != sorted(_uids(both))


def test_single_tree_has_no_test_split(tmp_path):
    _make_tree(tmp_path, ["a", "b"], per_class=3)
    with pytest.raises(ValueError, match="split 'test'.*valid splits here: train, val"):
        load(f"imagefolder:{tmp_path}", split="test")


def test_split_folders_use_test_or_val_folder(tmp_path):
    truth_train = _make_tree(tmp_path / "train", ["x", "y"], per_class=6)
    truth_val = _make_tree(tmp_path / "val", ["x", "y"], per_class=2, start_uid=100, ext="jpg")
    test = load(f"imagefolder:{tmp_path}", split="test")
    assert len(test) == 4 and test.labels.bincount().tolist() == [2, 2]
    assert len(load(f"imagefolder:{tmp_path}", split="train", val_size=2)) == 10
    # JPEG is lossy, so check labels by class content loosely: ids 100..103 are 2 per class
    assert test.classes == ["x", "y"]
    _check_labels(load(f"imagefolder:{tmp_path}", split="train+val"), truth_train)
    assert set(truth_val) == {100, 101, 102, 103}

    # relative PATH resolved against root
    assert len(load("imagefolder:.", root=tmp_path, split="test")) == 4

    (tmp_path / "val" / "z").mkdir()
    Image.fromarray(_image(200)).save(tmp_path / "val" / "z" / "0.png")
    with pytest.raises(ValueError, match=r"class folders \['z'\]"):
        load(f"imagefolder:{tmp_path}", split="test")


def test_cifar10_name_reads_an_imagefolder_root(tmp_path):
    truth = _make_tree(tmp_path / "train", CIFAR_CLASSES, per_class=3)
    _make_tree(tmp_path / "test", CIFAR_CLASSES, per_class=1, start_uid=500)
    d = load("cifar10", root=tmp_path, split="val", val_size=10)
    assert len(d) == 10 and d.labels.bincount().tolist() == [1] * 10
    _check_labels(d, truth)
    assert len(load("cifar10", root=tmp_path, split="test")) == 10


def test_mixed_sizes_need_image_size(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).save(tmp_path / "a" / "0.png")
    Image.fromarray(np.full((12, 10, 3), 50, np.uint8)).save(tmp_path / "a" / "1.png")
    Image.fromarray(np.full((6, 6, 3), 50, np.uint8)).save(tmp_path / "a" / "2.bmp")
    with pytest.raises(ValueError, match="image_size="):
        load(f"imagefolder:{tmp_path}", split="train+val")
    d = load(f"imagefolder:{tmp_path}", split="train+val", image_size=4)
    assert tuple(d.images.shape) == (3, 3, 4, 4)
    assert (d.images == 50).all()  # bmp went through the PIL fallback


def test_pil_fallback_decodes_like_torchvision(tmp_path, monkeypatch):
    truth = _make_tree(tmp_path / "png", ["a", "b"], per_class=2)
    fast = load(f"imagefolder:{tmp_path / 'png'}", split="train+val", cache=False)
    sample_fast = gd._load_sample()
    monkeypatch.setattr(gd, "_tv_decoder", lambda: None)  # as if torchvision.io were gone
    slow = load(f"imagefolder:{tmp_path / 'png'}", split="train+val", cache=False)
    assert torch.equal(fast.images, slow.images)
    _check_labels(slow, truth)
    sample_slow = gd._load_sample()  # JPEG: allow for IDCT rounding differences
    diff = (sample_fast.images.int() - sample_slow.images.int()).abs()
    assert diff.max() <= 2 and diff.float().mean() < 0.05


# ------------------------------------------------------------------ cache
def test_second_load_reads_the_cache(tmp_path, monkeypatch):
    _make_tree(tmp_path / "imgs", ["a", "b"], per_class=4)
    name = f"imagefolder:{tmp_path / 'imgs'}"
    first = load(name, split="train+val")
    files = list(gd.cache_dir().glob("*.npz"))
    assert len(files) == 1 and gd.cache_dir() == tmp_path / "cache" / "data"
    assert not list(gd.cache_dir().glob("*.tmp"))  # atomic write left no temp file

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again despite a valid cache")

    monkeypatch.setattr(gd, "_decode_files", no_decode)
    second = load(name, split="train+val")
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    with pytest.raises(AssertionError, match="decoded again"):
        load(name, split="train+val", cache=False)


def test_cache_is_invalidated_when_files_change(tmp_path, monkeypatch):
    _make_tree(tmp_path / "imgs", ["a", "b"], per_class=4)
    name = f"imagefolder:{tmp_path / 'imgs'}"
    calls = []
    real = gd._decode_files

    def counting(files, image_size):
        calls.append(len(files))
        return real(files, image_size)

    monkeypatch.setattr(gd, "_decode_files", counting)
    assert len(load(name, split="train+val")) == 8
    assert len(load(name, split="train+val")) == 8
    assert calls == [8]

    Image.fromarray(_image(99)).save(tmp_path / "imgs" / "b" / "new.png")
    d = load(name, split="train+val")
    assert len(d) == 9 and 99 in _uids(d)
    assert calls == [8, 9]

    # same count, different content and size: still re-decoded
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
        tmp_path / "imgs" / "a" / "000.png")
    load(name, split="train+val")
    assert calls == [8, 9, 9]
    assert len(list(gd.cache_dir().glob("*.npz"))) == 1  # replaced, not accumulated


def test_corrupt_cache_file_is_ignored(tmp_path):
    _make_tree(tmp_path / "imgs", ["a"], per_class=3)
    name = f"imagefolder:{tmp_path / 'imgs'}"
    load(name, split="train+val")
    (cfile,) = gd.cache_dir().glob("*.npz")
    cfile.write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable cache"):
        assert len(load(name, split="train+val")) == 3


# ------------------------------------------------------------------ shipped sample
def test_sample_loads_balanced_cifar_test_images():
    d = load("sample")
    assert len(d) == 1000
    assert d.classes == CIFAR_CLASSES
    assert tuple(d.images.shape) == (1000, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels.min() >= 0 and d.labels.max() <= 9
    assert d.labels.bincount().tolist() == [100] * 10
    assert len(set(d.labels[:64].tolist())) >= 8  # mixed order: a first batch spans classes
    assert torch.equal(load("sample", split="test").images, d.images)
    mean = d.images.float().div(255).mean((0, 2, 3))
    assert torch.allclose(mean, torch.tensor(CIFAR10_MEAN), atol=0.03)
    asset = Path(gd.__file__).parent / "assets" / gd.SAMPLE_FILE
    assert asset.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match="'sample'.*split='test'"):
        load("sample", split="train")


def test_sample_matches_the_shared_cifar10_files(cifar10_root):
    with np.load(Path(gd.__file__).parent / "assets" / gd.SAMPLE_FILE) as z:
        files, labels = list(z["files"]), z["labels"]
    d = gd._load_sample()  # file order, before load()'s seeded shuffle
    for i in range(0, 1000, 97):
        raw = (cifar10_root / "test" / files[i]).read_bytes()
        with gd._quiet_decoder_deprecation():
            assert torch.equal(d.images[i], gd._decode_bytes(raw, None))
        assert CIFAR_CLASSES[labels[i]] == files[i].split("/")[0]


# ------------------------------------------------------------------ batches, normalisation, augmentation
def _toy(n: int = 10, size: int = 6) -> ImageData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    return ImageData(images, torch.arange(n) % 3, ["p", "q", "r"])


def test_normalize_matches_the_formula():
    d = _toy()
    x = d.normalize(d.images)
    mean = torch.tensor(CIFAR10_MEAN).view(-1, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(-1, 1, 1)
    assert x.dtype == torch.float32
    assert torch.allclose(x, (d.images.float() / 255 - mean) / std, atol=1e-5)
    assert torch.allclose(d.normalize(d.images[0]), x[0], atol=1e-6)
    with pytest.raises(ValueError, match="uint8"):
        d.normalize(x)
    d.mean, d.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # constants changed after first use
    assert torch.allclose(d.normalize(d.images), d.images.float() / 255, atol=1e-6)


def test_batches_cover_the_data_once():
    d = _toy(10)
    out = list(d.batches(4))
    assert [len(y) for _, y in out] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in out]), d.normalize(d.images))
    assert [len(y) for _, y in d.batches(4, drop_last=True)] == [4, 4]

    shuffled = list(d.batches(3, shuffle=True, seed=5))
    ys = torch.cat([y for _, y in shuffled])
    assert sorted(ys.tolist()) == sorted(d.labels.tolist())
    again = torch.cat([x for x, _ in d.batches(3, shuffle=True, seed=5)])
    assert torch.equal(torch.cat([x for x, _ in shuffled]), again)
    with pytest.raises(ValueError, match="batch_size"):
        next(d.batches(0))


def test_augmented_batches_have_the_same_shape_and_are_seeded():
    d = _toy(8, size=32)
    (x, y), = list(d.batches(8, augment=True, seed=1))
    assert tuple(x.shape) == (8, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(y, d.labels)
    (x2, _), = list(d.batches(8, augment=True, seed=1))
    assert torch.equal(x, x2)
    assert not torch.equal(x, d.normalize(d.images))


def test_random_crop_flip_matches_a_per_image_reference():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (16, 3, 7, 5), generator=g, dtype=torch.uint8)
    out = random_crop_flip(images, pad=2, generator=torch.Generator().manual_seed(11))
    # replay the same random draws and crop image by image
    g = torch.Generator().manual_seed(11)
    dy = torch.randint(0, 5, (16,), generator=g)
    dx = torch.randint(0, 5, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = torch.zeros(16, 3, 11, 9, dtype=torch.uint8)
    padded[:, :, 2:9, 2:7] = images
    assert flip.any() and not flip.all()
    for i in range(16):
        ref = padded[i, :, dy[i]:dy[i] + 7, dx[i]:dx[i] + 5]
        assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)


def test_subset_is_balanced_seeded_and_order_preserving():
    labels = torch.tensor([0] * 20 + [1] * 3 + [2] * 10)
    d = ImageData(torch.zeros(33, 3, 2, 2, dtype=torch.uint8), labels, ["a", "b", "c"])
    s = d.subset(12, seed=0)
    assert s.labels.bincount().tolist() == [5, 3, 4] or s.labels.bincount().tolist() == [4, 3, 5]
    assert torch.equal(s.labels, s.labels.sort().values)  # kept the original order
    assert d.subset(9, seed=0).labels.bincount().tolist() == [3, 3, 3]
    assert torch.equal(d.subset(12, seed=4).labels, d.subset(12, seed=4).labels)
    with pytest.raises(ValueError, match="subset size"):
        d.subset(34)


def test_to_and_repr():
    d = _toy().to("cpu")
    assert d.device == torch.device("cpu")
    assert repr(d) == "ImageData(n=10, shape=(3, 6, 6), classes=3, device=cpu)"
    with pytest.raises(ValueError, match="uint8"):
        ImageData(torch.zeros(2, 3, 4, 4), torch.zeros(2), ["a"])


# ------------------------------------------------------------------ errors
def test_unknown_name_and_split_list_valid_values(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset name 'mnist'.*cifar10, imagefolder:PATH, sample"):
        load("mnist")
    with pytest.raises(ValueError, match="unknown split 'valid'.*train, val, test, train\\+val"):
        load("cifar10", root=tmp_path, split="valid")
    with pytest.raises(ValueError, match="imagefolder:' needs a path"):
        load("imagefolder:")


def test_missing_data_says_how_to_provide_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True.*root=.*imagefolder:"):
        load("cifar10", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load(f"imagefolder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images found"):
        load(f"imagefolder:{tmp_path / 'empty'}", split="train+val")
    _make_tree(tmp_path / "small", ["a"], per_class=3)
    with pytest.raises(ValueError, match="val_size=5000 must be smaller than the 3"):
        load(f"imagefolder:{tmp_path / 'small'}", val_size=5000)
    # the default split fits the folder (issue 12: small folders were refused)
    assert len(load(f"imagefolder:{tmp_path / 'small'}", split="val")) == 1


# ------------------------------------------------------------------ original CIFAR-10 format
def _write_fake_cifar(root: Path, per_batch: int = 20, n_test: int = 10) -> np.ndarray:
    """Write cifar-10-batches-py in CIFAR-10's pickle layout; return all train rows."""
    out = root / "cifar-10-batches-py"
    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for b in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(i % 10) for i in range(per_batch)]
        with open(out / f"data_batch_{b}", "wb") as f:
            pickle.dump({"batch_label": f"training batch {b} of 5", "data": data,
                         "labels": labels, "filenames": [f"{i}.png" for i in range(per_batch)]}, f)
        rows.append(data)
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    with open(out / "test_batch", "wb") as f:
        pickle.dump({"data": test, "labels": [i % 10 for i in range(n_test)]}, f)
    with open(out / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch}, f)
    return np.concatenate(rows)


def test_original_cifar10_format_via_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    rows = _write_fake_cifar(tmp_path)
    # torchvision checks the real files' md5 sums; accept our fake files by presence only
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))

    both = load("cifar10", root=tmp_path, split="train+val")
    assert len(both) == 100 and both.classes == CIFAR_CLASSES
    # pixel layout: a CIFAR row is the R plane, then G, then B, each 32x32 row-major
    expected = torch.from_numpy(rows.reshape(-1, 3, 32, 32))
    as_set = {tuple(r.flatten().tolist()[:40]) for r in expected}
    assert all(tuple(im.flatten().tolist()[:40]) in as_set for im in both.images)

    val = load("cifar10", root=tmp_path, split="val", val_size=20)
    train = load("cifar10", root=tmp_path, split="train", val_size=20)
    assert len(val) == 20 and len(train) == 80
    assert val.labels.bincount().tolist() == [2] * 10
    keys = lambda d: {im.flatten()[:40].numpy().tobytes() for im in d.images}  # noqa: E731
    assert keys(val).isdisjoint(keys(train))

    test = load("cifar10", root=tmp_path / "cifar-10-batches-py", split="test")
    assert len(test) == 10 and tuple(test.images.shape[1:]) == (3, 32, 32)


def test_corrupt_original_cifar10_is_reported(tmp_path):
    _write_fake_cifar(tmp_path)  # md5 sums do not match the real files
    with pytest.raises(FileNotFoundError, match="incomplete or corrupt.*download=True"):
        load("cifar10", root=tmp_path, split="test")


# ------------------------------------------------------------------ the shared CIFAR-10 copy
def test_shared_cifar10_test_split(cifar10_root):
    d = load("cifar10", root=cifar10_root, split="test")
    assert len(d) == 10_000 and d.classes == CIFAR_CLASSES
    assert d.labels.bincount().tolist() == [1000] * 10
    assert tuple(d.images.shape[1:]) == (3, 32, 32)
    x, y = next(d.batches(256))
    assert abs(x.mean().item()) < 0.2 and 0.8 < x.std().item() < 1.2
    assert len(set(y.tolist())) == 10


@pytest.mark.slow
def test_shared_cifar10_train_val(cifar10_root):
    train = load("cifar10", root=cifar10_root, split="train")
    val = load("cifar10", root=cifar10_root, split="val")
    assert (len(train), len(val)) == (45_000, 5_000)
    assert val.labels.bincount().tolist() == [500] * 10
    mean = train.images[:10_000].float().div(255).mean((0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.4913, 0.4821, 0.4465]), atol=0.01)


def test_train_val_on_the_sample_is_disjoint_and_sized():
    from ghnas.data import train_val

    tr, va = train_val("sample", n_train=950, n_val=500)
    assert (len(tr), len(va)) == (900, 100)  # at least 100 images are kept for validation
    both = torch.cat([tr.images, va.images]).flatten(1)
    assert len(torch.unique(both, dim=0)) == len(both)
    with pytest.raises(ValueError, match="n_train"):
        train_val("sample", n_train=0)
