"""Shared test fixtures: where ../shared is, and skips when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GHNAS_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "fixtures" / "ghn2_parity"
NB201_CSV = SHARED / "data" / "nb201" / "cifar10_dev.csv"
CIFAR10 = SHARED / "data" / "cifar10"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared folder), which is absent")
    return path


@pytest.fixture
def parity_dir() -> Path:
    return _need(PARITY)


@pytest.fixture
def nb201_csv() -> Path:
    return _need(NB201_CSV)


@pytest.fixture
def cifar10_root() -> Path:
    return _need(CIFAR10)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run tiny networks, where a second intra-op thread only adds contention
    (on a busy 2-core machine, 10x slowdowns were seen); the library itself leaves
    the thread count to torch."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def random_ghn(tmp_path_factory):
    """A small GHN-2 with seeded random weights, saved as a checkpoint file (its path)."""
    import torch

    from ghnas.ghn import GHN2, save_ghn

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ghn") / "ghn.pt"
    save_ghn(GHN2(hid=16, max_shape=(16, 16, 3, 3)), path)
    return path


@pytest.fixture(scope="module")
def ghn():
    """A small untrained GHN-2 with seeded weights, in memory (eval mode)."""
    import torch

    from ghnas.ghn import GHN2

    torch.manual_seed(0)
    return GHN2(hid=16, max_shape=(16, 16, 3, 3)).eval()


def random_batch(n: int, seed: int = 0):
    """``n`` seeded Gaussian CIFAR-shaped images and labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def write_truth_csv(path, archs, first_acc: float):
    """A ground-truth CSV (``arch, test_acc``) giving the i-th architecture ``first_acc + i``."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "test_acc"])
        for i, a in enumerate(archs):
            w.writerow([a, first_acc + i])
    return path
