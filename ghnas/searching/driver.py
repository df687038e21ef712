""":func:`search`: set up the proxy, run a strategy, rank, optionally train the top k."""
from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

from .._io import RunFolder
from .._util import cpu_threads, default_device, jsonable
from ..errors import DegenerateResultWarning, InputError
from .results import Candidate, SearchResult, _fmt_score
from .setup import ProxySetup, prepare_proxy, proxy_images, train_val_images
from .strategies import check_budget, get_strategy, run_strategy

__all__ = ["search", "RESULT_FILE", "PLOT_FILE", "CACHE_FILE"]

RESULT_FILE = "result.json"
PLOT_FILE = "search.png"
CACHE_FILE = "scores.jsonl"


def search(
    space: Any = "nb201",
    budget: int = 100,
    proxy: Any = None,
    strategy: Any = "random",
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
    val_size: int | None = None,
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
        budget: number of distinct architectures to score (the same for every strategy),
            checked up front against the distinct architectures available.
        proxy: ``None`` (default): ``'ghn'`` when ``ghn`` is given, else ``'zero-shot'``
            (the space's aggregate chosen on data, see :mod:`ghnas.proxies.zero_shot`); ``'ghn'`` (GHN-predicted parameters evaluated on held-out images),
            ``'ghn_acc'``, a baseline (``'synflow'``, ``'naswot'``, ``'params'``, ...), an
            ensemble (``'vote:ghn,synflow'``) or a :class:`~ghnas.proxies.Proxy` instance.
        strategy: ``'random'``, ``'evolution'``, ``'tpe'``, another registered name, or a
            :class:`~ghnas.searching.Strategy` instance (see :mod:`ghnas.searching.strategies`).
        data: images for data-dependent proxies: ``'sample'`` (the CIFAR-10 sample shipped
            with ghnas, offline), ``'cifar10'`` or ``'imagefolder:PATH'`` (their ``val``
            split is used), an ``ImageData``, or ``(x, y)`` batches.
        seed: seeds the strategy, the proxy's data batch and network initialisations.
        train_top_k: train the ``k`` best architectures briefly (:func:`ghnas.train.train`)
            and report their accuracy on validation images (never the test split).
        build_kwargs: network size for the proxy (default: see :mod:`ghnas.searching.setup`).
        ghn: the GHN of a GHN proxy (also inside an ensemble): a registered name, a
            checkpoint path, a ``GHN2`` or a :class:`~ghnas.ghn.GHNRef`; ``None`` uses the
            GHN shipped for the space.
        device: ``'cpu'``, ``'cuda'``, ...; default CUDA when available.
        progress: show a progress bar.
        out_dir: a folder for ``result.json``, ``search.png``, the score cache
            ``scores.jsonl`` and the run record ``run.json``; running the same search into
            it again resumes from the cache, a search with other settings is refused, and
            a lock keeps two runs out of one folder.
        data_root: ``root`` for :func:`ghnas.data.load`.
        batch_size: images in the proxy's batch (default: the proxy's
            ``default_batch_size``, 1,000 for the GHN proxy (500 on DARTS) and 64 otherwise).
        val_size: images in the validation split carved from a named dataset (default
            :func:`ghnas.data.default_val_size`: 5,000 for CIFAR-10, a tenth of a small
            ImageFolder).
        proxy_kwargs: passed to the proxy's constructor (e.g. ``{'metric': 'acc'}``).
        train_data: data for ``train_top_k``: a dataset name (train split for training,
            2,000 val images for measuring) or a ``(train, val)`` pair of ``ImageData``;
            default ``data``.
        train_kwargs: passed to :func:`ghnas.train.train` (default ``steps=100,
            batch_size=64``; give ``epochs`` instead of ``steps`` for longer runs).
        train_build_kwargs: network size for training (default: the proxy's size).
        pool: restrict the search to these architectures (strategies with ``supports_pool``).
        threads: torch CPU threads while scoring on the CPU (default 1: the small proxy
            networks run faster on one thread, especially on a busy machine); ``None``
            keeps torch's setting.
        strategy_kwargs: options of the strategy (its constructor's arguments).

    Returns:
        a :class:`SearchResult`; when the proxy ranked nothing (every score equal or none
        finite) its ``degenerate`` says why, no best architecture is named, and a
        :class:`~ghnas.errors.DegenerateResultWarning` is issued.

    Example:
        >>> import ghnas
        >>> r = ghnas.search('nb201', budget=5, proxy='params', strategy='evolution', progress=False)
        >>> len(r.table), r.best_score == max(c.score for c in r.table)
        (5, True)
    """
    import search_spaces

    t_start = time.perf_counter()
    budget = check_budget(budget)
    if not isinstance(train_top_k, int) or train_top_k < 0:
        raise InputError(f"train_top_k must be a non-negative integer, got {train_top_k!r}")
    strat = get_strategy(strategy, **strategy_kwargs)
    sp = search_spaces.get(space) if isinstance(space, str) else space
    dev = default_device(device)
    if proxy is None:
        proxy = "ghn" if ghn is not None else "zero-shot"
    setup = prepare_proxy(sp, proxy, ghn=ghn, proxy_kwargs=proxy_kwargs, build_kwargs=build_kwargs,
                          batch_size=batch_size, device=dev)
    batches = _proxy_batches(setup, data, data_root, val_size, seed, dev)
    # fail before the search, not after it, when train_top_k cannot run
    train_val = train_val_images(train_data, data, data_root, val_size) if train_top_k else None
    reserved = {"seed", "device", "progress", "eval_data"} & set(train_kwargs or {})
    if reserved:
        raise InputError(f"train_kwargs may not set {sorted(reserved)}; search() sets them")
    tk = dict(train_kwargs or {"steps": 100, "batch_size": 64})
    tbk = dict(train_build_kwargs) if train_build_kwargs is not None else dict(setup.build_kwargs)

    settings = _settings(sp, strat, setup, budget, seed, data, data_root, val_size, pool, train_top_k, tk, tbk)
    run = RunFolder(out_dir, "search", settings) if out_dir is not None else None
    if run is not None:
        run.__enter__()
    try:
        rows, history, proxy_settings = _run_search(sp, strat, setup, batches, budget, seed, dev, pool,
                                                    threads, progress, None if run is None else run.path)
        ranked = sorted(rows, key=lambda c: (-_sign(setup) * c.score if not math.isnan(c.score) else math.inf,
                                             c.order))
        degenerate = _degenerate(ranked)
        if train_top_k:
            _train_top(ranked[:train_top_k], sp, train_val, tbk, tk, int(seed), dev, progress)
        result = _result(sp, strat, setup, budget, seed, ranked, history, degenerate,
                         {**settings, "proxy_settings": proxy_settings, "device": str(dev), "threads": threads},
                         time.perf_counter() - t_start)
        if run is not None:
            result.to_json(run.path / RESULT_FILE)
            result.plot(run.path / PLOT_FILE)
    finally:
        if run is not None:
            run.__exit__(None, None, None)
    return result


# --------------------------------------------------------------------------- stages
def _sign(setup: ProxySetup) -> float:
    return 1.0 if setup.proxy.higher_is_better else -1.0


def _proxy_batches(setup: ProxySetup, data: Any, data_root: Any, val_size: int | None, seed: int, dev):
    """The proxy's image batch (``None`` for data-free proxies); also sets ``num_classes``."""
    from ..proxies import load_batches

    if not setup.proxy.needs_data:
        return None
    images = proxy_images(data, data_root, val_size)
    classes = getattr(images, "classes", None)
    if classes is not None and len(classes) != 10 and "num_classes" not in setup.build_kwargs:
        setup.build_kwargs["num_classes"] = len(classes)
    return load_batches(images, setup.batch_size, int(seed), dev)


def _settings(sp, strat, setup: ProxySetup, budget, seed, data, data_root, val_size, pool, train_top_k,
              tk, tbk) -> dict[str, Any]:
    """What determines the result: recorded in ``result.json`` and checked by :class:`RunFolder`."""
    return jsonable(dict(
        space=getattr(sp, "name", type(sp).__name__), strategy=strat.name, strategy_kwargs=strat.options(),
        proxy=setup.label, budget=int(budget), seed=int(seed),
        data=data if isinstance(data, str) else getattr(data, "source", type(data).__name__),
        data_root=None if data_root is None else str(data_root), val_size=val_size,
        batch_size=setup.batch_size, build_kwargs=setup.build_kwargs, **setup.settings,
        pool=None if pool is None else len(pool),
        train_top_k=train_top_k, train_kwargs=tk if train_top_k else None,
        train_build_kwargs=tbk if train_top_k else None))


def _run_search(sp, strat, setup: ProxySetup, batches, budget: int, seed: int, dev, pool, threads,
                progress: bool, out: Path | None):
    """Run the strategy with the proxy as its scoring function; rows in evaluation order.

    Every score goes into one :class:`~ghnas.proxies.ensemble.SetScores`, so an aggregate
    proxy ranks each new architecture among everything scored so far, the strategy
    compares by those current values, and the rows returned carry the final aggregate
    over the whole set (``history``: the best of those final values after each evaluation).
    """
    from tqdm.auto import tqdm

    from ..proxies import score as score_archs
    from ..proxies.ensemble import SetScores

    cache = out / CACHE_FILE if out is not None else None
    bar = tqdm(total=int(budget), desc=f"search {getattr(sp, 'name', '')} ({strat.name}, {setup.label})",
               disable=not progress, dynamic_ncols=True)
    scored = SetScores(setup.proxy)
    rows: list[Candidate] = []
    keys: dict[str, str] = {}  # evaluated string -> canonical string
    proxy_settings: dict[str, Any] = {}
    sign = _sign(setup)
    best: list[float] = []

    def evaluate(archs: Sequence[str]) -> list[float]:
        table = score_archs(list(archs), sp, setup.proxy, batches, int(seed), setup.batch_size or 64,
                            setup.build_kwargs, False, cache=cache, device=dev, into=scored)
        proxy_settings.update(table.settings.get("proxy") or {})
        for a, r in zip(archs, table.rows):
            keys[a] = sp.validate(r.arch)
            rows.append(Candidate(arch=keys[a], score=float(r.score), seconds=float(r.seconds),
                                  order=len(rows), cached=bool(r.cached)))
            if not best or sign * r.score > sign * best[0]:
                best[:] = [float(r.score)]
        bar.update(len(table.rows))
        bar.set_postfix(best=_fmt_score(best[0]))
        return table.scores

    def current(archs: Sequence[str]) -> list[float]:
        return scored.aggregate([keys[a] for a in archs])

    try:
        with cpu_threads(threads, dev):
            run_strategy(strat, sp, int(budget), evaluate, seed=int(seed),
                         higher_is_better=setup.proxy.higher_is_better, pool=pool,
                         current=current if scored.is_aggregate else None)
    finally:
        bar.close()
    # the final table: every row re-ranked over the whole set (a single proxy's scores stay as they are)
    final = scored.aggregate([c.arch for c in rows])
    history: list[float] = []
    for c, v in zip(rows, final):
        c.score = float(v)
        if scored.is_aggregate:
            c.members = {n: scored.column(n, [c.arch])[0] for n in scored.names}
        history.append(c.score if not history or sign * c.score > sign * history[-1] else history[-1])
    return rows, history, proxy_settings


def _degenerate(ranked: list[Candidate]) -> str | None:
    from ..proxies.scoring import degenerate_reason

    reason = degenerate_reason([c.score for c in ranked])
    if reason is not None:
        warnings.warn(f"no best architecture: {reason}", DegenerateResultWarning, stacklevel=3)
    return reason


def _result(sp, strat, setup: ProxySetup, budget, seed, ranked, history, degenerate, settings,
            seconds: float) -> SearchResult:
    import torch

    from .. import __version__

    settings = {**settings, "ghnas": __version__, "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return SearchResult(
        space=getattr(sp, "name", type(sp).__name__), strategy=strat.name, proxy=setup.label,
        higher_is_better=setup.proxy.higher_is_better, budget=int(budget), seed=int(seed),
        best_arch=None if degenerate else ranked[0].arch,
        best_score=math.nan if degenerate else ranked[0].score,
        table=ranked, history=history, settings=jsonable(settings), seconds=seconds,
        degenerate=degenerate, _ghn=setup.ghn_net)


def _train_top(cands: Sequence[Candidate], sp: Any, data: tuple[Any, Any], build_kwargs: dict[str, Any],
               train_kwargs: dict[str, Any], seed: int, device, progress: bool) -> None:
    """Train each candidate from a seeded random init; record its validation accuracy."""
    import torch
    from tqdm.auto import tqdm

    from ..proxies import arch_seed
    from ..train import evaluate, train

    train_data, val_data = data
    if "steps" not in train_kwargs and "epochs" not in train_kwargs:
        train_kwargs = {**train_kwargs, "steps": 100}
    if device.type != "cpu":
        train_data, val_data = train_data.to(device), val_data.to(device)
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
