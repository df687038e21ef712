"""ghnas: neural architecture search with Graph HyperNetworks.

Everything is imported on first use, so ``import ghnas`` stays fast and optional
integrations (Optuna, Ray Tune) are never imported unless asked for:
``ghnas.search(...)``, ``ghnas.load_ghn(...)`` and the public subpackages
(``ghnas.proxies``, ``ghnas.correlation``, ``ghnas.integrations``, ...) all work after a
plain ``import ghnas``.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_ghn": "ghnas.ghn",
    "GHN2": "ghnas.ghn",
    "GHNRef": "ghnas.ghn",
    "search": "ghnas.searching",
    "SearchResult": "ghnas.searching",
    "warm_start": "ghnas.warm",
    "meta_train": "ghnas.metatrain",
    "InputError": "ghnas.errors",
}

# public submodules, imported as attributes on first access (``ghnas.proxies.score``)
_SUBMODULES = ("archset", "bench", "cli", "correlation", "data", "errors", "ghn", "graph", "integrations",
               "metatrain", "nets", "proxies", "searching", "train", "warm")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"ghnas.{name}")
    raise AttributeError(f"module 'ghnas' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))
