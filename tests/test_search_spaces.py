"""The registry and the shared SearchSpace behaviour."""
from __future__ import annotations

import itertools
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import search_spaces
from search_spaces import InvalidArchitecture, SearchSpace, as_rng


class BitSpace(SearchSpace):
    """A toy space: strings of ``n`` bits; reversing the string gives an equivalent arch."""

    name = "bits"

    def __init__(self, n: int = 4):
        self.n = n

    def parse(self, arch: str) -> tuple[int, ...]:
        if not isinstance(arch, str) or len(arch) != self.n or set(arch) - {"0", "1"}:
            raise InvalidArchitecture(f"{arch!r} is not {self.n} bits (characters 0/1)")
        return tuple(int(c) for c in arch)

    def format(self, obj: Any) -> str:
        return "".join(str(int(b)) for b in obj)

    def sample(self, rng=None) -> str:
        return self.format(as_rng(rng).integers(2, size=self.n))

    def neighbours(self, arch: str) -> list[str]:
        bits = list(self.parse(arch))
        return [self.format(bits[:i] + [1 - bits[i]] + bits[i + 1:]) for i in range(self.n)]

    def canonical(self, arch: str) -> str:
        arch = self.validate(arch)
        return min(arch, arch[::-1])

    @property
    def encoding_choices(self) -> list[int]:
        return [2] * self.n

    def encode(self, arch: str) -> np.ndarray:
        return np.array(self.parse(arch), dtype=np.int64)

    def decode(self, vec) -> str:
        return self.format(self._check_vector(vec))

    def build(self, arch: str, **kwargs):
        import torch
        return torch.nn.Linear(self.n, int(arch, 2) + 1)

    def enumerate(self):
        for bits in itertools.product("01", repeat=self.n):
            yield "".join(bits)


@pytest.fixture
def clean_registry():
    saved = dict(search_spaces._REGISTRY)
    yield
    search_spaces._REGISTRY.clear()
    search_spaces._REGISTRY.update(saved)


def test_builtin_spaces():
    assert {"darts", "nb201"} <= set(search_spaces.available())
    assert search_spaces.get("nb201").name == "nb201"
    assert search_spaces.get("NAS-Bench-201").name == "nb201"
    assert search_spaces.get("darts").name == "darts"
    assert isinstance(search_spaces.get("darts"), SearchSpace)


def test_unknown_name_lists_valid_names():
    with pytest.raises(KeyError) as err:
        search_spaces.get("nb101")
    msg = str(err.value)
    assert "nb101" in msg and "darts" in msg and "nb201" in msg


def test_register_custom_space(clean_registry):
    search_spaces.register("bits", BitSpace)
    assert "bits" in search_spaces.available()
    space = search_spaces.get("bits", n=6)
    assert space.n == 6 and space.validate("010101") == "010101"
    with pytest.raises(ValueError, match="already registered"):
        search_spaces.register("bits", BitSpace)
    inst = BitSpace(3)
    search_spaces.register("Bits", inst, overwrite=True)
    assert search_spaces.get("bits") is inst
    with pytest.raises(TypeError, match="takes no arguments"):
        search_spaces.get("bits", n=2)
    with pytest.raises(TypeError):
        search_spaces.register("other", 42)  # type: ignore[arg-type]
    search_spaces.register("broken", lambda: "not a space")
    with pytest.raises(TypeError, match="not a SearchSpace"):
        search_spaces.get("broken")


def test_base_behaviour_on_toy_space():
    space = BitSpace(4)
    assert space.validate("0110") == "0110"
    with pytest.raises(InvalidArchitecture, match="not 4 bits"):
        space.validate("01x0")
    assert "0110" in space and "2" not in space and 5 not in space
    assert space.sample_many(5, seed=0) == space.sample_many(5, seed=0)
    uniq = space.sample_many(10, seed=0, unique=True)  # 10 classes under reversal
    assert len({space.hash(a) for a in uniq}) == 10
    with pytest.raises(ValueError, match="distinct"):
        space.sample_many(11, seed=0, unique=True)
    with pytest.raises(ValueError):
        space.sample_many(-1)
    assert space.hash("0011") == space.hash("1100") != space.hash("0110")
    child = space.mutate("0000", rng=0)
    assert child != "0000" and space.distance("0000", child) == 1
    assert space.decode(space.encode("1010")) == "1010"
    with pytest.raises(InvalidArchitecture, match="position 1 is 2"):
        space.decode([0, 2, 0, 0])
    with pytest.raises(InvalidArchitecture, match="integers"):
        space.decode([0, 0.5, 0, 0])
    assert space.decode(np.array([1.0, 0.0, 0.0, 1.0])) == "1001"
    assert "BitSpace" in repr(space)


def test_as_rng():
    g = np.random.default_rng(1)
    assert as_rng(g) is g
    assert as_rng(5).integers(1000) == np.random.default_rng(5).integers(1000)
    assert isinstance(as_rng(None), np.random.Generator)
    with pytest.raises(TypeError, match="rng must be"):
        as_rng("seed")  # type: ignore[arg-type]


def test_import_is_light():
    code = "import sys, search_spaces; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
