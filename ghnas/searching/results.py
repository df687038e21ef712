"""What a search returns: :class:`SearchResult`, a table of :class:`Candidate` rows."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .._io import atomic_savefig, atomic_write_text
from .._util import jsonable

__all__ = ["Candidate", "SearchResult"]


@dataclass
class Candidate:
    """One evaluated architecture.

    ``order`` is its position in the evaluation sequence (0 = first scored); ``seconds``
    the time its build and proxy evaluation took (measured when it was first computed,
    also for rows served from the cache, marked ``cached``). ``val_accuracy`` (a fraction)
    and ``train_seconds`` are filled for the architectures trained with ``train_top_k``.
    With an aggregate proxy (``'params+flops'``, ``'az_nas'``, ...) ``score`` is the
    architecture's aggregate rank over the whole set the search scored, and ``members``
    holds each member proxy's own score.
    """

    arch: str
    score: float
    seconds: float
    order: int
    cached: bool = False
    val_accuracy: float | None = None
    val_loss: float | None = None
    train_seconds: float | None = None
    members: dict[str, float] | None = None


@dataclass
class SearchResult:
    """What :func:`search` found. ``table`` is ranked best first (ties: evaluated first).

    ``history[i]`` is the best score after ``i + 1`` evaluations (for an aggregate proxy,
    of the final whole-set aggregates, so the curve and the table share one scale). When the proxy ranked
    nothing (every score equal, or none finite), ``degenerate`` says so, and
    ``best_arch`` is ``None`` and ``best_score`` NaN: no candidate is crowned.
    """

    space: str
    strategy: str
    proxy: str
    higher_is_better: bool
    budget: int
    seed: int
    best_arch: str | None
    best_score: float
    table: list[Candidate]
    history: list[float]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    degenerate: str | None = None
    # the GHN used by the proxy, kept in memory for build(); not serialised
    _ghn: Any = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ views
    def top(self, k: int = 10) -> list[Candidate]:
        """The ``k`` best candidates by proxy score."""
        return self.table[:k]

    @property
    def trained(self) -> list[Candidate]:
        """Candidates trained with ``train_top_k``, best validation accuracy first."""
        done = [c for c in self.table if c.val_accuracy is not None]
        return sorted(done, key=lambda c: (-c.val_accuracy, c.order))

    @property
    def best_trained(self) -> Candidate | None:
        """The trained candidate with the highest validation accuracy (None if none trained)."""
        t = self.trained
        return t[0] if t else None

    def by_order(self) -> list[Candidate]:
        """Candidates in the order they were evaluated."""
        return sorted(self.table, key=lambda c: c.order)

    def summary(self, k: int = 10) -> str:
        """A plain-text table of the ``k`` best architectures."""
        trained = any(c.val_accuracy is not None for c in self.table)
        head = ["rank", "score", "seconds", "order"] + (["val_acc"] if trained else []) + ["arch"]
        rows = []
        for i, c in enumerate(self.top(k), 1):
            row = [str(i), _fmt_score(c.score), f"{c.seconds:.2f}", str(c.order)]
            if trained:
                row.append("" if c.val_accuracy is None else f"{100 * c.val_accuracy:.2f}")
            rows.append(row + [c.arch])
        widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h)
                  for j, h in enumerate(head[:-1])]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head[:-1], widths)) + "  " + head[-1]]
        for r in rows:
            lines.append("  ".join(v.rjust(w) for v, w in zip(r[:-1], widths)) + "  " + r[-1])
        title = (f"{self.strategy} search over {self.space} with proxy {self.proxy}: "
                 f"{len(self.table)} architectures in {self.seconds:.1f}s; "
                 + (f"no best architecture: {self.degenerate}" if self.degenerate
                    else f"best score {_fmt_score(self.best_score)}"))
        if self.best_trained is not None:
            bt = self.best_trained
            title += f"; best after training: {100 * bt.val_accuracy:.2f}% val (rank {self.table.index(bt) + 1})"
        return title + "\n" + "\n".join(lines)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.name.startswith("_")}
        d["table"] = [dataclasses.asdict(c) for c in self.table]
        return d

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text (``-Infinity`` for degenerate networks); written atomically to ``path``."""
        text = json.dumps(jsonable(self.to_dict()), indent=1) + "\n"
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchResult":
        d = dict(d)
        d["table"] = [Candidate(**c) for c in d["table"]]
        names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown SearchResult fields {sorted(unknown)}; valid: {sorted(names)}")
        return cls(**d)

    @classmethod
    def read_json(cls, path: str | os.PathLike) -> "SearchResult":
        return cls.from_dict(json.loads(Path(path).read_text()))

    # ------------------------------------------------------------------ models
    def build(self, arch: str | None = None, pretrained: bool = True, **build_kwargs: Any):
        """Build the best architecture (or ``arch``) as an ``nn.Module``.

        With ``pretrained=True`` the parameters are predicted by the search's GHN (when the
        proxy predicted with one: ``'ghn'``, ``'ghn_acc'``, or an ensemble with one of
        them; a GHN registered for ranking is replaced by the space's predicting GHN) or
        else by the GHN shipped for the space, and the model is ready to fine-tune
        (see :func:`ghnas.warm_start`); ``pretrained=False`` gives the plain, randomly
        initialised model.
        ``build_kwargs`` override the sizes the proxy used (e.g. ``C=16, N=5`` for the
        full NB201 network).
        """
        import search_spaces

        from ..errors import InputError

        if arch is None and self.best_arch is None:
            raise InputError(f"this search has no best architecture ({self.degenerate}); pass arch=")
        sp = search_spaces.get(self.space)
        kw = {**self.settings.get("build_kwargs", {}), **build_kwargs}
        model = sp.build(arch or self.best_arch, **kw)
        if not pretrained:
            return model
        from ..ghn.hub import ghn_entry
        from ..ghn.ref import GHNRef
        from ..warm import warm_start

        ghn, name = self._ghn, self.settings.get("ghn")
        entry = ghn_entry(name) if isinstance(name, str) else None
        if (ghn is None and name is None) or (entry is not None and entry.purpose == "rank"):
            # a proxy without a GHN (e.g. the default 'zero-shot'), or a GHN chosen for
            # ranking rather than for accurate parameters: the space's predicting GHN
            ghn = GHNRef.default(self.space).load("cpu")
        elif ghn is None:
            if not self.settings.get("ghn_saved", False):
                raise InputError("this result was made with an in-memory GHN that is not saved with it; "
                                 "pass pretrained=False, or call ghnas.warm_start(model, ghn) yourself")
            ghn = name
        return warm_start(model, ghn)

    # ------------------------------------------------------------------ plots
    def plot(self, path: str | os.PathLike) -> Path:
        """Score of every evaluation and the best-so-far curve, saved as a PNG (atomically)."""
        plt = _pyplot()
        cands = self.by_order()
        x = np.arange(1, len(cands) + 1)
        y = np.array([c.score for c in cands], dtype=float)
        ok = np.isfinite(y)
        best = np.array(self.history, dtype=float)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        try:
            ax.scatter(x[ok], y[ok], s=12, alpha=0.55, label="score of each architecture")
            okb = np.isfinite(best)
            ax.step(np.arange(1, len(best) + 1)[okb], best[okb], where="post", color="C3", lw=2,
                    label="best so far")
            if (~ok).any():
                ax.set_title(f"{self.strategy} search, {self.space}, proxy {self.proxy} "
                             f"({int((~ok).sum())} degenerate not drawn)", fontsize=10)
            else:
                ax.set_title(f"{self.strategy} search, {self.space}, proxy {self.proxy}", fontsize=10)
            if self.degenerate:
                ax.set_title(f"{ax.get_title()}\nno best: {self.degenerate}", fontsize=9)
            ax.set_xlabel("evaluations")
            ax.set_ylabel(f"proxy score ({'higher' if self.higher_is_better else 'lower'} is better)")
            ax.grid(True, alpha=0.3)
            ax.legend(loc="best", fontsize=9)
            fig.tight_layout()
            return atomic_savefig(fig, Path(path))
        finally:
            plt.close(fig)


def _fmt_score(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.6g}"


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        try:
            matplotlib.use("Agg", force=True)
        except Exception:  # a GUI backend already in use: savefig still works
            pass
    import matplotlib.pyplot as plt

    return plt
