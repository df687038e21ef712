"""One entry point for every proxy: :func:`score` architectures and get a :class:`ScoreTable`.

Example::

    >>> from ghnas.proxies import score
    >>> table = score(['|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|'],
    ...               space='nb201', proxy='params', progress=False)
    >>> round(table.rows[0].score, 3)                       # millions of parameters
    0.559
    >>> table.to_csv('scores.csv')                           # doctest: +SKIP

Conventions
-----------
* **Seeds.** The data batch is drawn with ``seed``; each network is built under the torch
  seed :func:`~ghnas.proxies.base.arch_seed` ``(seed, architecture)``, so a score is a
  function of (proxy, settings, data, seed, architecture) only.
* **Duplicates and the cache.** Architectures are identified by their validated string
  (``space.validate(arch)``): the same architecture written twice is scored once. We do
  *not* merge architectures that are merely equivalent (``space.hash``): equivalent NB201
  cells differ in dead edges, which carry parameters, FLOPs and initialisation draws, so
  ``params``, ``flops`` and every randomly initialised proxy can tell them apart. With
  ``cache=path`` every result is appended to a JSON-lines file as soon as it is known,
  keyed by (proxy, settings, space, build kwargs, seed, data fingerprint, architecture);
  an interrupted run called again with the same arguments resumes where it stopped.
* **NaN policy.** A proxy returns ``nan`` for a degenerate network (e.g. no path from the
  input to the output, so a correlation matrix or a log-determinant is undefined). The
  table stores such a score as the proxy's *worst* value, ``-inf`` when higher is better
  (``+inf`` otherwise), so the network ranks last; infinities a proxy returns itself are
  kept as they are. JSON files write them as ``-Infinity`` / ``Infinity`` (read back by
  Python's ``json``), CSV files as ``-inf`` / ``inf``.
* **Data.** Proxies with ``needs_data`` get one batch of ``batch_size`` images:
  ``data`` may be a dataset name or an ``ImageData`` (``ghnas.data``), an ``(x, y)`` pair
  of tensors or a list of such pairs (used as given), or any iterable of ``(x, y)``
  (its first batch). Data-free proxies (``params``, ``flops``, ``synflow``) get ``None``
  and use their ``input_shape`` setting.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from .._io import atomic_write_text
from .._util import default_device, degenerate_reason
from .base import Batch, Proxy, get_proxy

__all__ = ["ScoreRow", "ScoreTable", "score", "load_batches", "worst_value", "degenerate_reason"]


# --------------------------------------------------------------------------- results


@dataclass
class ScoreRow:
    """One scored architecture. ``seconds`` is the time it took to build and score it
    (also for rows served from the cache, which are marked ``cached``)."""

    arch: str
    score: float
    seconds: float
    cached: bool = False


@dataclass
class ScoreTable:
    """The result of :func:`score`: one row per input architecture, in input order."""

    proxy: str
    higher_is_better: bool
    rows: list[ScoreRow]
    settings: dict[str, Any] = field(default_factory=dict)
    #: for ensembles: each member's scores, aligned with ``rows``
    members: dict[str, list[float]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    @property
    def archs(self) -> list[str]:
        return [r.arch for r in self.rows]

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.rows]

    @property
    def degenerate(self) -> str | None:
        """Why the table ranks nothing (every score equal, or none finite), else ``None``."""
        return degenerate_reason(self.scores)

    def ranked(self) -> list[ScoreRow]:
        """Rows from the best to the worst architecture (ties keep input order)."""
        sign = -1.0 if self.higher_is_better else 1.0
        return sorted(self.rows, key=lambda r: sign * r.score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "proxy": self.proxy,
            "higher_is_better": self.higher_is_better,
            "settings": self.settings,
            "rows": [dataclasses.asdict(r) for r in self.rows],
            "members": self.members,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ScoreTable":
        return cls(proxy=d["proxy"], higher_is_better=bool(d["higher_is_better"]),
                   rows=[ScoreRow(**r) for r in d["rows"]], settings=dict(d.get("settings", {})),
                   members={k: list(v) for k, v in d.get("members", {}).items()})

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_dict` as JSON, atomically (temp file + rename)."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> "ScoreTable":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write ``arch, score, seconds, cached`` (+ one column per ensemble member), atomically."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        names = list(self.members)
        writer.writerow(["arch", "score", "seconds", "cached", *names])
        for i, r in enumerate(self.rows):
            writer.writerow([r.arch, repr(float(r.score)), f"{r.seconds:.6f}", int(r.cached),
                             *(repr(float(self.members[n][i])) for n in names)])
        return atomic_write_text(path, buf.getvalue())


def set_table(scored: Any, archs: Sequence[str], keys: Sequence[str], settings: dict[str, Any],
              cached: Sequence[bool] | None = None) -> ScoreTable:
    """The rows of ``archs`` (``keys``: their canonical strings) from a
    :class:`~ghnas.proxies.ensemble.SetScores`: the aggregate over the whole set as the
    score, the members' times summed, each member's column in ``members`` (used by
    :func:`score` and the Ray integration's ``score_distributed``)."""
    values = scored.aggregate(list(keys))
    flags = list(cached) if cached is not None else [False] * len(keys)
    rows = [ScoreRow(a, v, scored.seconds(k), bool(c)) for a, k, v, c in zip(archs, keys, values, flags)]
    members = {n: scored.column(n, list(keys)) for n in scored.names} if scored.is_aggregate else {}
    return ScoreTable(proxy=scored.label, higher_is_better=scored.higher_is_better, rows=rows,
                      settings=settings, members=members)


def ensemble_table(prox: Any, archs: Sequence[str], tables: Sequence[ScoreTable],
                   common: dict[str, Any]) -> ScoreTable:
    """An ensemble's table from its members' tables over the same ``archs``: the rank
    aggregate over those ``archs`` (through :class:`~ghnas.proxies.ensemble.SetScores`)."""
    from .ensemble import SetScores

    scored = SetScores(prox)
    for m, t in zip(scored.names, tables):
        scored.add(m, t.archs, t.scores, [r.seconds for r in t.rows])
    cached = [all(t.rows[i].cached for t in tables) for i in range(len(archs))]
    return set_table(scored, archs, archs, {"proxy": prox.settings(), **common}, cached)


def worst_value(higher_is_better: bool) -> float:
    """The score a degenerate (NaN) network gets: it ranks last."""
    return -math.inf if higher_is_better else math.inf


def _sanitize(value: float, higher_is_better: bool) -> float:
    value = float(value)
    return worst_value(higher_is_better) if math.isnan(value) else value


# --------------------------------------------------------------------------- data


def load_batches(data: Any, batch_size: int = 64, seed: int = 0,
                 device: str | torch.device = "cpu") -> list[Batch] | None:
    """Turn the ``data`` argument of :func:`score` into a list of ``(x, y)`` on ``device``.

    * ``None`` -> ``None``;
    * a string -> ``ghnas.data.load(data)``, then as an ``ImageData``;
    * an object with ``.batches(batch_size, shuffle, seed, device)`` (``ImageData``) ->
      its first shuffled batch;
    * an ``(x, y)`` pair of tensors, or a list of pairs -> used as given;
    * any other iterable of ``(x, y)`` (a ``DataLoader``) -> its first batch.
    """
    if data is None:
        return None
    if isinstance(data, str):
        try:
            from ghnas import data as gdata
        except ImportError as e:  # pragma: no cover - ghnas.data ships with the package
            raise ValueError(f"data={data!r} needs ghnas.data, which could not be imported: {e}") from e
        data = gdata.load(data)
    if hasattr(data, "batches"):
        it = iter(data.batches(batch_size, shuffle=True, seed=seed, device=device))
        return [_as_pair(next(it), device)]
    if _is_pair(data):
        return [_as_pair(data, device)]
    if isinstance(data, (list, tuple)) and data and all(_is_pair(b) for b in data):
        return [_as_pair(b, device) for b in data]
    if isinstance(data, Iterable):
        try:
            first = next(iter(data))
        except StopIteration:
            raise ValueError("data is an empty iterable; it must yield (x, y) batches") from None
        return [_as_pair(first, device)]
    raise TypeError(f"cannot use data of type {type(data).__name__}; pass a dataset name, an ImageData, "
                    "an (x, y) pair of tensors, a list of pairs or a DataLoader")


def _is_pair(obj: Any) -> bool:
    return (isinstance(obj, (tuple, list)) and len(obj) == 2
            and isinstance(obj[0], torch.Tensor) and isinstance(obj[1], torch.Tensor))


def _as_pair(batch: Any, device: str | torch.device) -> Batch:
    if not _is_pair(batch):
        raise TypeError(f"a data batch must be an (x, y) pair of tensors, got {type(batch).__name__}")
    x, y = batch
    return x.to(device), y.to(device)


def _fingerprint(batches: Sequence[Batch] | None) -> str | None:
    if batches is None:
        return None
    h = hashlib.sha256()
    for x, y in batches:
        for t in (x, y):
            t = t.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- cache


_TORN = "torn"


class _Cache:
    """Append-only JSON-lines store of results.

    Reading is forgiving, so that a damaged file never stops a resume: a line that is
    not UTF-8, not JSON, or not a record of ours (a ``score`` that is not a number, an
    ``arch`` that is not a string) is skipped, and one warning names the file, how many
    lines were skipped and the first of them. Skipped architectures are simply scored
    again. A line cut short by an interrupted write is skipped silently.
    """

    def __init__(self, path: str | os.PathLike | None, run_key: str):
        self.path = Path(path) if path is not None else None
        self.run_key = run_key
        self.values: dict[str, tuple[float, float]] = {}
        if self.path is not None and self.path.exists():
            self._read()

    def _read(self) -> None:
        assert self.path is not None
        bad: list[tuple[int, str]] = []
        with open(self.path, "rb") as f:  # bytes: one bad byte must not stop the whole file
            lines = f.read().split(b"\n")
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                why = self._take(raw)
                if why and why != _TORN:
                    bad.append((number, why))
        if bad:
            first, why = bad[0]
            warnings.warn(f"{self.path}: skipped {len(bad)} unreadable line(s) of the score cache "
                          f"(first: line {first}: {why}); those architectures are scored again",
                          stacklevel=4)

    def _take(self, raw: bytes) -> str:
        """Store one line's record if it is ours; return why it is unusable ('' if fine)."""
        try:
            rec = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            return f"not UTF-8 (byte {e.start + 1})"
        except json.JSONDecodeError as e:
            # every record ends with '}': a line without it was cut short by a kill (later
            # writes start a new line after it), which is expected and skipped silently
            return _TORN if not e.doc.rstrip().endswith("}") else f"not JSON ({e.msg})"
        if not isinstance(rec, dict):
            return "not a JSON object"
        if rec.get("key") != self.run_key:
            return ""  # another run's record: fine, just not ours
        value, seconds = rec.get("score"), rec.get("seconds", 0.0)
        if not isinstance(rec.get("arch"), str):
            return "no architecture string"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"score {str(value)[:20]!r} is not a number"
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            seconds = 0.0
        self.values[rec["arch"]] = (float(value), float(seconds))
        return ""

    def add(self, arch: str, value: float, seconds: float) -> None:
        self.values[arch] = (value, seconds)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"key": self.run_key, "arch": arch, "score": value, "seconds": seconds})
        with open(self.path, "a+") as f:
            # an interrupted writer may have left a line without its newline
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(f.tell() - 1)
                if f.read(1) != "\n":
                    f.write("\n")
            f.write(line + "\n")
            f.flush()


# --------------------------------------------------------------------------- score()


def _resolve_space(space: Any) -> Any:
    if isinstance(space, str):
        import search_spaces

        return search_spaces.get(space)
    if not all(hasattr(space, a) for a in ("build", "validate")):
        raise TypeError(f"space must be a name (e.g. 'nb201') or a search space with build() and "
                        f"validate(), not {type(space).__name__}")
    return space


def _validate_all(archs: Sequence[str], space: Any) -> list[str]:
    keys, bad = [], []
    for a in archs:
        try:
            keys.append(space.validate(a))
        except Exception as e:  # the space's own error says what is wrong
            bad.append(f"{a!r} ({e})")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; ... and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{len(bad)} invalid architecture(s) for space "
                         f"{getattr(space, 'name', type(space).__name__)!r}: {shown}")
    return keys


def _proxy_label(p: Proxy) -> str:
    return p.name or type(p).__name__


def score(
    archs: Sequence[str] | str,
    space: Any = "nb201",
    proxy: str | Proxy = "zero-shot",
    data: Any = "sample",
    seed: int = 0,
    batch_size: int | None = None,
    build_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    *,
    cache: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    into: Any = None,
) -> ScoreTable:
    """Score architectures of a search space with a zero-cost proxy.

    Args:
        archs: architecture strings (or one string).
        space: a space name (``'nb201'``, ``'darts'``) or a search space object.
        proxy: ``'zero-shot'`` (default: the space's chosen aggregate), a registered
            name (see :func:`~ghnas.proxies.available_proxies`), an ensemble such as
            ``'vote:synflow,naswot,params'``, ``'logrank:swap,meco'`` or ``'ghn+params'``,
            or a :class:`~ghnas.proxies.Proxy` instance.
        data: where the batch comes from (see :func:`load_batches`); only read when the
            proxy needs data. ``'sample'`` is the small CIFAR-10 sample shipped with ghnas.
        seed: run seed (data batch and network initialisations).
        batch_size: images in the batch given to data-dependent proxies (default: the
            proxy's ``default_batch_size``, 1,000 for the GHN proxy (500 when ``proxy='ghn'`` on DARTS) and 64 otherwise; for an
            ensemble, see below).
        build_kwargs: passed to ``space.build(arch, **build_kwargs)`` (e.g. ``C``, ``N``).
        progress: show a tqdm progress bar.
        cache: optional JSON-lines file that stores every result as soon as it is known;
            a later call with the same settings reuses them (resume after interruption).
        device: where networks run; default CUDA when available, else CPU.
        into: a :class:`~ghnas.proxies.ensemble.SetScores` of this proxy that keeps the
            member scores of everything scored so far: members score only the
            architectures it lacks, their scores are added to it, and an ensemble's
            scores are its aggregate over the *whole* set (every architecture scored into
            it so far), so calls scoring a few architectures at a time give comparable
            scores. Without it the aggregate ranks the architectures of this call.

    Ensembles (``'a+b'``, ``'vote:a,b'``, ``'logrank:a,b'``, ``'az_nas'``, ``'zero-shot'``):
    every member is scored on its own and filed in ``cache`` under the member's identity,
    so adding a member to an ensemble, or calling again with more architectures, scores
    only what is new. One batch of ``batch_size`` images (default: the largest member's
    ``default_batch_size``) is drawn, and each data-dependent member takes its first
    ``min(batch_size, member.default_batch_size)`` images: a member scores exactly as it
    does alone with its own batch size (MeCo 1 image, SWAP 16, ZiCo 128, the DARTS default's GHN 200), and
    shares those cached scores.

    Returns:
        A :class:`ScoreTable` with one row per input architecture, in input order.
    """
    if isinstance(archs, str):
        archs = [archs]
    archs = list(archs)
    space_obj = _resolve_space(space)
    prox = get_proxy(proxy, space=space_obj)
    dev = default_device(device)
    keys = _validate_all(archs, space_obj)
    if batch_size is None:
        batch_size = int(prox.default_batch_size)
    batches = load_batches(data, batch_size, seed, dev) if prox.needs_data else None
    common = dict(space=getattr(space_obj, "name", type(space_obj).__name__),
                  build_kwargs=dict(build_kwargs or {}), seed=int(seed),
                  batch_size=int(batch_size) if prox.needs_data else None,
                  data=_fingerprint(batches))

    from .ensemble import Ensemble, SetScores, member_batches

    scored = into if into is not None else SetScores(prox)
    _check_set(scored, prox, common)
    if isinstance(prox, Ensemble):
        settings = {"proxy": prox.settings(), **common}
        cached = [True] * len(keys)
        for name, m in zip(scored.names, prox.members):
            need = scored.missing(name, keys)
            if not need:
                continue
            m_batches, m_size = member_batches(m, batches, batch_size)
            t = score(need, space_obj, m, m_batches, seed, m_size, build_kwargs, progress,
                      cache=cache, device=dev)
            scored.add(name, t.archs, t.scores, [r.seconds for r in t.rows])
            fresh = {r.arch for r in t.rows if not r.cached}
            cached = [c and k not in fresh for c, k in zip(cached, keys)]
        return set_table(scored, archs, keys, settings, _repeats(keys, cached))
    new = scored.missing(scored.names[0], keys)
    if new:
        table = _score_one(prox, new, space_obj, batches, seed, build_kwargs, progress, cache, dev, common)
        scored.add(scored.names[0], new, table.scores, [r.seconds for r in table.rows])
        fresh = {r.arch for r in table.rows if not r.cached}
        settings = table.settings
    else:
        if not len(scored):  # as in _score_one: it may resolve a named GHN, which settings record
            prox.identity(space_obj)
        settings = {"proxy": prox.settings(), **common}
        fresh = set()
    return set_table(scored, archs, keys, settings, _repeats(keys, [k not in fresh for k in keys]))


def _repeats(keys: Sequence[str], cached: Sequence[bool]) -> list[bool]:
    """Rows of an architecture already listed earlier in the call count as cached."""
    out, seen = [], set()
    for k, c in zip(keys, cached):
        out.append(bool(c) or k in seen)
        seen.add(k)
    return out


def _check_set(scored: Any, prox: Proxy, common: dict[str, Any]) -> None:
    """Refuse to mix scores of another proxy or other settings into a :class:`SetScores`."""
    from .ensemble import SetScores, proxy_label

    if not isinstance(scored, SetScores):
        raise TypeError(f"into must be a ghnas.proxies.ensemble.SetScores, got {type(scored).__name__}")
    names = [proxy_label(m) for m in (prox.members if hasattr(prox, "members") else [prox])]
    if scored.names != names or scored.label != proxy_label(prox):
        raise ValueError(f"into holds scores of {scored.label!r} (members {scored.names}), "
                         f"not of {proxy_label(prox)!r} (members {names})")
    key = json.loads(json.dumps(common, sort_keys=True, default=str))
    if scored.settings is None:
        scored.settings = key
    elif scored.settings != key:
        diff = sorted(k for k in set(key) | set(scored.settings) if key.get(k) != scored.settings.get(k))
        raise ValueError(f"into holds scores computed with other settings (differing: {', '.join(diff)}); "
                         "use one SetScores per set of settings")


def _score_one(prox: Proxy, keys: list[str], space_obj: Any, batches: Sequence[Batch] | None, seed: int,
               build_kwargs: dict[str, Any] | None, progress: bool, cache: Any, dev: torch.device,
               common: dict[str, Any]) -> ScoreTable:
    """A single (non-ensemble) proxy's table of distinct canonical ``keys``, through the cache."""
    identity = {"proxy": prox.identity(space_obj), **common}  # first: it may resolve a named GHN
    settings = {"proxy": prox.settings(), **common}
    run_key = hashlib.sha256(json.dumps({"name": _proxy_label(prox), **identity}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:24]
    store = _Cache(cache, run_key)
    from_cache = set(store.values)
    todo: list[str] = []
    for k in keys:
        if k not in store.values and k not in todo:
            todo.append(k)

    if todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"{_proxy_label(prox)}", disable=not progress, leave=False)

        def on_result(i: int, value: float, seconds: float) -> None:
            store.add(todo[i], _sanitize(value, prox.higher_is_better), float(seconds))
            bar.update(1)

        t0 = time.perf_counter()
        try:
            values = prox.score_archs(todo, space_obj, batches, dict(build_kwargs or {}),
                                      seed=int(seed), device=dev, callback=on_result)
        finally:
            bar.close()
        if len(values) != len(todo):
            raise RuntimeError(f"proxy {_proxy_label(prox)!r} returned {len(values)} scores for "
                               f"{len(todo)} architectures")
        # a proxy that does not report through the callback gets the mean time per architecture
        per_arch = (time.perf_counter() - t0) / len(todo)
        for k, v in zip(todo, values):
            if k not in store.values:
                store.add(k, _sanitize(v, prox.higher_is_better), per_arch)

    rows = []
    for k in keys:
        value, seconds = store.values[k]
        rows.append(ScoreRow(k, value, seconds, cached=k in from_cache))
    return ScoreTable(proxy=_proxy_label(prox), higher_is_better=prox.higher_is_better, rows=rows,
                      settings=settings)
