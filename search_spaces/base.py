"""The common interface of all search spaces.

A search space turns architecture *strings* (the public currency of ghnas) into
structured objects, PyTorch modules and fixed-length integer vectors, and provides the
random moves that search algorithms need (sampling and single-edit mutation).

Concrete spaces subclass :class:`SearchSpace` and implement the abstract methods; the
rest (``validate``, ``sample_many``, ``hash``, ``distance``, ``__contains__``) is built
on top of them.

Example:
    >>> import search_spaces
    >>> space = search_spaces.get("nb201")
    >>> arch = space.sample(0)
    >>> space.validate(arch) == arch
    True
    >>> child = space.mutate(arch, rng=1)
    >>> space.distance(arch, child)
    1
"""
from __future__ import annotations

import abc
import hashlib
import reprlib
from typing import Any, Iterator, Union

import numpy as np

RNGLike = Union[int, np.random.Generator, None]

__all__ = ["InvalidArchitecture", "SearchSpace", "RNGLike", "as_rng", "MAX_ARCH_LENGTH", "short_repr",
           "check_arch_text"]

#: longest architecture string any space parses: the canonical strings are a few hundred
#: characters, so anything far longer is a mistake or hostile, and is refused before parsing
MAX_ARCH_LENGTH = 10_000

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


class InvalidArchitecture(ValueError):
    """An architecture string (or vector) does not describe a member of the space.

    The message names the offending part and what would be valid.
    """


def short_repr(obj: Any, limit: int = 60) -> str:
    """``repr(obj)`` cut to about ``limit`` characters, so error messages stay short
    whatever the input. A long string is quoted by its first ``limit`` characters
    followed by ``...`` and its length."""
    if isinstance(obj, str):
        if len(obj) <= limit:
            return repr(obj)
        return f"{obj[:limit]!r}... ({len(obj)} characters)"
    text = _REPR.repr(obj)
    return text if len(text) <= 2 * limit else text[:2 * limit] + "..."


def check_arch_text(arch: Any, space_name: str) -> str:
    """``arch`` itself if it is a str of at most :data:`MAX_ARCH_LENGTH` characters.

    Raises:
        InvalidArchitecture: not a str, or too long (the message quotes a short prefix).
    """
    if not isinstance(arch, str):
        raise InvalidArchitecture(f"{space_name} architecture must be a str, not {type(arch).__name__}")
    if len(arch) > MAX_ARCH_LENGTH:
        raise InvalidArchitecture(
            f"{space_name} architecture string has {len(arch)} characters; the limit is {MAX_ARCH_LENGTH} "
            f"(it starts {short_repr(arch[:40])})")
    return arch


def as_rng(rng: RNGLike) -> np.random.Generator:
    """Turn a seed, a generator or ``None`` (fresh entropy) into a numpy Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be an int seed, a numpy Generator or None, not {type(rng).__name__}")


class SearchSpace(abc.ABC):
    """Abstract base of a search space whose architectures are plain strings.

    Subclasses set ``name`` and implement ``parse``, ``format``, ``sample``,
    ``neighbours``, ``canonical``, ``encoding_choices``, ``encode``, ``decode`` and
    ``build``.
    """

    #: short registry name, e.g. ``"darts"``
    name: str = ""

    # ----------------------------------------------------------------- strings
    @abc.abstractmethod
    def parse(self, arch: str) -> Any:
        """Parse and validate ``arch``; return the space's structured object.

        Raises:
            InvalidArchitecture: ``arch`` is not a member of the space.
        """

    @abc.abstractmethod
    def format(self, obj: Any) -> str:
        """Write a structured object as the canonical string (inverse of ``parse``)."""

    def validate(self, arch: str) -> str:
        """Return the canonical string of ``arch`` or raise :class:`InvalidArchitecture`."""
        return self.format(self.parse(arch))

    def __contains__(self, arch: object) -> bool:
        if not isinstance(arch, str):
            return False
        try:
            self.parse(arch)
        except InvalidArchitecture:
            return False
        return True

    # ----------------------------------------------------------------- random moves
    @abc.abstractmethod
    def sample(self, rng: RNGLike = None) -> str:
        """Draw one architecture uniformly at random (seeded by ``rng``)."""

    def sample_many(self, n: int, seed: RNGLike = None, unique: bool = False) -> list[str]:
        """Draw ``n`` architectures with one generator seeded by ``seed``.

        With ``unique=True`` no two results share a :meth:`hash` (equivalent
        architectures count as duplicates); raises ``ValueError`` when the space does not
        seem to hold ``n`` distinct classes.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng = as_rng(seed)
        if not unique:
            return [self.sample(rng) for _ in range(n)]
        out: list[str] = []
        seen: set[str] = set()
        # rejection sampling; give up after a long run of duplicates (coupon collector:
        # the last of K classes takes ~K draws, and K >= n whenever n is reachable)
        patience = 20 * n + 1000
        misses = 0
        while len(out) < n and misses < patience:
            arch = self.sample(rng)
            key = self.hash(arch)
            if key in seen:
                misses += 1
            else:
                misses = 0
                seen.add(key)
                out.append(arch)
        if len(out) < n:
            raise ValueError(
                f"found only {len(out)} distinct architectures of the {n} asked for in "
                f"space {self.name!r}; ask for fewer or use unique=False")
        return out

    @abc.abstractmethod
    def neighbours(self, arch: str) -> list[str]:
        """All canonical strings that differ from ``arch`` by exactly one edit."""

    def mutate(self, arch: str, rng: RNGLike = None) -> str:
        """Apply one random edit (one op or one input changed); the result always differs.

        The edit is drawn uniformly from :meth:`neighbours`.
        """
        options = self.neighbours(arch)
        if not options:
            raise ValueError(f"architecture {arch!r} has no single-edit neighbours in space {self.name!r}")
        return options[int(as_rng(rng).integers(len(options)))]

    # ----------------------------------------------------------------- identity
    @abc.abstractmethod
    def canonical(self, arch: str) -> str:
        """The representative string of the equivalence class of ``arch``.

        Each space documents what "equivalent" means for it.
        """

    def hash(self, arch: str) -> str:
        """Hex digest that is equal for equivalent architectures (for de-duplication).

        Two architectures get the same hash exactly when their :meth:`canonical`
        strings are equal, i.e. under the equivalence the space documents there (see
        each space's module docstring). ``sample_many(unique=True)`` and the search
        strategies count distinct architectures by this hash.
        """
        return hashlib.sha256(f"{self.name}:{self.canonical(arch)}".encode()).hexdigest()[:32]

    # ----------------------------------------------------------------- vectors
    @property
    @abc.abstractmethod
    def encoding_choices(self) -> list[int]:
        """Number of choices at each position of :meth:`encode`'s vector."""

    @abc.abstractmethod
    def encode(self, arch: str) -> np.ndarray:
        """A fixed-length int64 vector; position ``i`` lies in ``[0, encoding_choices[i])``."""

    @abc.abstractmethod
    def decode(self, vec: Any) -> str:
        """Inverse of :meth:`encode`: ``decode(encode(a)) == validate(a)``."""

    def distance(self, a: str, b: str) -> int:
        """Number of encoding positions in which ``a`` and ``b`` differ (edit distance)."""
        return int(np.sum(self.encode(a) != self.encode(b)))

    def _check_vector(self, vec: Any) -> np.ndarray:
        arr = np.asarray(vec)
        choices = self.encoding_choices
        if arr.shape != (len(choices),):
            raise InvalidArchitecture(
                f"encoding must have shape ({len(choices)},) for space {self.name!r}, got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.equal(np.mod(arr, 1), 0)):
                raise InvalidArchitecture(f"encoding must hold integers, got {arr.tolist()}")
        arr = arr.astype(np.int64)
        for i, (v, c) in enumerate(zip(arr.tolist(), choices)):
            if not 0 <= v < c:
                raise InvalidArchitecture(
                    f"encoding position {i} is {v}; valid values are 0..{c - 1}")
        return arr

    # ----------------------------------------------------------------- models
    @abc.abstractmethod
    def build(self, arch: str, **kwargs: Any):
        """Build the architecture as a ``torch.nn.Module`` (torch is imported lazily)."""

    # ----------------------------------------------------------------- misc
    def enumerate(self) -> Iterator[str]:
        """Yield every architecture of the space (only for small, finite spaces)."""
        raise NotImplementedError(f"space {self.name!r} is too large to enumerate")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
