"""Search spaces: architecture strings, validation, sampling, mutation and builders.

One registry, one entry point (in the manner of ``timm.create_model``)::

    >>> import search_spaces
    >>> search_spaces.available()
    ['darts', 'nb201']
    >>> space = search_spaces.get("nb201")
    >>> arch = space.sample(rng=0)
    >>> model = space.build(arch, C=8, N=1)

Built-in spaces are imported on first use, so ``import search_spaces`` does not import
torch. Add your own with :func:`register` (a :class:`SearchSpace` subclass, a factory
callable or a ready instance).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Union

from .base import InvalidArchitecture, RNGLike, SearchSpace, as_rng

__all__ = ["SearchSpace", "InvalidArchitecture", "RNGLike", "as_rng", "get", "register",
           "available"]

Factory = Callable[..., SearchSpace]

# name -> "module:attribute" (imported lazily), a factory, or an instance
_REGISTRY: dict[str, Union[str, Factory, SearchSpace]] = {
    "darts": "search_spaces.darts:DartsSpace",
    "nb201": "search_spaces.nb201:NB201Space",
}
_ALIASES = {
    "nas-bench-201": "nb201",
    "nasbench201": "nb201",
    "nas_bench_201": "nb201",
}


def _key(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"space name must be a str, not {type(name).__name__}")
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def available() -> list[str]:
    """Sorted names of the registered spaces."""
    return sorted(_REGISTRY)


def register(name: str, space: Union[Factory, SearchSpace], overwrite: bool = False) -> None:
    """Register a space under ``name``.

    Args:
        name: registry name (case-insensitive).
        space: a :class:`SearchSpace` instance (returned as is by :func:`get`), or a
            class / callable that returns one (called with ``get``'s keyword arguments).
        overwrite: replace an existing entry instead of raising ``ValueError``.
    """
    key = _key(name)
    if not key:
        raise ValueError("space name must not be empty")
    if not (isinstance(space, SearchSpace) or callable(space)):
        raise TypeError(f"space must be a SearchSpace instance or a factory, not {type(space).__name__}")
    if key in _REGISTRY and not overwrite:
        raise ValueError(f"a space named {key!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[key] = space


def get(name: str, **kwargs: Any) -> SearchSpace:
    """Return the space registered as ``name`` (e.g. ``'darts'``, ``'nb201'``).

    Raises:
        KeyError: unknown name; the message lists the valid names.
    """
    key = _key(name)
    if key not in _REGISTRY:
        raise KeyError(f"unknown search space {name!r}; available: {', '.join(available())}")
    entry = _REGISTRY[key]
    if isinstance(entry, SearchSpace):
        if kwargs:
            raise TypeError(f"space {key!r} was registered as an instance and takes no arguments; "
                            f"got {sorted(kwargs)}")
        return entry
    if isinstance(entry, str):
        module, attr = entry.split(":")
        entry = getattr(importlib.import_module(module), attr)
    space = entry(**kwargs)
    if not isinstance(space, SearchSpace):
        raise TypeError(f"factory for space {key!r} returned {type(space).__name__}, not a SearchSpace")
    return space
