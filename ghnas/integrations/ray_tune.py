"""Ray Tune integration, and proxy scoring across many machines with Ray.

Needs the optional extra: ``pip install "ghnas[ray]"``.

* :class:`GHNSearcher`, a Ray Tune ``Searcher``: scores a pool of architectures with the
  (GHN) proxy once (an aggregate such as ``'ghn+synflow'`` is ranked over the whole pool,
  and the ``proxy_score`` a config carries is that rank), then proposes them best-first as ``config['arch']``, together with
  the other hyperparameters of the ``param_space`` (sampled). Its state is saved with
  the experiment, so ``Tuner.restore`` continues the ranking where it stopped without
  scoring again.
* :class:`ProxyStopper`, a Ray Tune ``Stopper``: stops a trial at its first reported
  result when its architecture ranks below a quantile of the proxy scores (of a
  reference pool, or of the trials seen so far). Useful with any searcher that draws
  architectures at random.
* :func:`warm_start` for trainables: the trial's model starts from GHN-predicted
  parameters (the GHN is loaded once per worker process, or shipped to the workers
  with ``tune.with_parameters``).
* :func:`score_distributed`: :func:`ghnas.proxies.score` for a large pool, split into
  Ray tasks that run on every CPU/GPU of a Ray cluster, with the same results as the
  single-process path.

Pointing it at a cluster: start Ray on the machines (``ray start --head`` on one,
``ray start --address=HEAD:6379`` on the others), install ghnas on every node (or ship
it with ``runtime_env={'py_modules': [...]}``), then in the driver call
``ray.init(address='auto')`` (or ``'ray://HEAD:10001'`` from outside the cluster) before
:func:`score_distributed` or ``Tuner.fit``. Data batches and GHN weights travel through
Ray's object store, so the workers need neither the dataset nor the checkpoint file; a
``cache`` file must be on a file system every worker can write.

Example::

    >>> import search_spaces
    >>> from ray import tune
    >>> from ghnas.integrations.ray_tune import GHNSearcher, warm_start
    >>> def trainable(config):
    ...     model = search_spaces.get('nb201').build(config['arch'], C=8, N=1)
    ...     warm_start(model, 'path/to/ghn.pt')
    ...     ...  # train, then tune.report({'acc': ...})
    >>> searcher = GHNSearcher('nb201', pool=256, ghn='path/to/ghn.pt')
    >>> tuner = tune.Tuner(trainable, param_space={'lr': tune.loguniform(1e-3, 0.3)},
    ...                    tune_config=tune.TuneConfig(search_alg=searcher, num_samples=16,
    ...                                                metric='acc', mode='max'))  # doctest: +SKIP
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

try:
    import ray
    from ray.tune.search import Searcher
    from ray.tune.search.variant_generator import parse_spec_vars
    from ray.tune.stopper import Stopper
except ImportError as e:  # ray is an optional extra
    raise ImportError('ghnas.integrations.ray_tune needs Ray Tune, which is not installed: '
                      f'pip install "ghnas[ray]" ({e})') from e

import numpy as np

from . import ProxyScorer, architecture_pool, is_below, quantile_threshold, resolve_ghn, warm_start

__all__ = ["GHNSearcher", "ProxyStopper", "score_distributed", "warm_start", "resolve_ghn"]

_STATE_VERSION = 1


def _scorer(scorer: ProxyScorer | None, space: Any, proxy: Any, **kwargs: Any) -> ProxyScorer:
    if scorer is not None:
        if not isinstance(scorer, ProxyScorer):
            raise TypeError(f"scorer must be a ghnas.integrations.ProxyScorer, got {type(scorer).__name__}")
        return scorer
    return ProxyScorer(space, proxy, **kwargs)


def _get_path(config: dict[str, Any], key: str) -> Any:
    """``config['a']['b']`` for ``key='a/b'`` (Tune's flattened-key convention)."""
    node: Any = config
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set_path(config: dict[str, Any], path: Sequence[str], value: Any) -> None:
    node = config
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


# --------------------------------------------------------------------------- searcher


class GHNSearcher(Searcher):
    """Propose the architectures of a pool best-first by proxy score.

    On the first :meth:`suggest` (or on :meth:`prepare`) the pool is scored: in this
    process, or as Ray tasks with ``num_workers > 1`` (see :func:`score_distributed`).
    Each suggestion is the next architecture of the ranking under ``arch_key`` (with
    its score under ``score_key``) plus a sample of every other search domain of the
    ``param_space`` (``tune.uniform``, ``tune.choice``, ...; grid search is not
    supported). When the pool is used up the searcher reports ``FINISHED``.

    Args:
        space: the search space (name or object).
        pool: the candidates: a number of distinct architectures sampled with
            ``pool_seed``, a list of architecture strings, or a
            :class:`~ghnas.proxies.ScoreTable` that is already scored (used as given).
        proxy, ghn, data, build_kwargs, seed, batch_size, cache, device: how the pool
            is scored; see :class:`ghnas.integrations.ProxyScorer`. Or pass ``scorer``.
        scorer: a ready :class:`~ghnas.integrations.ProxyScorer` (e.g. shared with a
            :class:`ProxyStopper`, so nothing is scored twice); ``space``, ``proxy`` and
            the scoring arguments are then taken from it.
        arch_key: where the architecture goes in the config (``'a/b'`` nests).
        score_key: where its proxy score goes (``None``: not added).
        metric, mode: as for any Tune searcher (only recorded; the order of proposals
            is the proxy ranking).
        sample_seed: seeds the sampling of the other hyperparameters.
        num_workers: Ray tasks that score the pool in parallel (1: in this process).

    ``save``/``restore`` write and read JSON (ranking, position, running trials, the
    sampler's random state), which Tune calls for ``Tuner.restore``.
    """

    def __init__(self, space: Any = "nb201", pool: Any = 256, proxy: Any = "ghn", *,
                 scorer: ProxyScorer | None = None, ghn: Any = None, data: Any = "sample",
                 build_kwargs: dict[str, Any] | None = None, seed: int = 0, batch_size: int | None = None,
                 cache: str | os.PathLike | None = None, device: Any = None, arch_key: str = "arch",
                 score_key: str | None = "proxy_score", metric: str | None = None, mode: str | None = None,
                 pool_seed: int = 0, sample_seed: int = 0, num_workers: int = 1):
        super().__init__(metric=metric, mode=mode)
        self.scorer = _scorer(scorer, space, proxy, ghn=ghn, data=data, build_kwargs=build_kwargs,
                              seed=seed, batch_size=batch_size, cache=cache, device=device)
        sp = self.scorer.space
        from ghnas.proxies import ScoreTable

        self._given_table = None
        if isinstance(pool, ScoreTable):
            self._given_table = pool
            self.pool = [sp.validate(a) for a in pool.archs]
        else:
            self.pool = architecture_pool(sp, pool, pool_seed, "pool", extra=" or a ScoreTable")
        if int(num_workers) < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        self.arch_key = arch_key
        self.score_key = score_key
        self.num_workers = int(num_workers)
        self._param_space: dict[str, Any] = {}
        self._rng = np.random.default_rng(sample_seed)
        self._ranked: list[tuple[str, float]] | None = None
        self._next = 0
        self._live: dict[str, str] = {}
        self._results: dict[str, Any] = {}

    # ------------------------------------------------------------------ Searcher API
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        if metric and not self._metric:
            self._metric = metric
        if mode and not self._mode:
            self._mode = mode
        _, domains, grids = parse_spec_vars(config or {})
        if grids:
            names = ", ".join("/".join(map(str, p)) for p, _ in grids)
            raise ValueError(f"GHNSearcher cannot combine with grid_search (found in: {names}); "
                             "use tune.choice(...) for those parameters")
        self._param_space = dict(config or {})
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        ranked = self.ranked()
        if self._next >= len(ranked):
            return Searcher.FINISHED
        arch, value = ranked[self._next]
        self._next += 1
        config = self._sample_other_params()
        _set_path(config, self.arch_key.split("/"), arch)
        if self.score_key:
            _set_path(config, self.score_key.split("/"), float(value))
        self._live[trial_id] = arch
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        arch = self._live.pop(trial_id, None)
        if arch is None:
            return
        value = None
        if result and self._metric and self._metric in result and not error:
            value = result[self._metric]
            value = float(value) if isinstance(value, (int, float)) else None
        self._results[arch] = {"trial_id": trial_id, "error": bool(error), "metric": value}

    def save(self, checkpoint_path: str) -> None:
        state = {
            "version": _STATE_VERSION,
            "scorer_key": self.scorer.key if self._ranked is not None else None,
            "ranked": self._ranked,
            "next": self._next,
            "live": self._live,
            "results": self._results,
            "rng": self._rng.bit_generator.state,
            "metric": self._metric,
            "mode": self._mode,
        }
        tmp = f"{checkpoint_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f, allow_nan=True)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            state = json.load(f)
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"{checkpoint_path!r} is not a GHNSearcher state (version "
                             f"{state.get('version')!r}, expected {_STATE_VERSION})")
        ranked = state["ranked"]
        self._ranked = None if ranked is None else [(str(a), float(s)) for a, s in ranked]
        self._next = int(state["next"])
        self._live = dict(state["live"])
        self._results = dict(state["results"])
        self._rng.bit_generator.state = state["rng"]
        self._metric = self._metric or state.get("metric")
        self._mode = self._mode or state.get("mode")

    # ------------------------------------------------------------------ helpers
    def prepare(self) -> None:
        """Score the pool now (otherwise it happens on the first :meth:`suggest`)."""
        self.ranked()

    def ranked(self) -> list[tuple[str, float]]:
        """The pool as ``(arch, score)`` pairs, best first (scored on first use)."""
        if self._ranked is None:
            table = self._given_table
            if table is None and self.num_workers > 1:
                s = self.scorer
                table = score_distributed(self.pool, s.space, s.proxy, s._data(), s.seed, s.batch_size,
                                          s.build_kwargs, progress=False, cache=s.cache, device=s.device,
                                          num_workers=self.num_workers)
                s.add_table(table)
                if s.is_aggregate:  # ranked over everything the scorer has seen
                    table = s.table(self.pool)
            elif table is None:
                table = self.scorer.table(self.pool)
            seen: set[str] = set()
            ranked = []
            for row in table.ranked():
                h = self.scorer.space.hash(row.arch)
                if h not in seen:
                    seen.add(h)
                    ranked.append((self.scorer.space.validate(row.arch), float(row.score)))
            self._ranked = ranked
        return list(self._ranked)

    @property
    def results(self) -> dict[str, Any]:
        """``{arch: {'trial_id', 'error', 'metric'}}`` of the finished trials."""
        return dict(self._results)

    def _sample_other_params(self) -> dict[str, Any]:
        resolved, domains, _ = parse_spec_vars(self._param_space)
        config: dict[str, Any] = {}
        for path, value in resolved:
            _set_path(config, [str(p) for p in path], value)
        for path, domain in domains:
            _set_path(config, [str(p) for p in path], domain.sample(config=config, random_state=self._rng))
        return config

    def __repr__(self) -> str:
        return f"GHNSearcher(pool={len(self.pool)}, scorer={self.scorer!r}, arch_key={self.arch_key!r})"


# --------------------------------------------------------------------------- stopper


class ProxyStopper(Stopper):
    """Stop trials whose architecture the proxy ranks low, at their first result.

    Report something (e.g. ``{'step': 0}``, or the accuracy of the warm-started model)
    before training, so that a low-ranked trial stops before it trains. Each trial is
    judged once, at its first result; afterwards the stopper never stops it.

    Args:
        space, proxy, scorer, ghn, data, build_kwargs, seed, batch_size, cache, device:
            how scores are computed, as for :class:`GHNSearcher` (a given ``scorer``
            supplies all of them).
        quantile: stop architectures scoring strictly below this quantile of the
            reference (``0.5``: below the median).
        reference: ``None``: the scores of the trials this stopper has judged so far
            (nothing is stopped before ``n_startup_trials`` of them); an int: a pool of
            that many architectures sampled with ``reference_seed``; a list: those.
        arch_key: where the architecture is in the trial's config.

    With an aggregate proxy (``'params+flops'``, ``'az_nas'``) a trial's value is its rank
    among every architecture the scorer has seen when the trial is judged, and it is
    compared with the reference's (or the judged trials') ranks at that same moment.
    """

    def __init__(self, space: Any = "nb201", proxy: Any = "ghn", *, scorer: ProxyScorer | None = None,
                 quantile: float = 0.5, reference: int | Sequence[str] | None = None,
                 n_startup_trials: int = 5, arch_key: str = "arch", ghn: Any = None, data: Any = "sample",
                 build_kwargs: dict[str, Any] | None = None, seed: int = 0, batch_size: int | None = None,
                 cache: str | os.PathLike | None = None, device: Any = None, reference_seed: int = 0):
        if not 0.0 <= float(quantile) <= 1.0:
            raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
        self.scorer = _scorer(scorer, space, proxy, ghn=ghn, data=data, build_kwargs=build_kwargs,
                              seed=seed, batch_size=batch_size, cache=cache, device=device)
        self.quantile = float(quantile)
        self.n_startup_trials = int(n_startup_trials)
        self.arch_key = arch_key
        sp = self.scorer.space
        if reference is None:
            self._reference_archs = None
        elif isinstance(reference, int) and not isinstance(reference, bool):
            self._reference_archs = sp.sample_many(reference, seed=reference_seed, unique=True)
        elif isinstance(reference, (list, tuple)) and reference:
            self._reference_archs = [sp.validate(a) for a in reference]
        else:
            raise TypeError(f"reference must be None, a pool size or a non-empty list of architectures, "
                            f"got {reference!r}")
        self._judged: dict[str, float] = {}
        self._judged_archs: dict[str, str] = {}
        self.stopped: list[str] = []  # trial ids stopped by the proxy

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if trial_id in self._judged:
            return False
        arch = _get_path(result.get("config") or {}, self.arch_key)
        if not isinstance(arch, str):
            raise ValueError(f"trial {trial_id} has no architecture string at config[{self.arch_key!r}]; "
                             f"set arch_key to where the trainable's config holds it")
        if self._reference_archs is not None and self.scorer.is_aggregate:
            self.scorer.scores(self._reference_archs)  # the reference joins the set first: the trial ranks among it
        value = self.scorer.score(arch)
        if self._reference_archs is not None:
            reference: list[float] | None = self.scorer.scores(self._reference_archs)
        else:
            # an aggregate re-ranks the judged trials now; a single proxy's scores never change
            reference = (self.scorer.scores(list(self._judged_archs.values())) if self.scorer.is_aggregate
                         else list(self._judged.values()))
            if len(reference) < max(1, self.n_startup_trials):
                reference = None
        self._judged[trial_id] = value
        self._judged_archs[trial_id] = arch
        threshold = None if reference is None else quantile_threshold(reference, self.quantile,
                                                                      self.scorer.higher_is_better)
        stop = is_below(value, threshold, self.scorer.higher_is_better)
        if stop:
            self.stopped.append(trial_id)
        return stop

    def stop_all(self) -> bool:
        return False


# --------------------------------------------------------------------------- distributed scoring


def _score_part(archs: list[str], space: Any, proxy: Any, batches: Any, seed: int, batch_size: int,
                build_kwargs: dict[str, Any], cache: Any, device: Any) -> dict[str, Any]:
    from ghnas.proxies import score

    table = score(archs, space, proxy, batches, seed, batch_size, build_kwargs, False,
                  cache=cache, device=device)
    return table.to_dict()


def score_distributed(  # the signature of ghnas.proxies.score, by design, plus where it runs
    archs: Sequence[str] | str,
    space: Any = "nb201",
    proxy: Any = "synflow",
    data: Any = "sample",
    seed: int = 0,
    batch_size: int | None = None,
    build_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    *,
    cache: str | os.PathLike | None = None,
    device: Any = None,
    num_workers: int = 2,
    chunk_size: int | None = None,
    num_cpus_per_task: float = 1,
    num_gpus_per_task: float = 0,
):
    """:func:`ghnas.proxies.score` with the architectures split into Ray tasks.

    Same arguments and result as :func:`ghnas.proxies.score` (the same scores, rows in
    input order, the same ``settings``), plus where the work runs. Each task scores a
    contiguous part of the distinct architectures with ``score`` itself; networks are
    built under per-architecture seeds, so a score does not depend on the part it is
    in. For the GHN proxy the parts are cut at multiples of its ``chunk``, so every GHN
    call sees the same graphs as in a single process, and the scores are bit-identical.

    Ray is started locally when it is not running yet; to use a cluster, call
    ``ray.init(address='auto')`` first (see the module docstring).

    Args:
        num_workers: tasks in flight at once.
        chunk_size: architectures per task (default: an even split over
            ``num_workers`` tasks); smaller tasks balance load and show progress.
        num_cpus_per_task, num_gpus_per_task: Ray resources of each task; with GPUs,
            each task scores on its GPU unless ``device`` says otherwise.

    Example::

        >>> import ray, search_spaces
        >>> ray.init(num_cpus=2)                                     # doctest: +SKIP
        >>> archs = search_spaces.get('nb201').sample_many(1000, seed=0)
        >>> table = score_distributed(archs, 'nb201', 'synflow', num_workers=2)  # doctest: +SKIP
    """
    from ghnas.proxies import get_proxy, load_batches, score
    from ghnas.proxies.ensemble import Ensemble, member_batch_size
    from ghnas.proxies.scoring import _resolve_space, _validate_all, ensemble_table

    if int(num_workers) < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    archs = [archs] if isinstance(archs, str) else list(archs)
    sp = _resolve_space(space)
    prox = get_proxy(proxy, space=sp)
    if batch_size is None:
        batch_size = int(prox.default_batch_size)
    common = dict(data=data, seed=seed, batch_size=batch_size, build_kwargs=build_kwargs, progress=progress,
                  cache=cache, device=device, num_workers=num_workers, chunk_size=chunk_size,
                  num_cpus_per_task=num_cpus_per_task, num_gpus_per_task=num_gpus_per_task)
    if isinstance(prox, Ensemble):
        # rank aggregation needs the whole set: score each member everywhere, combine here
        # (each member on its own first images of the batch, as in score())
        tables = [score_distributed(archs, sp, m, **{**common, "batch_size": member_batch_size(m, batch_size)})
                  for m in prox.members]
        like = next(t for t, m in zip(tables, prox.members) if m.needs_data == prox.needs_data)
        return ensemble_table(prox, archs, tables, {k: v for k, v in like.settings.items() if k != "proxy"})

    keys = _validate_all(archs, sp)
    unique = list(dict.fromkeys(keys))
    if not unique:
        return score([], sp, prox, data, seed, batch_size, build_kwargs, False, cache=cache, device=device)
    # the batch is loaded once, here, and travels to the workers (which need no dataset);
    # score() hashes it, so the cache key equals that of score(..., data=data)
    batches = load_batches(data, batch_size, seed, "cpu") if prox.needs_data else None
    if prox.needs_ghn and getattr(prox, "_ghn", None) is None:
        prox._resolve(sp, "cpu")  # ship the weights, not a path the workers may not have
    parts = _split_parts(unique, prox, chunk_size, num_workers)
    job = dict(space=_space_arg(sp), seed=int(seed), batch_size=int(batch_size),
               build_kwargs=dict(build_kwargs or {}), cache=cache, device=device)
    results = _run_parts(parts, prox, batches, job, num_workers, num_cpus_per_task, num_gpus_per_task,
                         progress)
    return _merge_parts(archs, keys, results)


def _space_arg(sp: Any) -> Any:
    """A registered space travels to the workers by name; others are pickled."""
    try:
        import search_spaces

        if type(search_spaces.get(sp.name)) is type(sp):
            return sp.name
    except Exception:  # an unregistered or renamed space: send the object itself
        pass
    return sp


def _split_parts(unique: list[str], prox: Any, chunk_size: int | None, num_workers: int) -> list[list[str]]:
    """Contiguous parts, cut at multiples of the proxy's ``chunk`` (the GHN proxy's
    prediction batches), so every GHN call sees the same graphs as in one process."""
    size = int(chunk_size) if chunk_size else math.ceil(len(unique) / int(num_workers))
    align = int(getattr(prox, "chunk", 1) or 1)
    size = math.ceil(size / align) * align
    return [unique[i:i + size] for i in range(0, len(unique), size)]


def _run_parts(parts: list[list[str]], prox: Any, batches: Any, job: dict[str, Any], num_workers: int,
               num_cpus: float, num_gpus: float, progress: bool) -> list[dict[str, Any]]:
    """Score the parts as Ray tasks, at most ``num_workers`` at once; results in part order."""
    from tqdm.auto import tqdm

    if not ray.is_initialized():
        ray.init(include_dashboard=False)
    remote = ray.remote(_score_part).options(num_cpus=num_cpus, num_gpus=num_gpus)
    proxy_ref, batches_ref = ray.put(prox), ray.put(batches)
    bar = tqdm(total=sum(map(len, parts)), desc=f"{prox.name or type(prox).__name__} (ray)",
               disable=not progress, leave=False)
    results: dict[int, dict[str, Any]] = {}
    pending: dict[Any, int] = {}
    todo = list(range(len(parts)))
    try:
        while todo or pending:
            while todo and len(pending) < int(num_workers):
                i = todo.pop(0)
                ref = remote.remote(parts[i], job["space"], proxy_ref, batches_ref, job["seed"], job["batch_size"],
                                    job["build_kwargs"], job["cache"], job["device"])
                pending[ref] = i
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i = pending.pop(ref)
                results[i] = ray.get(ref)
                bar.update(len(parts[i]))
    finally:
        bar.close()
        for ref in pending:
            ray.cancel(ref)
    return [results[i] for i in range(len(parts))]


def _merge_parts(archs: list[str], keys: list[str], results: list[dict[str, Any]]):
    """One table in input order from the parts' tables (repeats marked cached, as in score())."""
    from ghnas.proxies import ScoreRow, ScoreTable

    values: dict[str, tuple[float, float, bool]] = {}
    for part in results:
        for row in part["rows"]:
            values[row["arch"]] = (float(row["score"]), float(row["seconds"]), bool(row["cached"]))
    first = ScoreTable.from_dict(results[0])
    rows, seen = [], set()
    for a, k in zip(archs, keys):
        value, seconds, cached = values[k]
        rows.append(ScoreRow(a, value, seconds, cached=cached or k in seen))
        seen.add(k)
    return ScoreTable(proxy=first.proxy, higher_is_better=first.higher_is_better, rows=rows,
                      settings=first.settings)

