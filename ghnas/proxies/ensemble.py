"""Rank aggregation of several proxies ("voting"), e.g. ``'vote:synflow,naswot,params'``.

Proxies live on incomparable scales (a log-flow, a log-determinant, a parameter count),
so an ensemble combines *ranks*, not values: each member's scores are ranked over the
scored architectures (ties share their average rank, degenerate networks rank last),
and the ensemble score is

* ``method='mean'`` (default): the mean over members of the normalised rank
  ``(rank - 1) / (n - 1)`` in [0, 1], 1 for the member's best architecture;
* ``method='borda'``: the Borda count, the sum over members of the number of
  architectures each member places below this one (ties count one half);
* ``method='log_rank'`` (AZ-NAS's aggregate, ``'logrank:a,b'``): ``sum_m log(rank_m / n)``
  with rank 1 the worst and n the best, so one member that places an architecture near
  the bottom costs it more than a mean would (a soft "every member must agree").

Mean and Borda give the same order; they differ only in scale. Because ranks depend on the whole
set, an ensemble scores sets of architectures (:meth:`Ensemble.score_archs`, or
:func:`ghnas.proxies.score`), not single networks.

:class:`SetScores` is the one home of set-level aggregation: it keeps each member's score
of every architecture scored so far (a column per member) and computes the aggregate over
that whole set. :func:`ghnas.proxies.score` (``into=``), the search strategies and the
Optuna / Ray integrations all rank through it, so an aggregate means the same everywhere:
the rank of an architecture among *everything* scored so far, not within one call or one
chunk. Example::

    >>> rank_aggregate([[1.0, 3.0, 2.0], [30.0, 10.0, 20.0]], [True, True])
    [0.5, 0.5, 0.5]
    >>> rank_aggregate([[1.0, 3.0, 2.0], [10.0, 30.0, 20.0]], [True, True], method='borda')
    [0.0, 4.0, 2.0]
"""
from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from scipy.stats import rankdata

from .base import Batch, Proxy, ResultCallback, get_proxy, register_proxy

__all__ = ["Ensemble", "SetScores", "rank_aggregate", "log_rank_aggregate", "member_batches",
           "member_batch_size", "METHODS", "PREFIXES"]

METHODS = ("mean", "borda", "log_rank")
#: the name prefix of an ensemble of each method: ``'vote:a,b'``, ``'logrank:a,b'``, ``'borda:a,b'``
PREFIXES = {"mean": "vote:", "log_rank": "logrank:", "borda": "borda:"}


def _check_columns(columns: Sequence[Sequence[float]], higher_is_better: Sequence[bool]) -> int:
    if len(columns) != len(higher_is_better):
        raise ValueError(f"got {len(columns)} score columns but {len(higher_is_better)} directions")
    if not columns:
        raise ValueError("rank aggregation needs at least one score column")
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError(f"score columns differ in length: {[len(c) for c in columns]}")
    return n


def _ranks(col: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """Ranks 1 (worst) .. n (best); ties share their average rank; NaN is the worst score."""
    v = np.asarray(col, dtype=float)
    v = v if higher_is_better else -v
    return rankdata(np.where(np.isnan(v), -np.inf, v), method="average")


def rank_aggregate(columns: Sequence[Sequence[float]], higher_is_better: Sequence[bool],
                   method: str = "mean") -> list[float]:
    """Combine score columns (one per proxy, aligned by architecture) into one score.

    Higher result = better architecture. NaN counts as the worst score of its column.
    """
    if method not in METHODS:
        raise ValueError(f"unknown aggregation method {method!r}; valid methods: {', '.join(METHODS)}")
    n = _check_columns(columns, higher_is_better)
    if n == 0:
        return []
    if method == "log_rank":
        return log_rank_aggregate(columns, higher_is_better)
    total = np.zeros(n)
    for col, hib in zip(columns, higher_is_better):
        ranks = _ranks(col, hib) - 1.0  # 0 = worst; = number beaten (ties: half)
        total += ranks / (n - 1) if (method == "mean" and n > 1) else ranks
    if method == "mean":
        total = total / len(columns) if n > 1 else np.full(n, 0.5)
    return [float(t) for t in total]


def log_rank_aggregate(columns: Sequence[Sequence[float]], higher_is_better: Sequence[bool]) -> list[float]:
    """AZ-NAS's aggregate ``sum_m log(rank_m / n)`` (rank 1 = worst, n = best; ties share
    their average rank; NaN counts as the worst score). Higher = better."""
    n = _check_columns(columns, higher_is_better)
    total = np.zeros(n)
    for col, hib in zip(columns, higher_is_better):
        total += np.log(_ranks(col, hib) / n)
    return [float(t) for t in total]


def member_batches(member: Proxy, batches: Sequence[Batch] | None,
                   batch_size: int | None) -> tuple[list[Batch] | None, int | None]:
    """The images an ensemble member is scored on, and their number.

    A member sees the first ``min(batch_size, member.default_batch_size)`` images of each
    batch: the batch is drawn once for the largest member (e.g. 1,000 images for a GHN
    member), and MeCo (1 image) or SWAP (16) still score, and cache, exactly as they do
    alone with their own batch size. Data-free members get ``None``.
    """
    b = member_batch_size(member, batch_size)
    if b is None or batches is None:
        return None, b
    return [(x[:b], y[:b]) for x, y in batches], b


def member_batch_size(member: Proxy, batch_size: int | None) -> int | None:
    """Images an ensemble member uses of a ``batch_size`` batch (``None``: it needs no data)."""
    if not member.needs_data:
        return None
    own = int(member.default_batch_size)
    return own if batch_size is None else min(int(batch_size), own)


@register_proxy("vote")
class Ensemble(Proxy):
    """Rank-aggregation of member proxies; build it as ``get_proxy('vote:a,b')``,
    ``get_proxy('a+b')`` (mean rank), ``get_proxy('logrank:a,b')`` (AZ-NAS's log-rank sum)
    or ``Ensemble(['a', 'b'], method=...)``."""

    higher_is_better = True

    def __init__(self, members: Sequence[str | Proxy] = (), method: str = "mean"):
        if isinstance(members, str):
            members = [m for m in members.split(",")]
        self._members = [get_proxy(m.strip() if isinstance(m, str) else m) for m in members]
        if len(self._members) < 1:
            raise ValueError("an ensemble needs at least one member proxy, e.g. 'vote:synflow,params'")
        if any(isinstance(m, Ensemble) for m in self._members):
            raise ValueError("ensembles cannot be nested; list all members in one ensemble")
        names = [m.name or type(m).__name__ for m in self._members]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"ensemble members must differ; repeated: {', '.join(dup)}")
        if method not in METHODS:
            raise ValueError(f"unknown aggregation method {method!r}; valid methods: {', '.join(METHODS)}")
        self.method = method
        self.member_settings = {n: m.settings() for n, m in zip(names, self._members)}

    @property
    def members(self) -> list[Proxy]:
        return list(self._members)

    def for_space(self, space: Any) -> "Ensemble":
        """This ensemble with each member's settings for ``space`` (a member made by name
        alone, as in ``get_proxy('te_nas', space='darts')``, gets what it would get alone)."""
        members = [m.for_space(space) if hasattr(m, "for_space") else m for m in self._members]
        if all(a is b for a, b in zip(members, self._members)):
            return self
        clone = copy.copy(self)
        clone._members = members
        clone.member_settings = {n: m.settings() for n, m in zip(self.member_settings, members)}
        return clone

    @property
    def label(self) -> str:
        return PREFIXES[self.method] + ",".join(m.name or type(m).__name__ for m in self._members)

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return any(m.needs_data for m in self._members)

    @property
    def default_batch_size(self) -> int:  # type: ignore[override]
        # one batch is drawn for every member, for the largest of them; each member then
        # takes its own first images of it (member_batches), as it would alone
        return max(m.default_batch_size for m in self._members)

    @property
    def needs_ghn(self) -> bool:  # type: ignore[override]
        return any(m.needs_ghn for m in self._members)

    def use_ghn(self, ghn: Any) -> None:
        """Give every member that predicts with a GHN this GHN."""
        if not self.needs_ghn:
            super().use_ghn(ghn)
        for m in self._members:
            if m.needs_ghn:
                m.use_ghn(ghn)
        self.member_settings = {m.name or type(m).__name__: m.settings() for m in self._members}

    def aggregate(self, columns: Sequence[Sequence[float]]) -> list[float]:
        return rank_aggregate(columns, [m.higher_is_better for m in self._members], self.method)

    def score(self, model: nn.Module, batches: Sequence[Batch] | None) -> float:
        raise TypeError("an ensemble ranks a set of architectures and cannot score one network; "
                        "use score_archs() or ghnas.proxies.score()")

    def score_archs(self, archs: Sequence[str], space: Any, batches: Sequence[Batch] | None,
                    build_kwargs: dict[str, Any] | None = None, *, seed: int = 0,
                    device: str | torch.device = "cpu",
                    callback: ResultCallback | None = None) -> list[float]:
        columns = [m.score_archs(archs, space, member_batches(m, batches, None)[0], build_kwargs,
                                 seed=seed, device=device)
                   for m in self._members]
        values = self.aggregate(columns)
        if callback is not None:
            for i, v in enumerate(values):
                callback(i, v, math.nan)
        return values


def proxy_label(p: Proxy) -> str:
    """The name a proxy's scores are filed under (its label for an ensemble)."""
    return getattr(p, "label", None) or p.name or type(p).__name__


class SetScores:
    """Every architecture scored so far with ``proxy``: each member's score kept on its own
    (one column per member), and the aggregate over the whole set.

    For a single proxy the "aggregate" is its own score (a single proxy needs no set).
    For an :class:`Ensemble` (``'vote:a,b'``, ``'a+b'``, ``'az_nas'``, ...) it is the
    ensemble's rank aggregate over every architecture that all members have scored, so
    the value of an architecture changes as the set grows: it is its rank *at that
    moment*. Architectures are identified by the strings given to :meth:`add` (use one
    canonical spelling, e.g. ``space.validate(arch)``).

    Example::

        >>> s = SetScores('params+flops')
        >>> s.add('params', ['a', 'b'], [1.0, 2.0]); s.add('flops', ['a', 'b'], [5.0, 3.0])
        >>> s.aggregate()
        [0.5, 0.5]
        >>> s.add('params', ['c'], [3.0]); s.add('flops', ['c'], [9.0])
        >>> s.aggregate(['a', 'b', 'c'])                  # re-ranked over the whole set
        [0.25, 0.25, 1.0]
        >>> s.missing('flops', ['c', 'd'])
        ['d']
    """

    def __init__(self, proxy: str | Proxy):
        self.proxy = get_proxy(proxy)
        self.members: list[Proxy] = (self.proxy.members if isinstance(self.proxy, Ensemble)
                                     else [self.proxy])
        self.names = [proxy_label(m) for m in self.members]
        self._columns: dict[str, dict[str, float]] = {n: {} for n in self.names}
        self._seconds: dict[str, dict[str, float]] = {n: {} for n in self.names}
        self._order: dict[str, None] = {}  # every architecture seen, first added first
        self._aggregate: dict[str, float] | None = None
        #: what the member scores were computed with (set by the first scoring call;
        #: :func:`ghnas.proxies.score` refuses to mix scores of other settings into the set)
        self.settings: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return proxy_label(self.proxy)

    @property
    def is_aggregate(self) -> bool:
        """Whether values are set-level ranks (an ensemble), not a single proxy's scores."""
        return isinstance(self.proxy, Ensemble)

    @property
    def higher_is_better(self) -> bool:
        return True if self.is_aggregate else bool(self.proxy.higher_is_better)

    def _member(self, member: str | Proxy) -> str:
        name = member if isinstance(member, str) else proxy_label(member)
        if name not in self._columns:
            raise ValueError(f"{name!r} is not a member of {self.label!r}; members: {', '.join(self.names)}")
        return name

    def add(self, member: str | Proxy, archs: Sequence[str], values: Sequence[float],
            seconds: Sequence[float] | None = None) -> None:
        """Record ``member``'s scores of ``archs`` (an architecture scored again keeps its
        first score: scores are deterministic for fixed settings)."""
        name = self._member(member)
        archs, values = list(archs), [float(v) for v in values]
        secs = [0.0] * len(archs) if seconds is None else [float(t) for t in seconds]
        if len(values) != len(archs) or len(secs) != len(archs):
            raise ValueError(f"got {len(archs)} architectures, {len(values)} scores and {len(secs)} times")
        col, tcol = self._columns[name], self._seconds[name]
        for a, v, t in zip(archs, values, secs):
            if a not in col:
                col[a], tcol[a] = v, t
                self._order.setdefault(a, None)
                self._aggregate = None

    def missing(self, member: str | Proxy, archs: Sequence[str]) -> list[str]:
        """The distinct ``archs`` that ``member`` has not scored yet, in order."""
        col = self._columns[self._member(member)]
        return [a for a in dict.fromkeys(archs) if a not in col]

    @property
    def archs(self) -> list[str]:
        """Architectures every member has scored, first added first (the set ranked over)."""
        cols = list(self._columns.values())
        return [a for a in self._order if all(a in c for c in cols)]

    def __len__(self) -> int:
        return len(self.archs)

    def __contains__(self, arch: object) -> bool:
        return all(arch in c for c in self._columns.values())

    def column(self, member: str | Proxy, archs: Sequence[str] | None = None) -> list[float]:
        """``member``'s scores of ``archs`` (default: the whole set)."""
        col = self._columns[self._member(member)]
        return [col[a] for a in (self.archs if archs is None else archs)]

    def seconds(self, arch: str) -> float:
        """The time the members took to score ``arch``, summed."""
        return float(sum(t.get(arch, 0.0) for t in self._seconds.values()))

    def aggregate(self, archs: Sequence[str] | None = None) -> list[float]:
        """The aggregate of ``archs`` (default: the whole set, in :attr:`archs` order),
        ranked among every architecture of the set; higher is better for an ensemble."""
        if self._aggregate is None:
            keys = self.archs
            if self.is_aggregate:
                values = self.proxy.aggregate([self.column(n, keys) for n in self.names]) if keys else []
            else:
                values = self.column(self.names[0], keys)
            self._aggregate = dict(zip(keys, (float(v) for v in values)))
        agg = self._aggregate
        if archs is None:
            return list(agg.values())
        lacking = [a for a in archs if a not in agg]
        if lacking:
            raise KeyError(f"{len(lacking)} architecture(s) not scored by every member of "
                           f"{self.label!r} (first: {lacking[0]!r}); score them first")
        return [agg[a] for a in archs]

    def ranked(self) -> list[tuple[str, float]]:
        """``(arch, aggregate)`` of the whole set, best first (ties: added first)."""
        sign = 1.0 if self.higher_is_better else -1.0
        pairs = list(zip(self.archs, self.aggregate()))
        return sorted(pairs, key=lambda p: -sign * p[1] if not math.isnan(p[1]) else math.inf)

    def __repr__(self) -> str:
        return f"SetScores({self.label!r}, {len(self)} architectures)"
