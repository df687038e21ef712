"""Integrations with hyperparameter-search frameworks, imported only when asked for.

* :mod:`ghnas.integrations.optuna`: ``suggest_architecture(trial, space)``, a
  :class:`~optuna.pruners.BasePruner` that prunes architectures the GHN proxy ranks low
  before any training, and a study callback that queues the best-scored architectures.
* :mod:`ghnas.integrations.ray_tune` (extra ``pip install "ghnas[ray]"``): a Ray Tune
  ``Searcher`` that proposes architectures best-first by proxy score, a ``Stopper``,
  GHN warm starts for trainables and proxy scoring of large pools as Ray tasks.

Neither Optuna nor Ray is imported by ``import ghnas`` or by this package; only the
submodules import them. What both share lives here: :class:`ProxyScorer`, which scores
architectures one at a time (as trials arrive) through :func:`ghnas.proxies.score`, so
the values are the same as a batch scoring run with the same settings, and reuse its
cache file. It keeps the member scores of every architecture it has seen in one
:class:`~ghnas.proxies.ensemble.SetScores`, so an aggregate proxy (``'params+flops'``,
``'az_nas'``, ...) is ranked over that whole set.

Example::

    >>> from ghnas.integrations import ProxyScorer
    >>> scorer = ProxyScorer('nb201', proxy='params', build_kwargs={'C': 8, 'N': 1})
    >>> arch = '|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|'
    >>> scorer.score(arch) > 0, scorer.higher_is_better
    (True, True)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Sequence

__all__ = ["ProxyScorer", "default_build_kwargs", "default_batch_size", "quantile_threshold", "is_below", "resolve_ghn",
           "warm_start"]

def default_build_kwargs(space_name: str, ghn: Any = None, proxy: Any = None) -> dict[str, Any]:
    """Proxy network size for a space, as :func:`ghnas.search` chooses it
    (:func:`ghnas.searching.proxy_build_kwargs`): for the GHN proxy alone with the space's
    ranking GHN the size it ranks at, else the sizes the GHN was trained at when they are
    recorded, else ``ghnas.searching.PROXY_BUILD_KWARGS[space]`` (``{}`` for other spaces)."""
    from ghnas.searching import proxy_build_kwargs

    return proxy_build_kwargs(space_name, ghn, proxy)


def default_batch_size(proxy: Any, space: Any = None) -> int:
    """Images in the proxy's data batch, as :func:`ghnas.search` chooses them: the
    proxy's ``default_batch_size`` (a name or an instance; ``'zero-shot'`` needs ``space``)."""
    from ghnas.proxies import get_proxy

    return int(get_proxy(proxy, space=space).default_batch_size)


class ProxyScorer:
    """Scores single architectures of one space with one proxy, with memo and cache.

    Args:
        space: a space name (``'nb201'``, ``'darts'``) or a search space object.
        proxy: a proxy name or :class:`~ghnas.proxies.Proxy` instance, or an aggregate
            (``'params+flops'``, ``'vote:ghn,synflow'``, ``'az_nas'``): see below.
        ghn: for GHN proxies (also inside an aggregate): the GHN (name, checkpoint path
            or ``GHN2``); ``None`` means the GHN shipped for the space.
        data, seed, batch_size, cache, device: as in :func:`ghnas.proxies.score`. The
            data batch is loaded once, on first use.
        build_kwargs: network size; ``None`` uses :func:`default_build_kwargs`.
        batch_size: ``None`` uses :func:`default_batch_size` (1,000 images for the GHN
            proxy, 500 on DARTS, 64 for the others), as :func:`ghnas.search` does, so both share
            a cache file.

    Scores are the values :func:`ghnas.proxies.score` returns for the same settings
    (NaN already mapped to the worst value), so a pool scored offline with the same
    ``cache`` file is reused here without recomputation.

    Aggregates: the scorer keeps each member's score of every architecture it has seen
    (:attr:`scored`, a :class:`~ghnas.proxies.ensemble.SetScores`) and reports the
    aggregate rank over that whole set; a member never scores an architecture twice. The
    value of an architecture therefore changes as more are seen: a value reported to
    Optuna or Ray (a trial attribute, a config entry, a stopping decision) is the rank at
    that moment, among the architectures seen by then. Single proxies are unaffected:
    their scores never change.
    """

    def __init__(self, space: Any = "nb201", proxy: Any = "ghn", *, ghn: Any = None,
                 data: Any = "sample", build_kwargs: dict[str, Any] | None = None, seed: int = 0,
                 batch_size: int | None = None, cache: str | os.PathLike | None = None,
                 device: Any = None):
        from ghnas.proxies import get_proxy
        from ghnas.proxies.scoring import _resolve_space

        self.space = _resolve_space(space)
        self.proxy = get_proxy(proxy, space=self.space)
        if ghn is not None:
            self.proxy.use_ghn(ghn)  # an error for a proxy that uses no GHN
        self.data = data
        name = getattr(self.space, "name", "")
        # a GHN checkpoint may record the network size it was trained at
        ghn_members = [m for m in getattr(self.proxy, "members", [self.proxy]) if m.needs_ghn]
        ref = getattr(ghn_members[0], "ghn_ref", None) if ghn_members else None
        if ghn_members and ref is None:
            from ghnas.ghn import GHNRef

            ref = GHNRef.default(name, "rank")
        self.build_kwargs = (dict(build_kwargs) if build_kwargs is not None
                             else default_build_kwargs(name, ref if ref is not None and ref.saved else None,
                                                       self.proxy))
        self.seed = int(seed)
        self.batch_size = int(batch_size) if batch_size is not None else default_batch_size(self.proxy)
        self.cache = cache
        self.device = device
        self._batches: Any = None
        self._loaded = False
        from ghnas.proxies.ensemble import SetScores

        #: the member scores of every architecture seen (canonical strings)
        self.scored = SetScores(self.proxy)
        self._key: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.scored.higher_is_better

    @property
    def is_aggregate(self) -> bool:
        """Whether scores are ranks over the set seen so far (an aggregate proxy)."""
        return self.scored.is_aggregate

    def _device(self):
        from ghnas._util import default_device

        return default_device(self.device)

    def _data(self) -> Any:
        if not self._loaded:
            from ghnas.proxies import load_batches

            # load once; score() hashes the batch, so passing it keeps the cache key equal
            # to that of score(..., data=self.data)
            self._batches = (load_batches(self.data, self.batch_size, self.seed, self._device())
                             if self.proxy.needs_data else None)
            self._loaded = True
        return self._batches

    def table(self, archs: Sequence[str], progress: bool = False):
        """Score ``archs`` (each member only once per architecture); returns the
        :class:`~ghnas.proxies.ScoreTable`, for an aggregate ranked over every
        architecture seen so far."""
        from ghnas.proxies import score

        tab = score(list(archs), self.space, self.proxy, self._data(), self.seed, self.batch_size,
                    self.build_kwargs, progress, cache=self.cache, device=self._device(), into=self.scored)
        if self._key is None:
            self._key = _settings_key(tab.proxy, tab.settings)
        return tab

    def scores(self, archs: Sequence[str], progress: bool = False) -> list[float]:
        """Proxy scores of ``archs`` in order (an aggregate: their ranks now, over the set seen)."""
        return self.table(archs, progress).scores

    def score(self, arch: str) -> float:
        """The proxy score of one architecture (an aggregate: its rank now, over the set seen)."""
        return self.scores([arch])[0]

    def add_table(self, table: Any) -> None:
        """Take the scores of a :class:`~ghnas.proxies.ScoreTable` computed elsewhere with
        the same settings (e.g. by ``score_distributed``) into the set, member by member."""
        keys = [self.space.validate(a) for a in table.archs]
        columns = table.members if self.is_aggregate else {self.scored.names[0]: table.scores}
        lacking = [n for n in self.scored.names if n not in columns]
        if lacking:
            raise ValueError(f"the table has no scores of member(s) {lacking} of {self.scored.label!r}")
        for n in self.scored.names:
            self.scored.add(n, keys, columns[n], [r.seconds for r in table.rows])

    @property
    def key(self) -> str:
        """A short digest of everything that determines the scores (proxy and its
        settings, space, network size, seed, data batch); scores with different keys are
        not comparable."""
        if self._key is None:
            self.table([])
        assert self._key is not None
        return self._key

    def __getstate__(self) -> dict[str, Any]:
        # the data batch is reloaded where the scorer lands (it may be another machine)
        state = dict(self.__dict__)
        state["_batches"], state["_loaded"] = None, False
        return state

    def __repr__(self) -> str:
        return (f"ProxyScorer(space={getattr(self.space, 'name', self.space)!r}, proxy={self.proxy!r}, "
                f"build_kwargs={self.build_kwargs}, seed={self.seed})")


def _settings_key(label: str, settings: dict[str, Any]) -> str:
    text = json.dumps({"proxy": label, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- pools


def architecture_pool(space: Any, spec: Any, seed: int, what: str = "pool", extra: str = "") -> list[str]:
    """A pool of architectures from a size (``int``: that many distinct ones, sampled with
    ``seed``) or a list of architecture strings (validated); ``what`` names the argument
    in errors, ``extra`` lists any further accepted kinds."""
    if isinstance(spec, bool) or not isinstance(spec, (int, list, tuple)):
        raise TypeError(f"{what} must be a pool size (int) or a list of architectures{extra}, "
                        f"got {type(spec).__name__}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"{what}: a pool size must be >= 1, got {spec}")
        return space.sample_many(spec, seed=seed, unique=True)
    if not spec:
        raise ValueError(f"{what} is an empty list; give architectures or a pool size")
    return [space.validate(a) for a in spec]


# --------------------------------------------------------------------------- ranking rule


def quantile_threshold(reference: Sequence[float], quantile: float, higher_is_better: bool) -> float | None:
    """The score that separates the worst ``quantile`` of ``reference`` from the rest.

    Only finite reference values count (degenerate networks score -inf/inf); returns
    ``None`` when there are none. With ``higher_is_better`` this is the ``quantile``-th
    quantile (linear interpolation, as ``numpy.quantile``), otherwise the
    ``1 - quantile``-th.
    """
    import numpy as np

    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
    vals = np.array([float(v) for v in reference if math.isfinite(float(v))], dtype=np.float64)
    if vals.size == 0:
        return None
    q = quantile if higher_is_better else 1.0 - quantile
    return float(np.quantile(vals, q))


def is_below(value: float, threshold: float | None, higher_is_better: bool) -> bool:
    """Whether ``value`` ranks strictly worse than ``threshold`` (NaN always does;
    nothing does when there is no threshold)."""
    if threshold is None:
        return False
    if math.isnan(value):
        return True
    return value < threshold if higher_is_better else value > threshold


# --------------------------------------------------------------------------- warm starts

def resolve_ghn(ghn: Any, device: Any = "cpu"):
    """A ``GHN2`` from a name, a checkpoint path, an instance or a
    :class:`~ghnas.ghn.GHNRef`; names and paths are loaded once per process (trials that
    run in the same worker share it; :meth:`ghnas.ghn.GHNRef.load`)."""
    from ghnas.ghn import GHNRef

    return GHNRef.of(ghn).load(device)


# the one warm start: it loads a named or saved GHN once per process (GHNRef.load), which
# is what trials in a Ray worker or an Optuna objective need
from ghnas.warm import warm_start  # noqa: E402
