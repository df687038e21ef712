"""Zero-cost proxies: score untrained networks to rank architectures.

Everything goes through one function, :func:`score`, and one registry::

    >>> from ghnas.proxies import available_proxies, score
    >>> 'synflow' in available_proxies()
    True
    >>> table = score(['|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|'],
    ...               space='nb201', proxy='flops', progress=False)
    >>> table.ranked()[0].arch
    '|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|'

Baselines (one module per family): ``synflow`` (:mod:`.synflow`), ``naswot`` and
``jacob_cov`` (:mod:`.naswot`), ``snip`` (:mod:`.snip`), ``grad_norm``
(:mod:`.grad_norm`), ``grasp`` (:mod:`.grasp`), ``fisher`` (:mod:`.fisher`),
``params`` and ``flops`` (:mod:`.size`); rank ensembles in :mod:`.ensemble`, where
:class:`SetScores` ranks an aggregate over every architecture scored so far (the set
that :func:`score` with ``into=``, the searches and the integrations rank over). Post-2021: ``meco`` (:mod:`.meco`), ``zico``
(:mod:`.zico`), ``swap`` (:mod:`.swap`), AZ-NAS's ``az_expressivity``,
``az_progressivity``, ``az_trainability``, ``az_complexity`` and their log-rank aggregate
``az_nas`` (:mod:`.az_nas`), TE-NAS's ``ntk_cond``, ``linear_regions`` and ``te_nas``
(:mod:`.te_nas`), ``zen`` (:mod:`.zen`), and NAS-Bench-Suite-Zero's ``l2_norm``,
``plain``, ``epe_nas``. The GHN
proxy (``'ghn'``) lives in :mod:`.ghn` and is imported when first asked for.
A new proxy subclasses :class:`Proxy` and registers itself with :func:`register_proxy`.
"""
from __future__ import annotations

from .base import Proxy, arch_seed, available_proxies, get_proxy, register_proxy
from .scoring import ScoreRow, ScoreTable, load_batches, score

# importing the baseline modules registers them
from . import size, synflow, naswot, snip, grad_norm, grasp, fisher  # noqa: E402,F401
from .ensemble import Ensemble, SetScores, rank_aggregate  # noqa: E402
# post-2021 proxies (one module per family); az_nas and te_nas are set-level ensembles
from . import l2_norm, plain, epe_nas, meco, zico, swap, az_nas, te_nas, zen  # noqa: E402,F401

__all__ = [
    "Proxy",
    "register_proxy",
    "get_proxy",
    "available_proxies",
    "arch_seed",
    "score",
    "ScoreTable",
    "ScoreRow",
    "load_batches",
    "Ensemble",
    "SetScores",
    "rank_aggregate",
]
