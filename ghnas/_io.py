"""Atomic file writes: every output of ghnas is written to a temporary file in the
target folder and renamed into place, so an interrupted job never leaves a torn file.
And the reading side: :func:`load_checkpoint` turns a damaged resume file into one
clear error."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines untranslated) to ``path`` atomically, fsynced."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, fsynced."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically, fsynced."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_savefig(fig: Any, path: str | os.PathLike, dpi: int = 120, **kwargs: Any) -> Path:
    """Save a matplotlib figure as PNG to ``path`` atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", **kwargs)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, required: Sequence[str] = (), what: str = "checkpoint") -> dict:
    """Read a ``torch.save``'d dict with ``weights_only=True``; one clear error if it is damaged.

    Args:
        path: the file, e.g. a meta-training run's ``state.pt``.
        required: keys the dict must have.
        what: what the file is, for the messages (``"meta-training state"``).

    Returns:
        the dict, its tensors on the CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, corrupt, not a torch file, would need code to
            load (``weights_only`` refuses it), is not a dict, or lacks a required key; the
            message names the file and the reason in one line.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip / unpickling / weights_only errors come in several types
        msg = str(e)
        if "Unsupported global" in msg:
            raise ValueError(f"{what} file {str(path)!r} holds objects other than tensors and plain "
                             f"data; they are refused, since loading them could run code") from e
        raise ValueError(f"{what} file {str(path)!r} is damaged or not a torch file "
                         f"({type(e).__name__}: {_reason(msg)}); restore it from a backup, or start "
                         f"the run afresh in a new folder") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{what} file {str(path)!r} holds a {type(obj).__name__}, expected a dict")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{what} file {str(path)!r} lacks the key(s) {missing} "
                         f"(has: {sorted(map(str, obj))[:20]})")
    return obj


def _reason(msg: str) -> str:
    """The informative line of a torch.load error (weights_only errors bury it in advice)."""
    tail = msg.split("WeightsUnpickler error:", 1)
    text = tail[1] if len(tail) == 2 else msg
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""


# --------------------------------------------------------------------------- run folders
RUN_FILE = "run.json"
LOCK_FILE = ".lock"


class RunFolder:
    """An output folder that belongs to one run: the resume rule of every long command.

    On entry the folder is created and locked (an exclusive ``fcntl`` lock on
    ``<folder>/.lock``, which the kernel releases when the process ends, so a killed run
    leaves no stale lock), and its settings are checked against ``<folder>/run.json``:

    * no ``run.json`` yet: the settings are recorded there;
    * the same ``kind`` and settings: the run resumes (caches in the folder are reused);
    * other settings: :class:`~ghnas.errors.InputError` naming the differences; use
      another folder.

    A second process entering the same folder while the first holds it gets an
    ``InputError`` at once. ``settings`` must be JSON-able; only what changes the results
    belongs in them (not the device or the progress bar).
    """

    def __init__(self, path: str | os.PathLike, kind: str, settings: dict[str, Any]):
        from ._util import jsonable

        self.path = Path(path)
        self.kind = kind
        self.settings = jsonable(settings)
        self._fd: int | None = None

    def __enter__(self) -> "RunFolder":
        from .errors import InputError

        if self.path.exists() and not self.path.is_dir():
            raise InputError(f"output folder {str(self.path)!r} exists and is not a folder; --out names a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._check_settings()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._unlock()

    def _lock(self) -> None:
        from .errors import InputError

        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock, runs must not share a folder
            self._fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise InputError(f"output folder {str(self.path)!r} is in use by a running job ({holder}); "
                             "wait for it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        self._fd = fd

    def _unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def _check_settings(self) -> None:
        import json

        from .errors import InputError

        record = {"kind": self.kind, "settings": self.settings}
        path = self.path / RUN_FILE
        if not path.exists():
            atomic_write_text(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
            return
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable run record ({e}); remove it or choose another folder") from None
        if not isinstance(old, dict) or old.get("kind") != self.kind:
            kind = old.get("kind") if isinstance(old, dict) else None
            raise InputError(f"output folder {str(self.path)!r} holds a {kind!r} run, not a {self.kind!r} run; "
                             "choose another folder")
        before = old.get("settings") or {}
        diff = sorted(k for k in set(before) | set(self.settings) if before.get(k) != self.settings.get(k))
        if diff:
            shown = "; ".join(f"{k}: {before.get(k)!r} -> {self.settings.get(k)!r}" for k in diff[:4])
            more = f"; and {len(diff) - 4} more" if len(diff) > 4 else ""
            raise InputError(f"output folder {str(self.path)!r} holds a run with other settings ({shown}{more}); "
                             "the same settings resume it, other settings need another folder")
