"""ghnas: neural architecture search with Graph HyperNetworks.

Heavy submodules are imported on first use so that ``import ghnas`` stays fast and
optional integrations (Optuna, Ray Tune) are never imported unless asked for.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "load_ghn": "ghnas.ghn",
    "GHN2": "ghnas.ghn",
    "search": "ghnas.search",
    "warm_start": "ghnas.warm",
    "meta_train": "ghnas.metatrain",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ghnas' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
