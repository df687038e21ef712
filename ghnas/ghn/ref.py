"""One value type for "which GHN": a registered name, a checkpoint path, or a ``GHN2``.

Everything in ghnas that takes a ``ghn=`` argument turns it into a :class:`GHNRef` with
:meth:`GHNRef.of`, and asks the reference what it needs: the network (:meth:`load`),
a label for settings and reports (:attr:`label`), whether it can be reloaded later
(:attr:`saved`), and the network size it was trained for (:meth:`build_kwargs`).

Example::

    >>> from ghnas.ghn import GHNRef
    >>> ref = GHNRef.of("ghnas-nb201-cifar10")
    >>> ref.label, ref.saved, ref.build_kwargs("nb201")
    ('ghnas-nb201-cifar10', True, {'C': 8, 'N': 1})
    >>> GHNRef.default("nb201").label
    'ghnas-nb201-cifar10'
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["GHNRef", "default_ghn_name", "state_digest"]

# (resolved path, mtime, device) -> loaded GHN: trials and repeated calls in one process
# share a checkpoint, and a rewritten file (new mtime) is read again
_LOADED: dict[tuple[str, int, str], Any] = {}


def default_ghn_name(space_name: str, purpose: str = "predict") -> str | None:
    """The registered GHN meta-trained for ``space_name`` (``'ghnas-<space>-cifar10'`` for
    the shipped ones), or ``None`` when no registered GHN names that space.

    ``purpose='rank'`` (what the GHN proxy asks for) prefers a GHN registered for ranking
    (``'ghnas-<space>-cifar10-rank'``) and falls back to the space's predicting GHN.
    """
    from .hub import PURPOSES, _REGISTRY

    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    for wanted in ((purpose, "predict") if purpose != "predict" else ("predict",)):
        preferred = f"ghnas-{space_name}-cifar10" + ("" if wanted == "predict" else f"-{wanted}")
        entry = _REGISTRY.get(preferred)
        if entry is not None and entry.space in (None, space_name) and entry.purpose == wanted:
            return preferred
        for name, entry in sorted(_REGISTRY.items()):
            if entry.space == space_name and entry.purpose == wanted:
                return name
    return None


def on_device(module: nn.Module, device: torch.device) -> bool:
    """Whether ``module``'s parameters live on ``device`` (``'cuda'`` matches any CUDA index)."""
    p = next(module.parameters(), None)
    if p is None:
        return True
    return p.device.type == device.type and (device.index is None or p.device.index == device.index)


def state_digest(module: nn.Module) -> str:
    """A short digest of a module's weights (identifies an in-memory GHN)."""
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class GHNRef:
    """A GHN named by a registered name or checkpoint path (``source``), or held in memory
    (``instance``). Build one with :meth:`of` or :meth:`default`."""

    source: str | None = None
    instance: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.source is None) == (self.instance is None):
            raise ValueError("a GHNRef holds exactly one of source= (name or path) or instance= (a GHN2)")

    # ------------------------------------------------------------------ construction
    @classmethod
    def of(cls, ghn: Any, space: str | None = None) -> "GHNRef":
        """A reference from a ``GHNRef``, a name, a path or a ``GHN2``; ``None`` means the
        GHN registered for ``space`` (:meth:`default`)."""
        if isinstance(ghn, GHNRef):
            return ghn
        if ghn is None:
            if space is None:
                raise ValueError("ghn=None needs a space to pick its default GHN")
            return cls.default(space)
        if isinstance(ghn, (str, os.PathLike)):
            if not os.fspath(ghn).strip():
                raise ValueError("ghn must not be an empty string; give a registered name or a checkpoint path")
            return cls(source=os.fspath(ghn))
        if isinstance(ghn, nn.Module) and hasattr(ghn, "predict"):
            return cls(instance=ghn)
        raise TypeError(f"ghn must be a GHN name, a checkpoint path or a GHN2 instance, not {type(ghn).__name__}")

    @classmethod
    def default(cls, space: str, purpose: str = "predict") -> "GHNRef":
        """The GHN registered for ``space`` (and ``purpose``, see :func:`default_ghn_name`);
        ``FileNotFoundError`` when there is none."""
        from .hub import available_ghns

        name = default_ghn_name(space, purpose)
        if name is None:
            raise FileNotFoundError(
                f"no GHN is shipped for space {space!r} yet (expected one registered as "
                f"'ghnas-{space}-cifar10'; registered: {', '.join(available_ghns())}); pass ghn= a "
                "checkpoint path (e.g. the ghn.pt written by `ghnas meta-train`), a registered name, "
                "or a GHN2 instance")
        return cls(source=name)

    # ------------------------------------------------------------------ views
    @property
    def saved(self) -> bool:
        """Whether the GHN can be reloaded from its reference (a name or a path)."""
        return self.source is not None

    @property
    def label(self) -> str:
        """How settings and reports name the GHN: its name or path, or for an in-memory
        GHN a description with a digest of its weights."""
        if self.source is not None:
            return self.source
        return f"<in-memory GHN2, weights {state_digest(self.instance)}>"

    def to_json(self) -> str | None:
        """The reference as stored in a result file: the name or path (``None`` for an
        in-memory GHN, which is not saved with the result)."""
        return self.source

    def __repr__(self) -> str:
        return f"GHNRef({self.label!r})"

    # ------------------------------------------------------------------ loading
    def path(self) -> Path:
        """The checkpoint file (a registered GHN is downloaded if needed)."""
        if self.source is None:
            raise ValueError("an in-memory GHN has no checkpoint file")
        from .hub import resolve_ghn

        return Path(resolve_ghn(self.source))

    def load(self, device: str | torch.device = "cpu"):
        """The ``GHN2`` on ``device``, in eval mode; a checkpoint is read once per process
        (again when the file changes)."""
        device = torch.device(device)
        if self.instance is not None:
            return self.instance.to(device).eval()
        from .hub import load_ghn

        path = self.path()
        key = (str(path.resolve()), path.stat().st_mtime_ns, str(device))
        net = _LOADED.get(key)
        if net is None or not on_device(net, device):  # moved away by a caller: read it again
            net = _LOADED[key] = load_ghn(self.source, device=device)
        return net.eval()

    def build_kwargs(self, space: str | None = None) -> dict[str, Any] | None:
        """The network size the GHN was meta-trained at, where it is recorded: its
        registry entry, a ``<checkpoint>.json`` sidecar with a ``build_kwargs`` key, or the
        ``config.json`` that ``ghnas meta-train`` writes beside its checkpoints (used only
        when its ``space`` matches ``space``). ``None`` when nothing records it."""
        if self.source is None:
            return None
        from .hub import ghn_entry

        entry = ghn_entry(self.source)
        if entry is not None and entry.build_kwargs is not None and entry.space in (None, space):
            return dict(entry.build_kwargs)
        try:
            path = self.path()
        except Exception:  # e.g. a missing file or failed download: load() reports it properly
            return None
        for side, need_space in ((path.with_suffix(".json"), False), (path.parent / "config.json", True)):
            info = _read_json(side)
            if not isinstance(info, dict) or not isinstance(info.get("build_kwargs"), dict):
                continue
            if need_space and space is not None and info.get("space") not in (None, space):
                continue
            if info.get("archset"):
                continue  # sizes then come from the HDF5 file, not this record
            return dict(info["build_kwargs"])
        return None


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
