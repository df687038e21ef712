"""Search strategies: which architectures to score next.

A strategy is a small class behind one base, :class:`Strategy` (the model is Optuna's
``BaseSampler``): its constructor takes the strategy's options, :meth:`Strategy.run`
proposes architectures to a :class:`SearchState` until the budget is spent. The budget
means the same for every strategy: the number of distinct architectures (under the
space's :meth:`~search_spaces.SearchSpace.hash`) scored.

* :class:`RandomSearch` (``'random'``): draw ``budget`` distinct architectures and score
  them in batched calls (the GHN proxy predicts many networks per GHN pass); they are
  ranked as one set at the end.
* :class:`RegularizedEvolution` (``'evolution'``): aging evolution, Real et al. 2019: a
  population of ``population`` architectures; each step picks the best of
  ``sample_size`` random members, mutates it into a child not seen before, scores the
  child, adds it and removes the *oldest* member.
* :class:`TPESearch` (``'tpe'``): Optuna's TPE sampler over the space's integer encoding,
  one categorical parameter ``arch_{i}`` (zero-padded) per position of ``space.encoding_choices`` (the
  names :func:`ghnas.integrations.optuna.suggest_architecture` uses). A proposal that
  repeats a scored architecture is told its known score and does not count; after
  ``max_duplicates`` repeats in a row a random unseen architecture is scored instead.

Set-level aggregates. With an aggregate proxy (``'params+flops'``, ``'vote:...'``,
``'az_nas'``) the score of an architecture is its rank among *everything scored so far*
(:class:`~ghnas.proxies.ensemble.SetScores`), so it changes as the search goes on. The
scoring side then also gives :class:`SearchState` a ``current`` function, and the
strategies compare by the current values (:meth:`SearchState.scores`): evolution's
tournaments rank the sampled members by their aggregate among all scored architectures
at that moment, and TPE's study is rebuilt with the current values before a proposal whenever
they change which trials TPE counts as the good ones (all it reads of the values). :func:`ghnas.search` re-ranks the final table over the
whole set.

A new strategy subclasses :class:`Strategy` and registers itself::

    >>> import search_spaces
    >>> from ghnas.searching import Strategy, register_strategy, run_strategy
    >>> @register_strategy("first_k", overwrite=True)
    ... class FirstK(Strategy):
    ...     def run(self, state):
    ...         state.evaluate(state.space.sample_many(state.left, seed=state.rng, unique=True))
    >>> len(run_strategy("first_k", "nb201", 4, lambda archs: [0.0] * len(archs)))
    4
"""
from __future__ import annotations

import abc
import inspect
import math
from collections import deque
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ..errors import InputError

__all__ = ["Strategy", "SearchState", "RandomSearch", "RegularizedEvolution", "TPESearch",
           "register_strategy", "get_strategy", "available_strategies", "run_strategy",
           "distinct_count", "architecture_param_names", "STRATEGIES"]

Evaluate = Callable[[Sequence[str]], Sequence[float]]
#: the scores *now* of architectures already evaluated (set-level aggregates change)
Current = Callable[[Sequence[str]], Sequence[float]]


# --------------------------------------------------------------------------- state
class SearchState:
    """What a strategy sees: the space, the budget left, a seeded ``rng``, the optional
    ``pool`` of allowed architectures, and the scores so far. Strategies propose
    architectures only through :meth:`evaluate`, which de-duplicates by hash, and compare
    evaluated architectures by :meth:`scores` (their values now: with a set-level
    aggregate, ``current`` re-ranks them among everything scored so far; without it a
    score never changes)."""

    def __init__(self, space: Any, evaluate: Evaluate, budget: int, higher_is_better: bool,
                 seed: int = 0, pool: list[str] | None = None, current: Current | None = None):
        self.space = space
        self._evaluate = evaluate
        self._current = current
        self.budget = int(budget)
        self.sign = 1.0 if higher_is_better else -1.0
        self.seed = int(seed)
        self.rng = np.random.default_rng(int(seed))
        self.pool = pool
        self.seen: dict[str, float] = {}  # hash -> score when it was evaluated
        self.log: list[tuple[str, float]] = []
        self._by_key: dict[str, str] = {}  # hash -> the string that was evaluated

    @property
    def dynamic(self) -> bool:
        """Whether scores change as more architectures are scored (a set-level aggregate)."""
        return self._current is not None

    def scores(self, archs: Sequence[str]) -> list[float]:
        """The scores now of evaluated architectures (any spelling of the same hash)."""
        evaluated = []
        for a in archs:
            k = self.key(a)
            if k not in self._by_key:
                raise RuntimeError(f"internal error: {a!r} has not been evaluated")
            evaluated.append(self._by_key[k])
        if self._current is None:
            return [self.seen[self.key(a)] for a in evaluated]
        values = [float(v) for v in self._current(evaluated)]
        if len(values) != len(evaluated):
            raise RuntimeError(f"current returned {len(values)} scores for {len(evaluated)} architectures")
        return values

    def final_log(self) -> list[tuple[str, float]]:
        """``(arch, score)`` in evaluation order, with the scores as they are now."""
        archs = [a for a, _ in self.log]
        return list(zip(archs, self.scores(archs))) if self.dynamic else list(self.log)

    @property
    def left(self) -> int:
        """Architectures still to score."""
        return self.budget - len(self.log)

    def key(self, arch: str) -> str:
        return self.space.hash(arch)

    def evaluate(self, archs: Sequence[str]) -> list[float]:
        """Score new architectures (at most :attr:`left` of them are taken)."""
        archs = list(archs)[: self.left]
        keys = [self.key(a) for a in archs]
        if len(set(keys)) != len(keys) or any(k in self.seen for k in keys):
            raise RuntimeError("internal error: a strategy proposed an architecture twice")
        if not archs:
            return []
        values = [float(v) for v in self._evaluate(archs)]
        if len(values) != len(archs):
            raise RuntimeError(f"evaluate returned {len(values)} scores for {len(archs)} architectures")
        for a, k, v in zip(archs, keys, values):
            self.seen[k] = v
            self._by_key[k] = a
            self.log.append((a, v))
        return values

    __call__ = evaluate

    def better(self, a: float, b: float) -> bool:
        return self.sign * a > self.sign * b

    def sample_distinct(self, n: int) -> list[str]:
        """``n`` random architectures, distinct and unseen (from the pool when there is one)."""
        if self.pool is not None:
            left = [a for a in self.pool if self.key(a) not in self.seen]
            return [left[i] for i in self.rng.permutation(len(left))[:n]]
        if not self.seen:
            return self.space.sample_many(n, seed=self.rng, unique=True)
        return [self.random_unseen() for _ in range(n)]

    def random_unseen(self, patience: int = 10000) -> str:
        """One random architecture not scored yet (budgets are checked up front, so one exists)."""
        if self.pool is not None:
            left = [a for a in self.pool if self.key(a) not in self.seen]
            if not left:
                raise RuntimeError("internal error: the pool has no unseen architecture left")
            return left[int(self.rng.integers(len(left)))]
        for _ in range(patience):
            a = self.space.sample(self.rng)
            if self.key(a) not in self.seen:
                return a
        # near the end of a small space random draws rarely hit the few unseen classes
        try:
            left = {}
            for a in self.space.enumerate():
                k = self.key(a)
                if k not in self.seen and k not in left:
                    left[k] = a
        except NotImplementedError:
            left = {}
        if not left:
            raise InputError(f"could not find an unseen architecture of space {self.space.name!r}; "
                             "the budget is probably larger than the space")
        options = list(left.values())
        return options[int(self.rng.integers(len(options)))]


# --------------------------------------------------------------------------- budget
_COUNTS: dict[tuple[type, str], int | None] = {}


def distinct_count(space: Any) -> int | None:
    """The number of distinct architectures (by ``space.hash``) of a finite space, or
    ``None`` when the space cannot be enumerated (it is then far larger than any budget).
    Counted once per process (NB201: 8,765 classes of its 15,625 cells, in about 1 s)."""
    key = (type(space), str(getattr(space, "name", "")))
    if key not in _COUNTS:
        try:
            _COUNTS[key] = len({space.hash(a) for a in space.enumerate()})
        except NotImplementedError:
            _COUNTS[key] = None
    return _COUNTS[key]


# --------------------------------------------------------------------------- base
class Strategy(abc.ABC):
    """Base class of search strategies. Subclasses take their options as constructor
    arguments and implement :meth:`run`; the registry name is set by
    :func:`register_strategy`."""

    name: ClassVar[str] = ""
    #: whether the strategy can be restricted to a pool of architectures
    supports_pool: ClassVar[bool] = True

    def check(self, space: Any, budget: int, pool: Sequence[str] | None) -> None:
        """Refuse, before anything is scored, a budget the strategy cannot spend: more
        than the distinct architectures of the pool or of the space."""
        if pool is not None and not self.supports_pool:
            raise InputError(f"strategy {self.name!r} does not support a pool; use 'random' or 'evolution'")
        available = len(pool) if pool is not None else distinct_count(space)
        where = "the pool" if pool is not None else f"space {getattr(space, 'name', space)!r}"
        if available is not None and budget > available:
            raise InputError(f"budget {budget} exceeds the {available} distinct architectures of {where} "
                             f"(distinct under space.hash); ask for at most {available}")

    @abc.abstractmethod
    def run(self, state: SearchState) -> None:
        """Score architectures through ``state.evaluate`` until ``state.left == 0``."""

    def options(self) -> dict[str, Any]:
        """The strategy's options (its public attributes), recorded in search settings."""
        return {k: v for k, v in sorted(vars(self).items()) if not k.startswith("_")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options().items())})"


_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(name: str, cls: type[Strategy] | None = None, *, overwrite: bool = False):
    """Register a :class:`Strategy` subclass under ``name``; usable as a decorator."""
    def _register(c: type[Strategy]) -> type[Strategy]:
        if not (isinstance(c, type) and issubclass(c, Strategy)):
            raise TypeError(f"register_strategy needs a Strategy subclass, got {c!r}")
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not c:
            raise ValueError(f"strategy {name!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[name] = c
        if not c.__dict__.get("name"):
            c.name = name
        return c

    return _register if cls is None else _register(cls)


def available_strategies() -> list[str]:
    """Registered strategy names."""
    return list(_REGISTRY)


def get_strategy(strategy: str | Strategy, **options: Any) -> Strategy:
    """A strategy instance from a registered name and its options (or an instance as is)."""
    if isinstance(strategy, Strategy):
        if options:
            raise InputError(f"options {sorted(options)} are only accepted with a strategy name")
        return strategy
    if strategy not in _REGISTRY:
        raise InputError(f"unknown search strategy {strategy!r}; valid strategies: {', '.join(_REGISTRY)}")
    cls = _REGISTRY[strategy]
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        allowed = [n for n, p in params.items() if n != "self"]
        bad = sorted(k for k in options if k not in allowed)
        if bad:
            raise InputError(f"unknown option(s) {bad} for strategy {strategy!r}; valid: {', '.join(allowed)}")
    return cls(**options)


# --------------------------------------------------------------------------- strategies
def _positive(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


@register_strategy("random")
class RandomSearch(Strategy):
    """Uniform sample of distinct architectures, scored ``chunk`` per call."""

    def __init__(self, chunk: int = 16):
        self.chunk = _positive("chunk", chunk)

    def run(self, state: SearchState) -> None:
        archs = state.sample_distinct(state.left)
        for start in range(0, len(archs), self.chunk):
            state.evaluate(archs[start:start + self.chunk])


@register_strategy("evolution")
class RegularizedEvolution(Strategy):
    """Aging evolution (Real et al. 2019); see the module docstring."""

    def __init__(self, population: int = 20, sample_size: int = 5, max_retries: int = 100, chunk: int = 16):
        self.population = _positive("population", population)
        self.sample_size = _positive("sample_size", sample_size)
        self.max_retries = _positive("max_retries", max_retries)
        self.chunk = _positive("chunk", chunk)

    def run(self, state: SearchState) -> None:
        pop: deque[str] = deque()
        init = state.sample_distinct(min(self.population, state.left))
        for start in range(0, len(init), self.chunk):  # the initial population, batched
            part = init[start:start + self.chunk]
            state.evaluate(part)
            pop.extend(part)
        # pool members by hash: a mutation may spell a member differently, and the
        # member's own string is what gets evaluated
        pool_by_key = None if state.pool is None else {state.key(a): a for a in state.pool}
        while state.left > 0:
            child = self._child(state, pop, pool_by_key)
            state.evaluate([child])
            pop.append(child)
            if len(pop) > self.population:
                pop.popleft()  # aging: the oldest member dies, not the worst

    def _child(self, state: SearchState, pop: deque, pool_by_key: dict[str, str] | None) -> str:
        for _ in range(self.max_retries):
            idx = state.rng.choice(len(pop), size=min(self.sample_size, len(pop)), replace=False)
            # the tournament compares scores as they are now (an aggregate's rank among all scored)
            members = [pop[int(i)] for i in idx]
            values = state.scores(members)
            parent, best = members[0], values[0]
            for m, v in zip(members[1:], values[1:]):
                if state.better(v, best):
                    parent, best = m, v
            if pool_by_key is None:
                cand = state.space.mutate(parent, state.rng)
                if state.key(cand) not in state.seen:
                    return cand
            else:
                keys = [state.key(n) for n in state.space.neighbours(parent)]
                options = sorted({k for k in keys if k in pool_by_key and k not in state.seen}, key=keys.index)
                if options:
                    return pool_by_key[options[int(state.rng.integers(len(options)))]]
        return state.random_unseen()  # the population's neighbourhood is used up


def architecture_param_names(space: Any, name: str = "arch") -> list[str]:
    """Parameter names of a space's encoding positions, ``f'{name}_{i}'`` zero-padded
    (``arch_0`` ... ``arch_5`` for NB201): the names of TPE's parameters and of
    :func:`ghnas.integrations.optuna.suggest_architecture`."""
    n = len(space.encoding_choices)
    width = len(str(n - 1))
    return [f"{name}_{i:0{width}d}" for i in range(n)]


@register_strategy("tpe")
class TPESearch(Strategy):
    """Optuna's TPE over the space's encoding; ``sampler_kwargs`` go to ``TPESampler``
    (``n_startup_trials``, ``multivariate``, ...)."""

    supports_pool = False

    def __init__(self, max_duplicates: int = 50, **sampler_kwargs: Any):
        self.max_duplicates = _positive("max_duplicates", max_duplicates)
        self.sampler_kwargs = dict(sampler_kwargs)

    def run(self, state: SearchState) -> None:
        import optuna

        names = architecture_param_names(state.space)
        dists = {p: optuna.distributions.CategoricalDistribution(list(range(int(c))))
                 for p, c in zip(names, state.space.encoding_choices)}
        try:
            sampler = optuna.samplers.TPESampler(seed=state.seed, **self.sampler_kwargs)
        except TypeError as e:
            raise InputError(f"bad option for strategy 'tpe' (optuna.samplers.TPESampler): {e}") from None
        big = 1e30  # optuna wants finite values; a degenerate network gets the worst one

        def finite(v: float) -> float:
            if math.isnan(v):
                v = -state.sign * math.inf
            return max(-big, min(big, v))

        direction = "maximize" if state.sign > 0 else "minimize"
        told: list[tuple[dict[str, int], str]] = []  # every trial: its params and architecture
        told_values: list[float] = []

        def refresh(study):
            """With a set-level aggregate, the study again with every trial's value now."""
            if not state.dynamic or not told:
                return study
            values = [finite(v) for v in state.scores([a for _, a in told])]
            if _same_proposals(values, told_values, state.sign, sampler):
                return study
            fresh = optuna.create_study(direction=direction, sampler=sampler)
            fresh.add_trials([optuna.trial.create_trial(params=p, distributions=dists, value=v)
                              for (p, _), v in zip(told, values)])
            told_values[:] = values
            return fresh

        def tell(study, trial, arch: str, value: float) -> None:
            study.tell(trial, finite(value))
            told.append((dict(trial.params), arch))
            told_values.append(finite(value))

        old = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.create_study(direction=direction, sampler=sampler)
            dupes = 0
            while state.left > 0:
                study = refresh(study)
                trial = study.ask(dists)
                arch = state.space.decode([trial.params[p] for p in names])
                key = state.key(arch)
                if key not in state.seen:
                    dupes = 0
                    tell(study, trial, arch, state.evaluate([arch])[0])
                    continue
                tell(study, trial, arch, state.scores([arch])[0])
                dupes += 1
                if dupes < self.max_duplicates:
                    continue
                # TPE keeps proposing known architectures: score a random unseen one
                arch = state.random_unseen()
                value = state.evaluate([arch])[0]
                params = {p: int(v) for p, v in zip(names, state.space.encode(arch))}
                study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                          value=finite(value)))
                told.append((params, arch))
                told_values.append(finite(value))
                dupes = 0
        finally:
            optuna.logging.set_verbosity(old)


def _order(values: Sequence[float], sign: float) -> list[int]:
    """Trial positions best first, ties in trial order (how TPE sorts them)."""
    return sorted(range(len(values)), key=lambda i: -sign * values[i])


def _same_proposals(a: Sequence[float], b: Sequence[float], sign: float, sampler: Any) -> bool:
    """Whether TPE proposes the same after trial values ``a`` as after ``b``.

    Single-objective TPE sorts the trials by value (stably) and keeps only which
    ``gamma(n)`` of them are the good ones (each group is then re-sorted by trial
    number), so the same top set gives the same proposals. Without a readable ``gamma``:
    the same order.
    """
    gamma = getattr(sampler, "_gamma", None)
    if not callable(gamma):
        return _order(a, sign) == _order(b, sign)
    k = int(gamma(len(a)))
    return set(_order(a, sign)[:k]) == set(_order(b, sign)[:k])


#: the built-in strategies
STRATEGIES: tuple[str, ...] = ("random", "evolution", "tpe")


# --------------------------------------------------------------------------- driver
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


def check_budget(budget: Any) -> int:
    """``budget`` as an int; ``InputError`` unless it is a positive integer."""
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 1:
        raise InputError(f"budget must be a positive integer (architectures to evaluate), got {budget!r}")
    return int(budget)


def run_strategy(strategy: str | Strategy, space: Any, budget: int, evaluate: Evaluate, *, seed: int = 0,
                 higher_is_better: bool = True, pool: Sequence[str] | None = None,
                 current: Current | None = None, **strategy_kwargs: Any) -> list[tuple[str, float]]:
    """Run a search strategy against any scoring function; the core of :func:`ghnas.search`.

    Args:
        strategy: a registered name (``'random'``, ``'evolution'``, ``'tpe'``) or a
            :class:`Strategy` instance.
        space: a search space object (or registered name).
        budget: number of distinct architectures (by ``space.hash``) to evaluate; checked
            up front against the distinct architectures of the space or pool.
        evaluate: called with a list of new architecture strings, returns their scores.
        seed: seeds every random choice of the strategy.
        higher_is_better: the direction of the scores.
        pool: restrict the search to these architectures (``'random'`` samples the pool
            without replacement; ``'evolution'`` mutates only into pool members).
        current: for scores that change as the set grows (a set-level aggregate, see the
            module docstring): called with evaluated architectures, returns their scores
            now; the strategies compare by it.
        strategy_kwargs: the strategy's options (its constructor's arguments), e.g.
            ``population=20, sample_size=5`` for ``'evolution'``.

    Returns:
        ``(arch, score)`` in evaluation order, exactly ``budget`` of them (with ``current``:
        the scores at the end, over the whole set).

    Example:
        >>> import search_spaces
        >>> sp = search_spaces.get('nb201')
        >>> log = run_strategy('evolution', sp, 30, lambda archs: [a.count('conv') for a in archs])
        >>> len(log), len({sp.hash(a) for a, _ in log})
        (30, 30)
    """
    strat = get_strategy(strategy, **strategy_kwargs)
    budget = check_budget(budget)
    if isinstance(space, str):
        import search_spaces

        space = search_spaces.get(space)
    pool_list = _pool_list(space, pool)
    strat.check(space, budget, pool_list)
    state = SearchState(space, evaluate, budget, higher_is_better, seed=seed, pool=pool_list, current=current)
    strat.run(state)
    if len(state.log) != budget:
        raise RuntimeError(f"strategy {strat.name!r} evaluated {len(state.log)} architectures, not {budget}")
    return state.final_log()
