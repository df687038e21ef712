"""Architecture search guided by a zero-cost proxy; :func:`ghnas.search` is :func:`search`.

A search evaluates exactly ``budget`` distinct architectures (distinct under the space's
:meth:`~search_spaces.SearchSpace.hash`) with a proxy and returns a :class:`SearchResult`.
One home per part:

* :mod:`.strategies`: which architectures to score (:class:`Strategy` and the built-in
  :class:`RandomSearch`, :class:`RegularizedEvolution`, :class:`TPESearch`; a user adds
  one with :func:`register_strategy`);
* :mod:`.setup`: the proxy, its GHN, network sizes and image batch;
* :mod:`.results`: :class:`SearchResult` and :class:`Candidate`;
* :mod:`.driver`: :func:`search`, the short driver that joins them.

Resuming
--------
With ``out_dir`` (a folder), every score is appended to ``out_dir/scores.jsonl`` as soon
as it is known (the ``cache`` of :func:`ghnas.proxies.score`), the run's settings are
recorded in ``out_dir/run.json``, and ``result.json`` plus ``search.png`` are written
atomically at the end. The strategies are deterministic for a given seed, so running the
same search again after an interruption replays the trajectory from the cache and only
scores what is missing; a search with other settings into the same folder is refused,
and a lock keeps two concurrent runs out of it.

Example::

    >>> import ghnas
    >>> result = ghnas.search('nb201', budget=100, ghn='runs/meta/ghn.pt')   # doctest: +SKIP
    >>> result.best_arch, result.best_score                                   # doctest: +SKIP
    >>> print(result.summary(10))                                              # doctest: +SKIP
    >>> model = result.build(C=16, N=5)    # GHN-initialised, ready to fine-tune  # doctest: +SKIP
"""
from __future__ import annotations

from .driver import CACHE_FILE, PLOT_FILE, RESULT_FILE, search
from .results import Candidate, SearchResult
from .setup import (PROXY_BUILD_KWARGS, ProxySetup, ghn_build_kwargs, prepare_proxy, proxy_build_kwargs,
                    proxy_images)
from .strategies import (STRATEGIES, RandomSearch, RegularizedEvolution, SearchState, Strategy, TPESearch,
                         available_strategies, get_strategy, register_strategy, run_strategy)

__all__ = [
    "search", "SearchResult", "Candidate",
    "Strategy", "SearchState", "RandomSearch", "RegularizedEvolution", "TPESearch",
    "register_strategy", "get_strategy", "available_strategies", "run_strategy", "STRATEGIES",
    "PROXY_BUILD_KWARGS", "proxy_build_kwargs", "ghn_build_kwargs", "prepare_proxy", "ProxySetup",
    "proxy_images", "RESULT_FILE", "PLOT_FILE", "CACHE_FILE",
]
