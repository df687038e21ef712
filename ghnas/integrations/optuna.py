"""Optuna integration: architectures as trial parameters, and the GHN proxy as a pruner.

Three pieces, each on one of Optuna's own extension points:

* :func:`suggest_architecture` draws an architecture through ``trial.suggest_categorical``
  (one categorical parameter per position of the space's integer encoding), so any
  Optuna sampler (TPE, random, NSGA-II, ...) searches architectures and other
  hyperparameters together, and the trial records the architecture string as the user
  attribute ``ghnas_arch``.
* :class:`GHNProxyPruner` is an :class:`optuna.pruners.BasePruner`. At the first
  ``trial.should_prune()`` of a trial (before it reports anything, i.e. before
  training) it scores the trial's architecture with the proxy, records the score as the
  user attribute ``ghnas_proxy_score``, and prunes the trial when the score ranks below
  a quantile of a reference: a pre-scored pool, or the proxy scores of the study's
  earlier trials. Later calls (after ``trial.report``) go to an optional wrapped pruner.
* :class:`ProxyQueueCallback` is a study callback (``study.optimize(callbacks=[...])``)
  that keeps the best-scored architectures of a pre-scored pool queued as trials
  (``study.enqueue_trial``), each with its proxy score as a user attribute.

Aggregate proxies (``'params+flops'``, ``'vote:ghn,synflow'``, ``'az_nas'``) rank an
architecture among every architecture the :class:`~ghnas.integrations.ProxyScorer` has
seen (the reference pool and the trials so far): the score recorded on a trial is its
rank at the moment the trial was scored, and the pruner compares with the current
aggregate of the reference, not with the ranks other trials were given earlier.

Everything the integration stores is in trial and study user attributes, so it works
with any storage: several worker processes can share one study through RDB storage
(SQLite, PostgreSQL, ...), and a study resumed after a crash keeps its proxy scores.

Example (an architecture and a learning rate tuned together)::

    >>> import optuna
    >>> from ghnas.integrations.optuna import GHNProxyPruner, suggest_architecture
    >>> pruner = GHNProxyPruner('nb201', proxy='params', quantile=0.5, reference=16)
    >>> def objective(trial):
    ...     arch = suggest_architecture(trial, 'nb201')
    ...     lr = trial.suggest_float('lr', 1e-3, 1e-1, log=True)
    ...     if trial.should_prune():           # before any training
    ...         raise optuna.TrialPruned()
    ...     return lr                          # train(space.build(arch), ..., lr=lr) here
    >>> study = optuna.create_study(direction='maximize', pruner=pruner,
    ...                             sampler=optuna.samplers.RandomSampler(seed=0))
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study.optimize(objective, n_trials=4)
    >>> all('ghnas_proxy_score' in t.user_attrs for t in study.trials)
    True
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from . import ProxyScorer, is_below, quantile_threshold

__all__ = [
    "ARCH_ATTR",
    "SCORE_ATTR",
    "KEY_ATTR",
    "suggest_architecture",
    "architecture_of",
    "proxy_scores",
    "GHNProxyPruner",
    "ProxyQueueCallback",
]

#: trial user attribute holding the architecture string
ARCH_ATTR = "ghnas_arch"
#: trial user attribute holding the proxy score of the trial's architecture
SCORE_ATTR = "ghnas_proxy_score"
#: trial user attribute identifying the proxy settings the score was computed with
KEY_ATTR = "ghnas_proxy_key"
# study user attribute caching the scores of a pruner's reference pool
_REFERENCE_ATTR = "ghnas_proxy_reference"


def _space(space: Any):
    from ghnas.proxies.scoring import _resolve_space

    return _resolve_space(space)


def _param_names(space: Any, name: str) -> list[str]:
    from ghnas.searching.strategies import architecture_param_names  # one naming rule, shared with TPE

    return architecture_param_names(space, name)


def _params_of(space: Any, arch: str, name: str) -> dict[str, int]:
    return {p: int(v) for p, v in zip(_param_names(space, name), space.encode(arch))}


def suggest_architecture(trial: optuna.trial.Trial, space: Any, name: str = "arch") -> str:
    """Suggest an architecture of ``space`` through the trial; return its canonical string.

    Position ``i`` of the space's encoding (see ``space.encoding_choices``) becomes the
    categorical parameter ``f'{name}_{i}'`` (zero-padded) with the choices
    ``0 .. encoding_choices[i] - 1``. The string is recorded as the trial user attribute
    :data:`ARCH_ATTR`. Fixed or enqueued parameters are honoured as usual in Optuna.

    Args:
        trial: the trial being run (``optuna.trial.Trial``).
        space: a space name (``'nb201'``, ``'darts'``) or a search space object.
        name: prefix of the parameter names (use different prefixes to search several
            architectures in one trial).

    Example:
        >>> import optuna
        >>> from ghnas.integrations.optuna import suggest_architecture
        >>> trial = optuna.create_study().ask()
        >>> arch = suggest_architecture(trial, 'nb201')
        >>> sorted(trial.params)[:2], trial.user_attrs['ghnas_arch'] == arch
        (['arch_0', 'arch_1'], True)
    """
    sp = _space(space)
    vec = [trial.suggest_categorical(p, list(range(int(c))))
           for p, c in zip(_param_names(sp, name), sp.encoding_choices)]
    arch = sp.decode(vec)
    trial.set_user_attr(ARCH_ATTR if name == "arch" else f"{ARCH_ATTR}:{name}", arch)
    return arch


def architecture_of(trial: FrozenTrial | optuna.trial.Trial, space: Any, name: str = "arch") -> str | None:
    """The architecture of a trial: its :data:`ARCH_ATTR` user attribute, or else decoded
    from its ``f'{name}_{i}'`` parameters; ``None`` when it has neither."""
    attr = ARCH_ATTR if name == "arch" else f"{ARCH_ATTR}:{name}"
    arch = trial.user_attrs.get(attr)
    if isinstance(arch, str):
        return arch
    sp = _space(space)
    names = _param_names(sp, name)
    params = trial.params
    if not all(p in params for p in names):
        return None
    return sp.decode([int(params[p]) for p in names])


def proxy_scores(study: optuna.study.Study, key: str | None = None) -> dict[int, float]:
    """``{trial number: proxy score}`` of every trial with a recorded score (any state),
    optionally only those computed with the proxy settings ``key`` (``ProxyScorer.key``)."""
    out: dict[int, float] = {}
    for t in study.get_trials(deepcopy=False):
        if SCORE_ATTR in t.user_attrs and (key is None or t.user_attrs.get(KEY_ATTR) == key):
            out[t.number] = float(t.user_attrs[SCORE_ATTR])
    return out


def _reference_pool(space: Any, reference: int | Sequence[str], seed: int) -> list[str]:
    from . import architecture_pool

    return architecture_pool(space, reference, seed, "reference")


class GHNProxyPruner(BasePruner):
    """Prune trials whose architecture the (GHN) proxy ranks low, before they train.

    Call ``trial.should_prune()`` right after :func:`suggest_architecture`. The first
    call of a trial that has not reported any intermediate value yet scores its
    architecture, records the score as the user attributes :data:`SCORE_ATTR` (and the
    settings digest :data:`KEY_ATTR`), and returns ``True`` when the score ranks
    strictly below the ``quantile`` of the reference scores. Calls after
    ``trial.report(...)`` are answered by ``wrapped_pruner`` (``False`` without one), so
    the usual learning-curve pruning can follow during training.

    Args:
        space: the search space (name or object) the architectures belong to.
        proxy: proxy name or instance (default: the GHN proxy), or an aggregate such as
            ``'ghn+synflow'``: its value is the rank over the architectures seen so far
            (the reference and the study's trials), so the :data:`SCORE_ATTR` of a trial
            is its rank at the moment it was pruned or kept.
        quantile: the fraction of the reference to prune below; ``0.5`` prunes the
            architectures that score below the reference median, ``0.9`` keeps the top
            10 %. Ties with the threshold are kept.
        reference: what a score is ranked against. ``None``: the proxy scores of the
            study's other trials (read from their user attributes, so every worker and
            every resumed run sees them); no pruning happens until ``n_startup_trials``
            of them exist. An int: a pool of that many distinct architectures sampled
            with ``reference_seed``; a list: those architectures. A pool is scored once
            and its scores are stored in the study's user attributes, so other workers
            and resumed runs reuse them.
        n_startup_trials: with ``reference=None``, the number of other scored trials
            needed before anything is pruned.
        name: the parameter prefix given to :func:`suggest_architecture`.
        wrapped_pruner: answers ``should_prune`` once training has started (e.g.
            ``optuna.pruners.MedianPruner()``).
        ghn, data, build_kwargs, seed, batch_size, cache, device: how scores are
            computed; see :class:`ghnas.integrations.ProxyScorer`.
        reference_seed: seed of a sampled reference pool.

    Example: see the module docstring; ``examples/optuna_pruner.py`` trains the kept
    architectures.
    """

    def __init__(self, space: Any, proxy: Any = "ghn", *, quantile: float = 0.5,
                 reference: int | Sequence[str] | None = None, n_startup_trials: int = 5,
                 name: str = "arch", wrapped_pruner: BasePruner | None = None, ghn: Any = None,
                 data: Any = "sample", build_kwargs: dict[str, Any] | None = None, seed: int = 0,
                 batch_size: int | None = None, cache: str | os.PathLike | None = None, device: Any = None,
                 reference_seed: int = 0):
        if not 0.0 <= float(quantile) <= 1.0:
            raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
        if int(n_startup_trials) < 0:
            raise ValueError(f"n_startup_trials must be >= 0, got {n_startup_trials}")
        if wrapped_pruner is not None and not isinstance(wrapped_pruner, BasePruner):
            raise TypeError(f"wrapped_pruner must be an optuna BasePruner, got {type(wrapped_pruner).__name__}")
        self.scorer = ProxyScorer(space, proxy, ghn=ghn, data=data, build_kwargs=build_kwargs,
                                  seed=seed, batch_size=batch_size, cache=cache, device=device)
        self.quantile = float(quantile)
        self.n_startup_trials = int(n_startup_trials)
        self.name = name
        self.wrapped_pruner = wrapped_pruner
        self._reference_archs = (None if reference is None
                                 else _reference_pool(self.scorer.space, reference, reference_seed))
        self._reference_scores: list[float] | None = None

    # ------------------------------------------------------------------ BasePruner
    def prune(self, study: optuna.study.Study, trial: FrozenTrial) -> bool:
        if trial.intermediate_values:  # training has started: not the proxy's call
            return self.wrapped_pruner.prune(study, trial) if self.wrapped_pruner is not None else False
        arch = architecture_of(trial, self.scorer.space, self.name)
        if arch is None:
            raise ValueError(f"trial {trial.number} has no architecture: call "
                             f"suggest_architecture(trial, space, name={self.name!r}) before "
                             "trial.should_prune()")
        if self.scorer.is_aggregate:
            self._reference(study, trial.number)  # the reference joins the set first: the trial ranks among it
        value = self._score_trial(study, trial, arch)
        return is_below(value, self.threshold(study, exclude=trial.number), self.scorer.higher_is_better)

    # ------------------------------------------------------------------ helpers
    def score(self, arch: str) -> float:
        """The proxy score of ``arch`` (memoised in this process)."""
        return self.scorer.score(arch)

    def threshold(self, study: optuna.study.Study, exclude: int | None = None) -> float | None:
        """The score below which trials are pruned now; ``None`` while nothing is pruned
        (too few scored trials, or no finite reference score)."""
        reference = self._reference(study, exclude)
        if reference is None:
            return None
        return quantile_threshold(reference, self.quantile, self.scorer.higher_is_better)

    def _score_trial(self, study: optuna.study.Study, trial: FrozenTrial, arch: str) -> float:
        key = self.scorer.key
        attrs = trial.user_attrs
        if attrs.get(KEY_ATTR) == key and SCORE_ATTR in attrs:  # e.g. enqueued with its score
            return float(attrs[SCORE_ATTR])
        value = self.scorer.score(arch)
        # a pruner receives a frozen copy of the trial; Optuna's own pruners write trial
        # attributes through the study's storage in the same way (successive halving)
        storage = study._storage
        storage.set_trial_user_attr(trial._trial_id, SCORE_ATTR, float(value))
        storage.set_trial_user_attr(trial._trial_id, KEY_ATTR, key)
        if trial.user_attrs.get(ARCH_ATTR) is None and self.name == "arch":
            storage.set_trial_user_attr(trial._trial_id, ARCH_ATTR, arch)
        return value

    def _reference(self, study: optuna.study.Study, exclude: int | None) -> list[float] | None:
        key = self.scorer.key
        if self._reference_archs is None:
            if self.scorer.is_aggregate:
                # ranks of the other trials now (their stored values are ranks of earlier moments)
                archs = [architecture_of(t, self.scorer.space, self.name) for t in study.get_trials(deepcopy=False)
                         if t.number != exclude and t.user_attrs.get(KEY_ATTR) == key]
                archs = [a for a in archs if a is not None]
                return self.scorer.scores(archs) if len(archs) >= max(1, self.n_startup_trials) else None
            scores = [v for n, v in proxy_scores(study, key).items() if n != exclude]
            return scores if len(scores) >= max(1, self.n_startup_trials) else None
        if self.scorer.is_aggregate:  # the pool's ranks change as trials join the set
            return self.scorer.scores(self._reference_archs)
        if self._reference_scores is None:
            stored = study.user_attrs.get(_REFERENCE_ATTR)
            if (isinstance(stored, dict) and stored.get("key") == key
                    and stored.get("archs") == self._reference_archs):
                self._reference_scores = [float(v) for v in stored["scores"]]
            else:
                self._reference_scores = self.scorer.scores(self._reference_archs)
                study.set_user_attr(_REFERENCE_ATTR, {"key": key, "archs": self._reference_archs,
                                                      "scores": [float(v) for v in self._reference_scores]})
        return self._reference_scores


class ProxyQueueCallback:
    """Study callback that keeps the best unseen architectures of a pool queued as trials.

    The pool is scored once (memoised, and through ``cache`` across runs); after every
    finished trial the callback tops up the queue to ``n_queued`` waiting trials with
    ``study.enqueue_trial``, best proxy score first, skipping architectures that any
    trial of the study already has. Each queued trial carries its architecture's
    parameters (other parameters are left to the sampler) and the user attributes
    :data:`ARCH_ATTR`, :data:`SCORE_ATTR` and :data:`KEY_ATTR`, so the proxy score is
    recorded on the trial from the moment it exists, and a :class:`GHNProxyPruner` with
    the same settings does not score it again.

    (Optuna does not let a callback change a trial that has finished, so the score is
    recorded when the trial is created rather than after it ran.)

    Call :meth:`enqueue` once before ``study.optimize`` so the first trials come from
    the pool as well.

    Args:
        space: the search space (name or object).
        pool: the candidates: a number of distinct architectures sampled with
            ``pool_seed``, or a list of architecture strings.
        proxy, ghn, data, build_kwargs, seed, batch_size, cache, device: as for
            :class:`GHNProxyPruner` (an aggregate ranks the pool as one set; the score
            queued with a trial is its rank then).
        n_queued: waiting trials to keep queued (with several workers, about one each).
        name: the parameter prefix given to :func:`suggest_architecture`.

    Example:
        >>> import optuna
        >>> from ghnas.integrations.optuna import ProxyQueueCallback, suggest_architecture
        >>> queue = ProxyQueueCallback('nb201', pool=8, proxy='params')
        >>> study = optuna.create_study(direction='maximize')
        >>> _ = queue.enqueue(study)
        >>> study.optimize(lambda t: len(suggest_architecture(t, 'nb201')), n_trials=3,
        ...                callbacks=[queue])
        >>> s = [t.user_attrs['ghnas_proxy_score'] for t in study.trials[:3]]
        >>> s == sorted(s, reverse=True)
        True
    """

    def __init__(self, space: Any, pool: int | Sequence[str] = 256, proxy: Any = "ghn", *,
                 n_queued: int = 1, name: str = "arch", pool_seed: int = 0, ghn: Any = None,
                 data: Any = "sample", build_kwargs: dict[str, Any] | None = None, seed: int = 0,
                 batch_size: int | None = None, cache: str | os.PathLike | None = None, device: Any = None):
        if int(n_queued) < 1:
            raise ValueError(f"n_queued must be >= 1, got {n_queued}")
        self.scorer = ProxyScorer(space, proxy, ghn=ghn, data=data, build_kwargs=build_kwargs,
                                  seed=seed, batch_size=batch_size, cache=cache, device=device)
        self.pool = _reference_pool(self.scorer.space, pool, pool_seed)
        self.n_queued = int(n_queued)
        self.name = name
        self._ranked: list[tuple[str, float]] | None = None

    def ranked(self) -> list[tuple[str, float]]:
        """The pool as ``(arch, score)`` pairs, best first (scored on first use)."""
        if self._ranked is None:
            table = self.scorer.table(self.pool)
            self._ranked = [(r.arch, r.score) for r in table.ranked()]
        return list(self._ranked)

    def enqueue(self, study: optuna.study.Study, n: int | None = None) -> list[str]:
        """Queue up to ``n`` (default ``n_queued``) more of the best unseen architectures
        without counting those already waiting; returns the architectures queued."""
        space = self.scorer.space
        attr = ARCH_ATTR if self.name == "arch" else f"{ARCH_ATTR}:{self.name}"
        seen = set()
        for t in study.get_trials(deepcopy=False):
            arch = architecture_of(t, space, self.name)
            if arch is not None:
                seen.add(space.hash(arch))
        want = self.n_queued if n is None else int(n)
        added: list[str] = []
        for arch, value in self.ranked():
            if len(added) >= want:
                break
            if space.hash(arch) in seen:
                continue
            seen.add(space.hash(arch))
            study.enqueue_trial(_params_of(space, arch, self.name),
                                user_attrs={attr: space.validate(arch), SCORE_ATTR: float(value),
                                            KEY_ATTR: self.scorer.key},
                                skip_if_exists=True)
            added.append(arch)
        return added

    def __call__(self, study: optuna.study.Study, trial: FrozenTrial) -> None:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        missing = self.n_queued - sum(1 for t in waiting if SCORE_ATTR in t.user_attrs)
        if missing > 0:
            self.enqueue(study, missing)

