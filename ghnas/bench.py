"""Ground truth by training: brief training of sampled architectures, one CSV row each.

Ranking experiments need the true quality of many architectures. Where no tabular
benchmark covers the space (DARTS), or to check a benchmark under a short budget, this
module samples ``n`` architectures, trains each for a few epochs and records its accuracy:

- training uses the **train** split and accuracy is measured on the held-out **val**
  split (``val_size`` images carved from the training set with a fixed seed, see
  :func:`ghnas.data.load`). The **test** split is never touched, so the ground truth can
  be used to choose things without leaking test data;
- ``val_acc`` is stored in percent (like NAS-Bench-201's accuracies), ``train_loss`` is
  the mean training loss over the last epoch, ``params`` counts every parameter of the
  built network, ``seconds`` is the wall time to build, train and evaluate it;
- every finished architecture is appended to the CSV and flushed at once, so a killed run
  loses at most the architecture in progress; running the same command again resumes
  (architectures already in the CSV are skipped) and a larger ``n`` extends the run with
  the next samples of the same seeded sequence;
- the settings that make results comparable (space, epochs, data, seed, builder and
  training settings) are kept in a sidecar ``<name>.settings.json`` next to the CSV; a
  run whose settings differ from it is refused, naming the differing setting. The device,
  data root and library versions are recorded there too but not compared, so a run can be
  resumed on another machine (note that CUDA runs use bfloat16 autocast by default, so
  their numbers differ slightly from CPU runs).

The CSV reads as ground truth with
``ghnas.correlation.read_truth(path, acc_col='val_acc', space='nb201')``.

Example::

    >>> from ghnas.bench import bench
    >>> path = bench('nb201', n=20, epochs=1, data_root='../shared/data/cifar10',
    ...              out='nb201_1ep.csv')  # doctest: +SKIP
    >>> from ghnas.correlation import read_truth
    >>> truth = read_truth(path, acc_col='val_acc', space='nb201')  # doctest: +SKIP
"""
from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

from ghnas._io import atomic_write_text

__all__ = ["bench", "COLUMNS", "settings_path", "read_rows"]

COLUMNS: tuple[str, ...] = ("arch", "val_acc", "train_loss", "params", "seconds", "seed", "epochs")

# train() arguments that bench() sets itself and that train_kwargs may not override
_RESERVED = ("model", "data", "steps", "epochs", "seed", "device", "eval_data", "eval_every",
             "progress")
# recorded for information only: a different value does not make results incomparable
_INFO_KEYS = ("data_root", "device", "torch", "ghnas", "created")


def settings_path(out: str | os.PathLike) -> Path:
    """The sidecar settings file of a bench CSV: ``x.csv`` -> ``x.settings.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".settings.json")


def read_rows(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read the finished rows of a bench CSV (an empty list when it does not exist).

    A last line cut short by a killed run is dropped with a warning (and removed from the
    file, so appending can go on); a malformed line elsewhere raises ``ValueError``.
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    if header != list(COLUMNS):
        raise ValueError(f"{path} is not a bench CSV: its header is {header}, expected {list(COLUMNS)}")
    rows: list[dict[str, str]] = []
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = next(csv.reader([line]))
        complete = line.endswith("\n") and len(fields) == len(COLUMNS)
        if complete:
            try:
                float(fields[1])
            except ValueError:
                complete = False
        if not complete:
            if i == len(lines):
                warnings.warn(f"{path}, line {i}: dropping an incomplete last row (a run was "
                              f"interrupted while writing it): {line.strip()!r}", stacklevel=2)
                atomic_write_text(path, "".join(lines[:-1]))
                break
            raise ValueError(f"{path}, line {i}: malformed row {line.strip()!r}; expected "
                             f"{len(COLUMNS)} fields {list(COLUMNS)}")
        rows.append(dict(zip(COLUMNS, fields)))
    return rows


def _jsonable(obj: Any) -> Any:
    """Settings as they read back from JSON (tuples -> lists), so comparisons are exact."""
    from ._util import jsonable

    return jsonable(obj)


def _resolved_train_kwargs(train_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``train_kwargs`` with every unspecified train() default filled in."""
    from .train import train

    sig = inspect.signature(train)
    bad = sorted(set(train_kwargs) & set(_RESERVED))
    if bad:
        raise ValueError(f"train_kwargs may not set {bad}: bench() sets them itself (use its "
                         f"epochs/seed/device/progress arguments)")
    unknown = sorted(set(train_kwargs) - set(sig.parameters))
    if unknown:
        valid = [p for p in sig.parameters if p not in _RESERVED]
        raise ValueError(f"unknown train_kwargs {unknown}; valid: {', '.join(valid)}")
    full = {name: p.default for name, p in sig.parameters.items() if name not in _RESERVED}
    full.update(train_kwargs)
    return full


def _check_settings(side: Path, settings: dict[str, Any], csv_path: Path, have_rows: bool) -> None:
    """Refuse to add rows made under other settings; write the sidecar for a new run."""
    comparable = {k: v for k, v in settings.items() if k not in _INFO_KEYS}
    if side.is_file():
        old = json.loads(side.read_text(encoding="utf-8"))
        if have_rows:
            diffs = []
            for key in sorted(set(comparable) | (set(old) - set(_INFO_KEYS))):
                a, b = old.get(key, "<absent>"), comparable.get(key, "<absent>")
                if key == "train_kwargs" and isinstance(a, dict) and isinstance(b, dict):
                    for k in sorted(set(a) | set(b)):
                        if a.get(k, "<absent>") != b.get(k, "<absent>"):
                            diffs.append(f"train_kwargs[{k!r}]: file has {a.get(k, '<absent>')!r}, "
                                         f"this run has {b.get(k, '<absent>')!r}")
                elif a != b:
                    diffs.append(f"{key}: file has {a!r}, this run has {b!r}")
            if diffs:
                raise ValueError(
                    f"{csv_path} holds results made with other settings (see {side.name}); "
                    f"refusing to mix them. Differences: " + "; ".join(diffs) +
                    ". Use another out= path, or the file's settings.")
            return
    elif have_rows:
        raise ValueError(f"{csv_path} has results but no settings file {side.name} next to it, so "
                         "they cannot be checked against this run; use another out= path")
    atomic_write_text(side, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def _format_row(values: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([values[c] for c in COLUMNS])
    return buf.getvalue()


def bench(space: str = "nb201", n: int = 20, epochs: float = 1, data: str = "cifar10",
          data_root: str | os.PathLike | None = None, out: str | os.PathLike = "bench.csv",
          seed: int = 0, build_kwargs: Optional[Mapping[str, Any]] = None,
          train_kwargs: Optional[Mapping[str, Any]] = None, device: str | None = None,
          progress: bool = True, val_size: int = 5000, train_size: Optional[int] = None,
          data_seed: int = 0) -> Path:
    """Train ``n`` sampled architectures briefly and append their val accuracy to a CSV.

    Args:
        space: a ``search_spaces`` name (``'nb201'``, ``'darts'``).
        n: how many architectures (distinct under the space's ``hash``), drawn with
            ``space.sample_many(n, seed, unique=True)``; the first ``k`` of ``n`` are the
            same for every ``n >= k``, so a larger ``n`` extends an earlier run.
        epochs: training epochs per architecture (a fraction is allowed).
        data: a :func:`ghnas.data.load` name (``'cifar10'``, ``'imagefolder:PATH'``).
        data_root: the ``root`` passed to :func:`ghnas.data.load`.
        out: the CSV to append to; its settings go to :func:`settings_path` (``out`` with
            ``.settings.json`` in place of ``.csv``).
        seed: seeds the sampling of architectures, their initialisation and training
            (every architecture sees the same batches in the same order).
        build_kwargs: passed to ``space.build`` (e.g. ``{'C': 16, 'N': 5}``).
        train_kwargs: passed to :func:`ghnas.train.train` (batch_size, lr, ...), except
            the arguments bench sets itself (steps, epochs, seed, device, eval_data,
            eval_every, progress).
        device: ``'cuda'``, ``'cpu'``, ...; default CUDA when available.
        progress: show progress bars.
        val_size: held-out validation images carved from the training set.
        train_size: train on a seeded class-balanced subset of this many images (default
            all of the train split); for quick, rough ground truth.
        data_seed: fixes the train/val split.

    Returns:
        The path of the CSV. Columns: ``arch`` (canonical string), ``val_acc`` (percent),
        ``train_loss``, ``params``, ``seconds``, ``seed``, ``epochs``.

    Raises:
        ValueError: the CSV holds rows made with different settings (the message names
            them), or an argument is invalid.
    """
    import torch

    import search_spaces
    from . import __version__
    from .data import load
    from .train import evaluate, train

    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer; got {n!r}")
    if not (isinstance(epochs, (int, float)) and epochs > 0 and math.isfinite(epochs)):
        raise ValueError(f"epochs must be a positive number; got {epochs!r}")
    sp = search_spaces.get(space)
    build_kwargs = dict(build_kwargs or {})
    tkw = _resolved_train_kwargs(dict(train_kwargs or {}))
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))

    out = Path(out)
    side = settings_path(out)
    if side == out:
        raise ValueError(f"out must be a .csv path distinct from its settings file; got {str(out)!r}")
    settings = _jsonable(dict(
        space=sp.name, epochs=epochs, data=data, seed=seed, val_size=val_size,
        train_size=train_size, data_seed=data_seed, build_kwargs=build_kwargs,
        train_kwargs=tkw, data_root=None if data_root is None else str(data_root),
        device=str(dev), torch=torch.__version__, ghnas=__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%S")))
    rows = read_rows(out)
    _check_settings(side, settings, out, have_rows=bool(rows))

    done = {sp.validate(r["arch"]) for r in rows}
    archs = [sp.validate(a) for a in sp.sample_many(n, seed=seed, unique=True)]
    todo = [a for a in archs if a not in done]
    if not todo:
        return out

    # the test split is never loaded: ground truth comes from a held-out part of train
    train_data = load(data, root=data_root, split="train", val_size=val_size, seed=data_seed)
    val_data = load(data, root=data_root, split="val", val_size=val_size, seed=data_seed)
    if train_size is not None:
        train_data = train_data.subset(train_size, seed=data_seed)
    if dev.type != "cpu":
        train_data, val_data = train_data.to(dev), val_data.to(dev)

    if not out.is_file() or out.stat().st_size == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8", newline="") as fh:
            fh.write(_format_row({c: c for c in COLUMNS}))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(archs), initial=len(archs) - len(todo), desc=f"bench {sp.name}",
                   unit="arch")
    try:
        for arch in todo:
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                torch.manual_seed(seed)  # the same initialisation stream for every arch
                model = sp.build(arch, **build_kwargs)
            n_params = sum(p.numel() for p in model.parameters())
            res = train(model, train_data, epochs=epochs, seed=seed, device=dev,
                        progress=progress, **tkw)
            ev = evaluate(model, val_data, batch_size=tkw.get("eval_batch_size", 500), device=dev,
                          bn_mode="eval", amp=tkw.get("amp"))
            row = dict(arch=arch, val_acc=f"{100 * ev.accuracy:.4f}",
                       train_loss=f"{res.train_loss:.6g}", params=n_params,
                       seconds=f"{time.perf_counter() - t0:.3f}", seed=seed, epochs=epochs)
            with open(out, "a", encoding="utf-8", newline="") as fh:
                fh.write(_format_row(row))
                fh.flush()
                os.fsync(fh.fileno())
            del model
            if bar is not None:
                bar.update(1)
                bar.set_postfix(val_acc=row["val_acc"])
    finally:
        if bar is not None:
            bar.close()
    return out
