"""Architecture search guided by a zero-cost proxy: ``ghnas.search``.

A search evaluates exactly ``budget`` distinct architectures (distinct under the space's
:meth:`~search_spaces.SearchSpace.hash`) with a proxy and returns a :class:`SearchResult`.
Three strategies decide which architectures to evaluate; the budget means the same
for all of them, the number of distinct architectures scored:

* ``'random'``: draw ``budget`` distinct architectures and rank them by the proxy, scored
  in batched calls (the GHN proxy predicts parameters for many networks per GHN pass).
* ``'evolution'``: regularised (aging) evolution, Real et al. 2019: a population of
  ``population`` architectures; each step picks the best of ``sample_size`` random
  members, mutates it with ``space.mutate`` into a child not seen before, scores the
  child, adds it and removes the *oldest* member.
* ``'tpe'``: Optuna's TPE sampler over the space's integer encoding (one categorical
  per position of ``space.encoding_choices``). A proposal that repeats an architecture
  already scored is told its known score and does not count against the budget; after
  ``max_duplicates`` repeats in a row a random unseen architecture is scored instead.

Network sizes for proxies
-------------------------
Proxies score small versions of the networks, so a search of 100 architectures takes
minutes on a CPU. :data:`PROXY_BUILD_KWARGS` holds the default size per space (NB201:
``C=8, N=1``; DARTS: ``C=8, layers=5``); the GHNs shipped with ghnas are trained at the
same sizes. The build size is chosen in this order: ``build_kwargs`` given by the user;
the sizes the GHN was trained for (a ``<checkpoint>.json`` sidecar with a
``build_kwargs`` key, or the ``config.json`` that ``ghnas meta-train`` writes next to
its checkpoints); :data:`PROXY_BUILD_KWARGS`.

Resuming
--------
With ``out_dir``, every score is appended to ``out_dir/scores.jsonl`` as soon as it is
known (the ``cache`` of :func:`ghnas.proxies.score`), and ``result.json`` plus
``search.png`` are written atomically at the end. The strategies are deterministic for a
given seed, so running the same search again after an interruption replays the
trajectory from the cache and only scores what is missing.

Example::

    >>> import ghnas
    >>> result = ghnas.search('nb201', budget=100, ghn='runs/meta/ghn.pt')   # doctest: +SKIP
    >>> result.best_arch, result.best_score                                   # doctest: +SKIP
    >>> print(result.summary(10))                                              # doctest: +SKIP
    >>> model = result.build(C=16, N=5)    # GHN-initialised, ready to fine-tune  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ghnas._io import atomic_savefig, atomic_write_text

__all__ = [
    "PROXY_BUILD_KWARGS",
    "STRATEGIES",
    "Candidate",
    "SearchResult",
    "search",
    "run_strategy",
    "ghn_build_kwargs",
    "proxy_build_kwargs",
]

#: Default network size per space when a proxy scores architectures (small, so that a
#: CPU scores ~100 architectures in minutes). The GHNs shipped with ghnas
#: (``'ghnas-<space>-cifar10'``) are meta-trained at these sizes.
PROXY_BUILD_KWARGS: dict[str, dict[str, Any]] = {
    "nb201": {"C": 8, "N": 1},
    "darts": {"C": 8, "layers": 5},
}

STRATEGIES: tuple[str, ...] = ("random", "evolution", "tpe")

#: images in the proxy's data batch when ``batch_size`` is not given: the GHN proxy
#: evaluates predicted networks on two batch-norm batches of 100 images; the baselines
#: use the batch size of their reference implementations
DEFAULT_BATCH = {"ghn": 200, "ghn_acc": 200}
DEFAULT_BATCH_OTHER = 64

#: validation images used to measure the networks trained with ``train_top_k``
VAL_IMAGES = 2000

RESULT_FILE = "result.json"
PLOT_FILE = "search.png"
CACHE_FILE = "scores.jsonl"


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One evaluated architecture.

    ``order`` is its position in the evaluation sequence (0 = first scored); ``seconds``
    the time its build and proxy evaluation took (measured when it was first computed,
    also for rows served from the cache, marked ``cached``). ``val_accuracy`` (a fraction)
    and ``train_seconds`` are filled for the architectures trained with ``train_top_k``.
    """

    arch: str
    score: float
    seconds: float
    order: int
    cached: bool = False
    val_accuracy: float | None = None
    val_loss: float | None = None
    train_seconds: float | None = None


@dataclass
class SearchResult:
    """What :func:`search` found. ``table`` is ranked best first (ties: evaluated first).

    ``history[i]`` is the best score after ``i + 1`` evaluations.
    """

    space: str
    strategy: str
    proxy: str
    higher_is_better: bool
    budget: int
    seed: int
    best_arch: str
    best_score: float
    table: list[Candidate]
    history: list[float]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
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
                 f"{len(self.table)} architectures in {self.seconds:.1f}s; best score "
                 f"{_fmt_score(self.best_score)}")
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
        text = json.dumps(_jsonable(self.to_dict()), indent=1) + "\n"
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

        With the GHN proxy and ``pretrained=True`` its parameters are predicted by the
        search's GHN and the model is ready to fine-tune (see :func:`ghnas.warm_start`);
        otherwise it is the plain, randomly initialised model. ``build_kwargs`` override
        the sizes the proxy used (e.g. ``C=16, N=5`` for the full NB201 network).
        """
        import search_spaces

        sp = search_spaces.get(self.space)
        kw = {**self.settings.get("build_kwargs", {}), **build_kwargs}
        model = sp.build(arch or self.best_arch, **kw)
        if pretrained and self.proxy == "ghn":
            from .warm import warm_start

            ghn = self._ghn
            if ghn is None:
                ref = self.settings.get("ghn")
                if not ref or str(ref).startswith("instance:"):
                    raise ValueError("this result was made with an in-memory GHN that is not saved with it; "
                                     "pass pretrained=False, or call ghnas.warm_start(model, ghn) yourself")
                ghn = ref
            model = warm_start(model, ghn)
        return model

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


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if o is None or isinstance(o, (bool, int, float, str)):
        return o
    return str(o)


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        try:
            matplotlib.use("Agg", force=True)
        except Exception:  # a GUI backend already in use: savefig still works
            pass
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------------------
# strategies
# ----------------------------------------------------------------------------------------
Evaluate = Callable[[Sequence[str]], Sequence[float]]


class _Tracker:
    """Wraps the user's evaluate(): de-duplicates by hash and records (arch, score)."""

    def __init__(self, space: Any, evaluate: Evaluate, budget: int, higher_is_better: bool):
        self.space = space
        self.evaluate = evaluate
        self.budget = budget
        self.sign = 1.0 if higher_is_better else -1.0
        self.seen: dict[str, float] = {}  # hash -> score
        self.log: list[tuple[str, float]] = []

    @property
    def left(self) -> int:
        return self.budget - len(self.log)

    def key(self, arch: str) -> str:
        return self.space.hash(arch)

    def __call__(self, archs: Sequence[str]) -> list[float]:
        archs = list(archs)[: self.left]
        keys = [self.key(a) for a in archs]
        if len(set(keys)) != len(keys) or any(k in self.seen for k in keys):
            raise RuntimeError("internal error: a strategy proposed an architecture twice")
        if not archs:
            return []
        values = [float(v) for v in self.evaluate(archs)]
        if len(values) != len(archs):
            raise RuntimeError(f"evaluate returned {len(values)} scores for {len(archs)} architectures")
        for a, k, v in zip(archs, keys, values):
            self.seen[k] = v
            self.log.append((a, v))
        return values

    def better(self, a: float, b: float) -> bool:
        return self.sign * a > self.sign * b


def _pool_list(space: Any, pool: Sequence[str] | None) -> list[str] | None:
    if pool is None:
        return None
    out, keys = [], set()
    for a in pool:
        a = space.validate(a)
        k = space.hash(a)
        if k not in keys:
            keys.add(k)
            out.append(a)
    return out


def _random_unseen(space: Any, tr: _Tracker, rng: np.random.Generator, pool: list[str] | None,
                   patience: int = 10000) -> str:
    if pool is not None:
        left = [a for a in pool if tr.key(a) not in tr.seen]
        if not left:
            raise ValueError("the pool has no unseen architecture left")
        return left[int(rng.integers(len(left)))]
    for _ in range(patience):
        a = space.sample(rng)
        if tr.key(a) not in tr.seen:
            return a
    raise ValueError(f"could not draw an unseen architecture of space {space.name!r} in {patience} "
                     "tries; the budget is probably larger than the space")


def _strategy_random(space, tr: _Tracker, rng, pool, *, chunk: int = 16) -> None:
    if pool is not None:
        if tr.budget > len(pool):
            raise ValueError(f"budget {tr.budget} exceeds the {len(pool)} distinct architectures of the pool")
        archs = [pool[i] for i in rng.permutation(len(pool))[: tr.budget]]
    else:
        archs = space.sample_many(tr.budget, seed=rng, unique=True)
    for start in range(0, len(archs), max(1, int(chunk))):
        tr(archs[start:start + chunk])


def _strategy_evolution(space, tr: _Tracker, rng, pool, *, population: int = 20, sample_size: int = 5,
                        max_retries: int = 100, chunk: int = 16) -> None:
    if population < 1 or sample_size < 1:
        raise ValueError(f"population and sample_size must be >= 1; got {population}, {sample_size}")
    # pool members by hash: a mutation may produce an equivalent spelling of a member,
    # and the member's own string is what gets evaluated
    pool_by_key = None if pool is None else {space.hash(a): a for a in pool}
    pop: deque[tuple[str, float]] = deque()
    # initial population: random distinct architectures, scored in batched calls
    n0 = min(population, tr.budget)
    if pool is not None:
        if tr.budget > len(pool):
            raise ValueError(f"budget {tr.budget} exceeds the {len(pool)} distinct architectures of the pool")
        init = [pool[i] for i in rng.permutation(len(pool))[:n0]]
    else:
        init = space.sample_many(n0, seed=rng, unique=True)
    for start in range(0, n0, max(1, int(chunk))):
        part = init[start:start + chunk]
        pop.extend(zip(part, tr(part)))
    while tr.left > 0:
        child = None
        for _ in range(max_retries):
            idx = rng.choice(len(pop), size=min(sample_size, len(pop)), replace=False)
            parent = pop[int(idx[0])]
            for i in idx[1:]:
                if tr.better(pop[int(i)][1], parent[1]):
                    parent = pop[int(i)]
            if pool_by_key is None:
                cand = space.mutate(parent[0], rng)
                if tr.key(cand) not in tr.seen:
                    child = cand
                    break
            else:
                keys = [tr.key(n) for n in space.neighbours(parent[0])]
                options = sorted({k for k in keys if k in pool_by_key and k not in tr.seen}, key=keys.index)
                if options:
                    child = pool_by_key[options[int(rng.integers(len(options)))]]
                    break
        if child is None:  # the neighbourhood of the population is used up
            child = _random_unseen(space, tr, rng, pool)
        value = tr([child])[0]
        pop.append((child, value))
        if len(pop) > population:
            pop.popleft()  # aging: the oldest member dies, not the worst


def _strategy_tpe(space, tr: _Tracker, rng, pool, *, seed: int = 0, max_duplicates: int = 50,
                  **sampler_kwargs: Any) -> None:
    if pool is not None:
        raise ValueError("strategy 'tpe' does not support a pool; use 'random' or 'evolution'")
    import optuna

    choices = list(space.encoding_choices)
    dists = {f"x{i}": optuna.distributions.CategoricalDistribution(list(range(c)))
             for i, c in enumerate(choices)}
    sampler = optuna.samplers.TPESampler(seed=int(seed), **sampler_kwargs)
    direction = "maximize" if tr.sign > 0 else "minimize"
    big = 1e30  # optuna wants finite values; a degenerate network gets the worst one

    def finite(v: float) -> float:
        if math.isnan(v):
            v = -tr.sign * math.inf
        return max(-big, min(big, v))

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction=direction, sampler=sampler)
        dupes = 0
        while tr.left > 0:
            trial = study.ask(dists)
            arch = space.decode([trial.params[f"x{i}"] for i in range(len(choices))])
            key = tr.key(arch)
            if key in tr.seen:
                study.tell(trial, finite(tr.seen[key]))
                dupes += 1
                if dupes < max_duplicates:
                    continue
                # TPE keeps proposing known architectures: score a random unseen one
                arch = _random_unseen(space, tr, rng, None)
                value = tr([arch])[0]
                vec = space.encode(arch)
                study.add_trial(optuna.trial.create_trial(
                    params={f"x{i}": int(v) for i, v in enumerate(vec)}, distributions=dists,
                    value=finite(value)))
                dupes = 0
                continue
            dupes = 0
            value = tr([arch])[0]
            study.tell(trial, finite(value))
    finally:
        optuna.logging.set_verbosity(old)


_STRATEGY_FUNCS = {"random": _strategy_random, "evolution": _strategy_evolution, "tpe": _strategy_tpe}


def run_strategy(strategy: str, space: Any, budget: int, evaluate: Evaluate, *, seed: int = 0,
                 higher_is_better: bool = True, pool: Sequence[str] | None = None,
                 **strategy_kwargs: Any) -> list[tuple[str, float]]:
    """Run a search strategy against any scoring function; the core of :func:`search`.

    Args:
        strategy: ``'random'``, ``'evolution'`` or ``'tpe'``.
        space: a search space object (or registered name).
        budget: number of distinct architectures (by ``space.hash``) to evaluate.
        evaluate: called with a list of new architecture strings, returns their scores.
        seed: seeds every random choice of the strategy.
        higher_is_better: the direction of the scores.
        pool: restrict the search to these architectures (``'random'`` samples the pool
            without replacement; ``'evolution'`` mutates only into pool members and falls
            back to a random unseen pool member). Used to simulate searches on benchmark
            subsets with known accuracies.
        strategy_kwargs: ``random``: ``chunk`` (architectures per evaluate call, 16);
            ``evolution``: ``population`` (20), ``sample_size`` (5), ``max_retries`` (100),
            ``chunk``; ``tpe``: ``max_duplicates`` (50) and any ``optuna.samplers.TPESampler``
            argument (``n_startup_trials``, ``multivariate``, ...).

    Returns:
        ``(arch, score)`` in evaluation order, exactly ``budget`` of them.

    Example:
        >>> import search_spaces
        >>> sp = search_spaces.get('nb201')
        >>> log = run_strategy('evolution', sp, 30, lambda archs: [a.count('conv') for a in archs])
        >>> len(log), len({sp.hash(a) for a, _ in log})
        (30, 30)
    """
    if strategy not in _STRATEGY_FUNCS:
        raise ValueError(f"unknown search strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"budget must be a positive integer (architectures to evaluate), got {budget!r}")
    if isinstance(space, str):
        import search_spaces

        space = search_spaces.get(space)
    pool_list = _pool_list(space, pool)
    tr = _Tracker(space, evaluate, int(budget), higher_is_better)
    rng = np.random.default_rng(int(seed))
    kwargs = dict(strategy_kwargs)
    if strategy == "tpe":
        kwargs["seed"] = int(seed)
    import inspect

    fn = _STRATEGY_FUNCS[strategy]
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    allowed = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY]
    bad = [k for k in kwargs if k not in allowed and not takes_any]
    if bad:
        raise ValueError(f"unknown option(s) {bad} for strategy {strategy!r}; valid: {', '.join(allowed)}")
    fn(space, tr, rng, pool_list, **kwargs)
    if len(tr.log) != budget:
        raise RuntimeError(f"strategy {strategy!r} evaluated {len(tr.log)} architectures, not {budget}")
    return tr.log


# ----------------------------------------------------------------------------------------
# GHN and sizes
# ----------------------------------------------------------------------------------------
def ghn_build_kwargs(ghn: Any, space: str | None = None) -> dict[str, Any] | None:
    """The ``build_kwargs`` a GHN checkpoint was trained with, if recorded next to it.

    Looks for ``<checkpoint>.json`` with a ``build_kwargs`` key (how shipped GHNs record
    it), then for the ``config.json`` that :func:`ghnas.metatrain.meta_train` writes into
    its run folder (used only when its ``space`` matches ``space``). ``None`` if neither
    exists or ``ghn`` is not a name/path.
    """
    if not isinstance(ghn, (str, os.PathLike)):
        return None
    from .ghn import resolve_ghn

    try:
        path = Path(resolve_ghn(ghn))
    except (FileNotFoundError, IsADirectoryError):
        return None
    except Exception:  # e.g. a download that fails: the loader will report it properly
        return None
    for side, need_space in ((path.with_suffix(".json"), False), (path.parent / "config.json", True)):
        if not side.is_file():
            continue
        try:
            info = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or not isinstance(info.get("build_kwargs"), dict):
            continue
        if need_space and space is not None and info.get("space") not in (None, space):
            continue
        if info.get("archset"):
            continue  # sizes then come from the HDF5 file, not this record
        return dict(info["build_kwargs"])
    return None


def proxy_build_kwargs(space: str, ghn: Any = None) -> dict[str, Any]:
    """Default network size for proxies on ``space`` (see the module docstring)."""
    from_ghn = ghn_build_kwargs(ghn, space) if ghn is not None else None
    if from_ghn:
        return from_ghn
    return dict(PROXY_BUILD_KWARGS.get(space, {}))


def _load_search_ghn(ghn: Any, space_name: str, device):
    """The GHN object for the proxy and a string that names it in the settings."""
    from .proxies.ghn import default_ghn_name
    from .warm import resolve_ghn_arg

    if ghn is None:
        name = default_ghn_name(space_name)
        from .ghn import available_ghns

        if name not in available_ghns():
            raise FileNotFoundError(
                f"no GHN is shipped for space {space_name!r} yet (expected one registered as {name!r}); "
                "pass ghn= a checkpoint path (e.g. the ghn.pt written by `ghnas meta-train`), a "
                "registered name, or a GHN2 instance")
        return resolve_ghn_arg(name, device), name
    if isinstance(ghn, (str, os.PathLike)):
        return resolve_ghn_arg(ghn, device), str(ghn)
    net = resolve_ghn_arg(ghn, device)
    from .proxies.ghn import _state_digest

    return net, "instance:" + _state_digest(net)


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------
def _proxy_images(data: Any, data_root: Any):
    """The images the proxy is scored on: the val split (the sample's test images for 'sample')."""
    if not isinstance(data, str):
        return data
    from . import data as gdata

    if data.strip().lower() == "sample":
        return gdata.load("sample")
    return gdata.load(data, root=data_root, split="val", seed=0)


def _train_val(train_data: Any, data: Any, data_root: Any):
    if isinstance(train_data, (tuple, list)) and len(train_data) == 2:
        return train_data[0], train_data[1]
    src = train_data if train_data is not None else data
    if not isinstance(src, str):
        raise ValueError("train_top_k needs training data: pass train_data as a dataset name "
                         "('cifar10', 'imagefolder:PATH') or a (train, val) pair of ImageData")
    if src.strip().lower() == "sample":
        raise ValueError("train_top_k cannot train on data='sample' (the shipped sample holds only "
                         "CIFAR-10 test images); pass train_data='cifar10' (with data_root) or a "
                         "(train, val) pair of ImageData")
    from . import data as gdata

    tr = gdata.load(src, root=data_root, split="train", seed=0)
    va = gdata.load(src, root=data_root, split="val", seed=0)
    return tr, va.subset(min(VAL_IMAGES, len(va)), seed=0)


@contextlib.contextmanager
def _threads(n: int | None, device) -> Iterator[None]:
    import torch

    if n is None or torch.device(device).type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ----------------------------------------------------------------------------------------
# search()
# ----------------------------------------------------------------------------------------
def search(
    space: Any = "nb201",
    budget: int = 100,
    proxy: Any = "ghn",
    strategy: str = "random",
    data: Any = "sample",
    seed: int = 0,
    train_top_k: int = 0,
    build_kwargs: Mapping[str, Any] | None = None,
    ghn: Any = None,
    device: Any = None,
    progress: bool = True,
    out_dir: str | os.PathLike | None = None,
    *,
    data_root: str | os.PathLike | None = None,
    batch_size: int | None = None,
    proxy_kwargs: Mapping[str, Any] | None = None,
    train_data: Any = None,
    train_kwargs: Mapping[str, Any] | None = None,
    train_build_kwargs: Mapping[str, Any] | None = None,
    pool: Sequence[str] | None = None,
    threads: int | None = 1,
    **strategy_kwargs: Any,
) -> SearchResult:
    """Search a space for the architecture a zero-cost proxy likes best.

    Args:
        space: ``'nb201'``, ``'darts'``, another registered name, or a space object.
        budget: number of distinct architectures to score (the same for every strategy).
        proxy: ``'ghn'`` (GHN-predicted parameters evaluated on held-out images), a
            baseline (``'synflow'``, ``'naswot'``, ``'params'``, ...), an ensemble
            (``'vote:ghn,synflow'``) or a :class:`~ghnas.proxies.Proxy` instance.
        strategy: ``'random'``, ``'evolution'`` or ``'tpe'`` (see the module docstring).
        data: images for data-dependent proxies: ``'sample'`` (the CIFAR-10 sample shipped
            with ghnas, offline), ``'cifar10'`` or ``'imagefolder:PATH'`` (their ``val``
            split is used), an ``ImageData``, or ``(x, y)`` batches.
        seed: seeds the strategy, the proxy's data batch and network initialisations.
        train_top_k: train the ``k`` best architectures briefly (:func:`ghnas.train.train`)
            and report their accuracy on validation images (never the test split).
        build_kwargs: network size for the proxy (default: see the module docstring).
        ghn: the GHN of the ``'ghn'`` proxy: a registered name, a checkpoint path or a
            ``GHN2``; ``None`` uses the GHN shipped for the space (``'ghnas-<space>-cifar10'``).
        device: ``'cpu'``, ``'cuda'``, ...; default CUDA when available.
        progress: show a progress bar.
        out_dir: write ``result.json``, ``search.png`` and the score cache
            ``scores.jsonl`` here; re-running the same search resumes from the cache.
        data_root: ``root`` for :func:`ghnas.data.load`.
        batch_size: images in the proxy's batch (default 200 for ``'ghn'``, 64 otherwise).
        proxy_kwargs: passed to the proxy's constructor (e.g. ``{'metric': 'acc'}``).
        train_data: data for ``train_top_k``: a dataset name (train split for training,
            2,000 val images for measuring) or a ``(train, val)`` pair of ``ImageData``;
            default ``data``.
        train_kwargs: passed to :func:`ghnas.train.train` (default ``steps=100,
            batch_size=64``; give ``epochs`` instead of ``steps`` for longer runs).
        train_build_kwargs: network size for training (default: the proxy's size).
        pool: restrict the search to these architectures (random and evolution only).
        threads: torch CPU threads while scoring on the CPU (default 1: the small proxy
            networks run faster on one thread, especially on a busy machine); ``None``
            keeps torch's setting.
        strategy_kwargs: options of the strategy (see :func:`run_strategy`).

    Returns:
        a :class:`SearchResult`.

    Example:
        >>> import ghnas
        >>> r = ghnas.search('nb201', budget=5, proxy='params', strategy='evolution', progress=False)
        >>> len(r.table), r.best_score == max(c.score for c in r.table)
        (5, True)
        >>> r = ghnas.search('nb201', budget=100, ghn='runs/meta/ghn.pt')    # doctest: +SKIP
    """
    import torch

    import search_spaces
    from . import __version__
    from .proxies import get_proxy, load_batches
    from .proxies import score as score_archs

    t_start = time.perf_counter()
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r}; valid strategies: {', '.join(STRATEGIES)}")
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
        raise ValueError(f"budget must be a positive integer (architectures to evaluate), got {budget!r}")
    if not isinstance(train_top_k, int) or train_top_k < 0:
        raise ValueError(f"train_top_k must be a non-negative integer, got {train_top_k!r}")
    sp = search_spaces.get(space) if isinstance(space, str) else space
    space_name = getattr(sp, "name", type(sp).__name__)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ---- the proxy
    proxy_name = proxy if isinstance(proxy, str) else getattr(proxy, "name", type(proxy).__name__)
    ghn_obj, ghn_ref = None, None
    if isinstance(proxy, str) and proxy.strip() == "ghn":
        ghn_obj, ghn_ref = _load_search_ghn(ghn, space_name, dev)
        from .proxies.ghn import GHNProxy

        prox = GHNProxy(ghn=ghn_obj, **dict(proxy_kwargs or {}))
    else:
        if ghn is not None:
            raise ValueError(f"ghn= is only used by proxy='ghn', not by proxy {proxy_name!r}")
        prox = get_proxy(proxy, **dict(proxy_kwargs or {}))
    proxy_label = prox.name or type(prox).__name__
    if hasattr(prox, "label"):
        proxy_label = prox.label

    # ---- sizes and data
    if build_kwargs is not None:
        kw = dict(build_kwargs)
    elif ghn_ref is not None and not ghn_ref.startswith("instance:"):
        kw = proxy_build_kwargs(space_name, ghn_ref)
    else:
        kw = proxy_build_kwargs(space_name)
    images = _proxy_images(data, data_root) if prox.needs_data else None
    classes = getattr(images, "classes", None)
    if classes is not None and len(classes) != 10 and "num_classes" not in kw:
        kw["num_classes"] = len(classes)
    bs = int(batch_size) if batch_size is not None else DEFAULT_BATCH.get(proxy_name, DEFAULT_BATCH_OTHER)
    batches = load_batches(images, bs, int(seed), dev) if prox.needs_data else None

    # fail before the search, not after it, when train_top_k cannot run
    train_val = _train_val(train_data, data, data_root) if train_top_k else None
    reserved = {"seed", "device", "progress", "eval_data"} & set(train_kwargs or {})
    if reserved:
        raise ValueError(f"train_kwargs may not set {sorted(reserved)}; search() sets them")

    out = Path(out_dir) if out_dir is not None else None
    cache = out / CACHE_FILE if out is not None else None

    from tqdm.auto import tqdm

    bar = tqdm(total=int(budget), desc=f"search {space_name} ({strategy}, {proxy_label})",
               disable=not progress, dynamic_ncols=True)
    rows: list[Candidate] = []
    best = [None]  # best score so far
    history: list[float] = []
    sign = 1.0 if prox.higher_is_better else -1.0
    table_settings: dict[str, Any] = {}

    def evaluate(archs: Sequence[str]) -> list[float]:
        table = score_archs(list(archs), sp, prox, batches, int(seed), bs, kw, False, cache=cache, device=dev)
        table_settings.update(table.settings)
        for r in table.rows:
            rows.append(Candidate(arch=sp.validate(r.arch), score=float(r.score), seconds=float(r.seconds),
                                  order=len(rows), cached=bool(r.cached)))
            if best[0] is None or sign * r.score > sign * best[0]:
                best[0] = float(r.score)
            history.append(float(best[0]))
        bar.update(len(table.rows))
        bar.set_postfix(best=_fmt_score(best[0]))
        return table.scores

    try:
        with _threads(threads, dev):
            run_strategy(strategy, sp, int(budget), evaluate, seed=int(seed),
                         higher_is_better=prox.higher_is_better, pool=pool, **strategy_kwargs)
    finally:
        bar.close()

    ranked = sorted(rows, key=lambda c: (-sign * c.score if not math.isnan(c.score) else math.inf, c.order))
    tk = dict(train_kwargs or {"steps": 100, "batch_size": 64})
    tbk = dict(train_build_kwargs) if train_build_kwargs is not None else dict(kw)
    if train_top_k:
        _train_top(ranked[:train_top_k], sp, train_val, tbk, tk, int(seed), dev, progress)

    settings = dict(
        space=space_name, strategy=strategy, proxy=proxy_label, proxy_settings=table_settings.get("proxy"),
        budget=int(budget), seed=int(seed),
        data=data if isinstance(data, str) else getattr(data, "source", type(data).__name__),
        data_root=None if data_root is None else str(data_root),
        batch_size=bs if prox.needs_data else None, build_kwargs=kw, ghn=ghn_ref,
        device=str(dev), threads=threads, strategy_kwargs=dict(strategy_kwargs),
        pool=None if pool is None else len(pool),
        train_top_k=train_top_k, train_kwargs=tk if train_top_k else None,
        train_build_kwargs=tbk if train_top_k else None,
        ghnas=__version__, torch=torch.__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    result = SearchResult(
        space=space_name, strategy=strategy, proxy=proxy_label, higher_is_better=prox.higher_is_better,
        budget=int(budget), seed=int(seed), best_arch=ranked[0].arch, best_score=ranked[0].score,
        table=ranked, history=history, settings=_jsonable(settings),
        seconds=time.perf_counter() - t_start, _ghn=ghn_obj)
    if out is not None:
        result.to_json(out / RESULT_FILE)
        result.plot(out / PLOT_FILE)
    return result


def _train_top(cands: Sequence[Candidate], sp: Any, data: tuple[Any, Any], build_kwargs: dict[str, Any],
               train_kwargs: dict[str, Any], seed: int, device, progress: bool) -> None:
    """Train each candidate from a seeded random init; record its validation accuracy."""
    import torch

    from .proxies import arch_seed
    from .train import evaluate, train

    train_data, val_data = data
    if "steps" not in train_kwargs and "epochs" not in train_kwargs:
        train_kwargs = {**train_kwargs, "steps": 100}
    if device.type != "cpu":
        train_data, val_data = train_data.to(device), val_data.to(device)
    from tqdm.auto import tqdm

    for c in tqdm(cands, desc="train top-k", disable=not progress, leave=False):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(arch_seed(seed, sp.hash(c.arch)))
            model = sp.build(c.arch, **build_kwargs)
        model = model.to(device)
        t0 = time.perf_counter()
        train(model, train_data, seed=seed, device=device, progress=False, **train_kwargs)
        ev = evaluate(model, val_data, device=device)
        c.val_accuracy, c.val_loss = float(ev.accuracy), float(ev.loss)
        c.train_seconds = time.perf_counter() - t0


# ``ghnas.search`` names both this module and the function above. Importing the module
# (``from ghnas.search import SearchResult``) makes the package attribute ``ghnas.search``
# the module, so the module is made callable: ``ghnas.search(...)`` then still runs a search.
class _CallableModule(type(contextlib)):
    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return search(*args, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
