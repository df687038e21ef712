"""Rank aggregation of several proxies ("voting"), e.g. ``'vote:synflow,naswot,params'``.

Proxies live on incomparable scales (a log-flow, a log-determinant, a parameter count),
so an ensemble combines *ranks*, not values: each member's scores are ranked over the
scored architectures (ties share their average rank, degenerate networks rank last),
and the ensemble score is

* ``method='mean'`` (default): the mean over members of the normalised rank
  ``(rank - 1) / (n - 1)`` in [0, 1], 1 for the member's best architecture;
* ``method='borda'``: the Borda count, the sum over members of the number of
  architectures each member places below this one (ties count one half).

Both give the same order; they differ only in scale. Because ranks depend on the whole
set, an ensemble scores sets of architectures (:meth:`Ensemble.score_archs`, or
:func:`ghnas.proxies.score`), not single networks. Example::

    >>> rank_aggregate([[1.0, 3.0, 2.0], [30.0, 10.0, 20.0]], [True, True])
    [0.5, 0.5, 0.5]
    >>> rank_aggregate([[1.0, 3.0, 2.0], [10.0, 30.0, 20.0]], [True, True], method='borda')
    [0.0, 4.0, 2.0]
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from scipy.stats import rankdata

from .base import Batch, Proxy, ResultCallback, get_proxy, register_proxy

__all__ = ["Ensemble", "rank_aggregate", "METHODS"]

METHODS = ("mean", "borda")


def rank_aggregate(columns: Sequence[Sequence[float]], higher_is_better: Sequence[bool],
                   method: str = "mean") -> list[float]:
    """Combine score columns (one per proxy, aligned by architecture) into one score.

    Higher result = better architecture. NaN counts as the worst score of its column.
    """
    if method not in METHODS:
        raise ValueError(f"unknown aggregation method {method!r}; valid methods: {', '.join(METHODS)}")
    if len(columns) != len(higher_is_better):
        raise ValueError(f"got {len(columns)} score columns but {len(higher_is_better)} directions")
    if not columns:
        raise ValueError("rank aggregation needs at least one score column")
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError(f"score columns differ in length: {[len(c) for c in columns]}")
    if n == 0:
        return []
    total = np.zeros(n)
    for col, hib in zip(columns, higher_is_better):
        v = np.asarray(col, dtype=float)
        v = v if hib else -v
        v = np.where(np.isnan(v), -np.inf, v)  # degenerate -> worst
        ranks = rankdata(v, method="average") - 1.0  # 0 = worst; = number beaten (ties: half)
        total += ranks / (n - 1) if (method == "mean" and n > 1) else ranks
    if method == "mean":
        total = total / len(columns) if n > 1 else np.full(n, 0.5)
    return [float(t) for t in total]


@register_proxy("vote")
class Ensemble(Proxy):
    """Rank-aggregation of member proxies; build it as ``get_proxy('vote:a,b')``,
    ``get_proxy('a+b')`` or ``Ensemble(['a', 'b'])``."""

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

    @property
    def label(self) -> str:
        return "vote:" + ",".join(m.name or type(m).__name__ for m in self._members)

    @property
    def needs_data(self) -> bool:  # type: ignore[override]
        return any(m.needs_data for m in self._members)

    @property
    def default_batch_size(self) -> int:  # type: ignore[override]
        # one batch feeds every member: the largest default, so a GHN member sees the
        # batch it gets alone (and shares its cached scores)
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
        columns = [m.score_archs(archs, space, batches, build_kwargs, seed=seed, device=device)
                   for m in self._members]
        values = self.aggregate(columns)
        if callback is not None:
            for i, v in enumerate(values):
                callback(i, v, math.nan)
        return values
