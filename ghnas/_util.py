"""Small private helpers shared across ghnas: device choice, CPU thread limits, the
first tensor of a model output, JSON-safe values. One home each, so every module
decides these things the same way."""
from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

__all__ = ["cache_root", "default_device", "model_device", "cpu_threads", "first_tensor", "jsonable", "json_key", "degenerate_reason",
           "parse_size"]


def cache_root() -> Path:
    """ghnas's one cache folder: ``$GHNAS_CACHE`` if set, else ``~/.cache/ghnas``.
    Downloaded GHNs live right in it, decoded datasets under ``data/``."""
    env = os.environ.get("GHNAS_CACHE")
    return Path(env).expanduser() if env else Path("~/.cache/ghnas").expanduser()


def default_device(device: Any = None):
    """``torch.device(device)``; ``None`` or ``'auto'`` means CUDA when available, else CPU."""
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_device(model: Any):
    """Where a module lives: the device of its first parameter, else of its first buffer,
    else the CPU."""
    import torch

    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def cpu_threads(n: int | None, device: Any = "cpu") -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads when ``device`` is a CPU.

    ``None`` (or a non-CPU device) leaves torch's setting alone. Small networks run faster
    on one thread, especially on a busy machine, so ghnas scores them with ``n=1``.
    """
    import torch

    old = torch.get_num_threads()
    if n is None or torch.device(device).type != "cpu" or int(n) == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def first_tensor(output: Any, what: str = "the model"):
    """The main tensor of a model output, ppuda's rule: the tensor itself, the first entry
    of a tuple/list (DARTS networks return ``(logits, aux_logits)``), the ``'logits'`` /
    ``'out'`` entry (else the first value) of a dict, or a ``.logits`` attribute.

    Raises ``TypeError`` naming ``what`` when there is no tensor to be found.
    """
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output:
        return first_tensor(output[0], what)
    if isinstance(output, dict) and output:
        for key in ("logits", "out"):
            if key in output:
                return first_tensor(output[key], what)
        return first_tensor(next(iter(output.values())), what)
    if hasattr(output, "logits"):
        return first_tensor(output.logits, what)
    raise TypeError(f"the forward pass of {what} returned {type(output).__name__}; expected a "
                    "tensor, or a tuple/list/dict whose first entry is one")


def jsonable(obj: Any, nonfinite: str = "keep") -> Any:
    """``obj`` as plain JSON values: dicts with string keys, lists, numbers, strings.

    numpy scalars become Python numbers, paths strings, tuples lists, unknown objects
    ``str(obj)``. ``nonfinite``: ``'keep'`` leaves inf/NaN (Python's json writes
    ``Infinity``), ``'null'`` replaces them with ``None`` (strict JSON).
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v, nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, nonfinite) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return None if nonfinite == "null" and not math.isfinite(obj) else obj
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        np = None
    if np is not None and isinstance(obj, np.integer):
        return int(obj)
    if np is not None and isinstance(obj, np.floating):
        return jsonable(float(obj), nonfinite)
    if np is not None and isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), nonfinite)
    return str(obj)


def json_key(obj: Any) -> str:
    """Canonical JSON text of ``obj`` (sorted keys): equal settings give equal text."""
    return json.dumps(jsonable(obj), sort_keys=True)


def degenerate_reason(scores: Sequence[float]) -> str | None:
    """Why ``scores`` rank nothing, or ``None`` when they do.

    Degenerate: two or more scores and none finite, or every finite score equal (a proxy
    that gives every network 0, as snip does on a single-class batch). A single finite
    score among degenerate (non-finite) networks still ranks them, and is not degenerate.
    """
    vals = [float(v) for v in scores]
    if len(vals) < 2:
        return None
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return f"none of the {len(vals)} scores is finite (every network is degenerate for this proxy)"
    if len(finite) >= 2 and min(finite) == max(finite):
        return (f"all {len(finite)} finite scores are equal ({finite[0]:.6g}): the proxy did not "
                "tell the architectures apart")
    return None


def parse_size(text: str, what: str = "size") -> dict[str, int]:
    """A network size written as ``KEY=INT`` pairs: ``'C=16,layers=8'`` -> ``{'C': 16, 'layers': 8}``.

    The one reader of that notation (meta-training's size specs and the benchmarks' flags);
    ``ValueError`` naming ``what`` for anything else.
    """
    out: dict[str, int] = {}
    for item in text.split(","):
        k, eq, v = item.strip().partition("=")
        if not eq or not k.strip().isidentifier():
            raise ValueError(f"{what}: cannot read {item.strip()!r} in {text.strip()!r}; expected KEY=INT "
                             "pairs, e.g. 'C=16,N=5'")
        try:
            out[k.strip()] = int(v)
        except ValueError:
            raise ValueError(f"{what}: {k.strip()}={v.strip()!r} is not an integer") from None
    return out
