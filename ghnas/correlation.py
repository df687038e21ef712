"""Ground truth, ranking-correlation statistics and plots for zero-cost proxies.

A proxy is judged by how well its scores rank architectures compared with their true
(trained) accuracy. This module reads the ground truth, computes Kendall's tau-b,
Spearman's rho and top-k precision with percentile-bootstrap confidence intervals, and
draws score-vs-accuracy scatter plots.

Example::

    >>> from ghnas.correlation import correlate
    >>> truth = {f"a{i}": float(i) for i in range(20)}
    >>> scores = {"good": {a: 2 * v for a, v in truth.items()},
    ...           "bad": {a: -v for a, v in truth.items()}}
    >>> report = correlate(scores, truth, n_boot=200)
    >>> round(report["good"].kendall_tau.estimate, 3), round(report["bad"].kendall_tau.estimate, 3)
    (1.0, -1.0)
    >>> print(report.table())  # doctest: +SKIP

Non-finite scores (the NaN policy)
----------------------------------
A proxy that fails on an architecture (NaN, or an overflow to +-inf) must neither be
dropped silently nor poison the statistic. Every statistic takes ``nan_policy``:

* ``"last"`` (default): NaN, +inf and -inf are all treated as failed evaluations and
  ranked below every finite score, tied with each other. A failing proxy is therefore
  penalised, never rewarded, and the number of failures is reported (``n_nonfinite``).
* ``"omit"``: architectures with a non-finite score are left out of that statistic.
* ``"raise"``: a non-finite score raises ``ValueError`` naming the architectures.

The ground truth must always be finite; a non-finite accuracy raises ``ValueError``.

Ties are handled as ties everywhere: Kendall's tau is tau-b, Spearman's rho uses
average ranks, and top-k precision gives tied items at the cut-off a fractional share of
the top-k (the expected precision under a random tie-break), so a constant proxy gets
the chance level ``k / n`` instead of a value that depends on the input order. A
statistic that is undefined (a constant input to tau or rho) is NaN.
"""
from __future__ import annotations

import csv
import functools
import io
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from ghnas._io import atomic_savefig, atomic_write_text
from ghnas._util import degenerate_reason, jsonable

__all__ = [
    "read_truth",
    "truth_columns",
    "read_proxy_columns",
    "kendall_tau",
    "spearman_rho",
    "top_k_precision",
    "bootstrap_ci",
    "Interval",
    "ProxyCorrelation",
    "CorrelationReport",
    "correlate",
    "scatter_plots",
]

NAN_POLICIES = ("last", "omit", "raise")

# scores/truth given either as {arch: value} mappings (aligned by architecture) or as two
# equally long sequences (aligned by position)
ScoresLike = Union[Mapping[str, float], Sequence[float], np.ndarray]


# ----------------------------------------------------------------------------------------
# Reading ground truth and reference proxy values
# ----------------------------------------------------------------------------------------

def _resolve_space(space: Any):
    if space is None or hasattr(space, "validate"):
        return space
    if isinstance(space, str):
        import search_spaces  # lazy: only needed when validating architecture strings

        return search_spaces.get(space)
    raise TypeError(
        f"space must be None, a space name such as 'nb201', or an object with a "
        f".validate(arch) method; got {type(space).__name__}"
    )


def _read_table(path: str | os.PathLike, needed: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV into (header, [(line number, row dict)]), checking ``needed`` columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file {str(path)!r} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}, line {line}: byte {data[e.start:e.start + 1]!r} is not UTF-8 "
                         f"({e.reason}); save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for raw in reader:
            if not raw or all(not c.strip() for c in raw):
                continue  # blank lines carry no data
            if header is None:
                header = [c.strip() for c in raw]
                missing = [c for c in needed if c not in header]
                if missing:
                    raise ValueError(
                        f"{path}: missing column(s) {missing}; the file has columns {header}"
                    )
                continue
            if len(raw) != len(header):
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected {len(header)} fields "
                    f"(columns {header}) but found {len(raw)}"
                )
            rows.append((reader.line_num, dict(zip(header, raw))))
    except csv.Error as e:  # e.g. a field over csv's size limit
        raise ValueError(f"{path}, line {reader.line_num}: not readable as CSV ({e})") from None
    if header is None:
        raise ValueError(f"{path}: the file is empty (expected a header with columns {list(needed)})")
    if not rows:
        raise ValueError(f"{path}: the file has a header {header} but no data rows")
    return header, rows


def _short(text: str, limit: int = 100) -> str:
    """A cell quoted for an error message: at most ``limit`` characters of it."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _parse_float(text: str, path: Path, line: int, col: str, header: list[str], *, finite: bool) -> float:
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        value = None
    if value is None or (finite and not math.isfinite(value)):
        what = "a finite number" if finite else "a number"
        raise ValueError(
            f"{path}, line {line}, column {col!r}: bad value {_short(text)} (expected {what}; "
            f"the file has columns {header})"
        )
    return value


def _canonical_arch(arch: str, space, path: Path, line: int, col: str) -> str:
    arch = arch.strip()
    if not arch:
        raise ValueError(f"{path}, line {line}, column {col!r}: empty architecture string")
    if space is None:
        return arch
    try:
        return space.validate(arch)
    except ValueError as err:  # search_spaces.base.InvalidArchitecture is a ValueError
        name = getattr(space, "name", type(space).__name__)
        raise ValueError(
            f"{path}, line {line}, column {col!r}: {_short(arch)} is not a valid {name} "
            f"architecture: {err}"
        ) from err


#: column names recognised when none is given, in order of preference: the NAS-Bench-201
#: dev file has ``arch`` / ``test_acc`` (and ``valid_acc``), the NAS-Bench-301 one
#: ``genotype`` / ``val_acc``
ARCH_COLUMNS = ("arch", "genotype")
ACC_COLUMNS = ("test_acc", "val_acc", "valid_acc")


def truth_columns(path: str | os.PathLike, arch_col: str | None = None,
                  acc_col: str | None = None) -> tuple[str, str]:
    """The (architecture, accuracy) columns of a ground-truth CSV.

    A name given is kept as it is (:func:`read_truth` checks it); a ``None`` is replaced by
    the first of :data:`ARCH_COLUMNS` / :data:`ACC_COLUMNS` in the file's header, so both
    dev files work without naming their columns. ``ValueError`` names the header when
    none is found.
    """
    if arch_col is not None and acc_col is not None:
        return arch_col, acc_col
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ground-truth file {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = [c.strip() for c in next(csv.reader(fh), [])]

    def pick(given: str | None, known: Sequence[str], what: str) -> str:
        if given is not None:
            return given
        for c in known:
            if c in header:
                return c
        raise ValueError(f"{path}: no {what} column found (looked for {list(known)}); the file has "
                         f"columns {header}: name it explicitly")

    return pick(arch_col, ARCH_COLUMNS, "architecture"), pick(acc_col, ACC_COLUMNS, "accuracy")


def read_truth(
    path: str | os.PathLike,
    arch_col: str | None = "arch",
    acc_col: str | None = "test_acc",
    space: Any = None,
) -> dict[str, float]:
    """Read ground truth ``{architecture: accuracy}`` from a CSV file.

    Defaults match the NAS-Bench-201 development file (columns ``arch``, ``test_acc``);
    other benchmark files are read by naming their two columns, or by passing ``None`` for
    a column to take the first known name in the header (:func:`truth_columns`: ``arch``
    or ``genotype``; ``test_acc``, ``val_acc`` or ``valid_acc``). With ``space`` (a
    ``search_spaces`` space object, or a name for ``search_spaces.get``) every
    architecture is validated and stored in its canonical form.

    Raises ``ValueError`` (naming the file, line, column and value) for a missing
    column, a non-numeric or non-finite accuracy, an empty file, an invalid
    architecture, or one architecture listed twice with different accuracies (exact
    repeats are merged).

    Example::

        >>> truth = read_truth("../shared/data/nb201/cifar10_dev.csv")  # doctest: +SKIP
        >>> len(truth)  # doctest: +SKIP
        491
    """
    path = Path(path)
    arch_col, acc_col = truth_columns(path, arch_col, acc_col)
    space = _resolve_space(space)
    header, rows = _read_table(path, [arch_col, acc_col])
    truth: dict[str, float] = {}
    first_line: dict[str, int] = {}
    for line, row in rows:
        arch = _canonical_arch(row[arch_col], space, path, line, arch_col)
        acc = _parse_float(row[acc_col], path, line, acc_col, header, finite=True)
        if arch in truth:
            if truth[arch] != acc:
                raise ValueError(
                    f"{path}, line {line}: architecture {arch!r} is listed again with "
                    f"{acc_col}={acc!r}, but line {first_line[arch]} gave {truth[arch]!r}"
                )
            continue
        truth[arch] = acc
        first_line[arch] = line
    return truth


def read_proxy_columns(
    path: str | os.PathLike,
    prefix: str = "naslib_",
    arch_col: str = "arch",
    space: Any = None,
) -> dict[str, dict[str, float]]:
    """Read reference proxy values: every column named ``<prefix><proxy>``.

    Returns ``{proxy: {architecture: score}}`` with the prefix stripped from the proxy
    names, ready for :func:`correlate`. Empty cells and ``nan``/``inf`` are kept as
    non-finite scores (a failed evaluation, handled by the NaN policy); any other
    non-numeric text raises ``ValueError``.

    Example::

        >>> ref = read_proxy_columns("../shared/data/nb201/cifar10_dev.csv")  # doctest: +SKIP
        >>> sorted(ref)[:3]  # doctest: +SKIP
        ['epe_nas', 'fisher', 'flops']
    """
    path = Path(path)
    space = _resolve_space(space)
    header, rows = _read_table(path, [arch_col])
    cols = [c for c in header if c.startswith(prefix) and c != arch_col and len(c) > len(prefix)]
    if not cols:
        raise ValueError(f"{path}: no column starts with {prefix!r}; the file has columns {header}")
    out: dict[str, dict[str, float]] = {c[len(prefix):]: {} for c in cols}
    first_line: dict[str, int] = {}
    for line, row in rows:
        arch = _canonical_arch(row[arch_col], space, path, line, arch_col)
        for c in cols:
            text = row[c]
            value = math.nan if not text.strip() else _parse_float(text, path, line, c, header, finite=False)
            proxy = c[len(prefix):]
            old = out[proxy].get(arch)
            if old is not None and not (old == value or (math.isnan(old) and math.isnan(value))):
                raise ValueError(
                    f"{path}, line {line}: architecture {arch!r} is listed again with "
                    f"{c}={value!r}, but line {first_line[arch]} gave {old!r}"
                )
            out[proxy][arch] = value
        first_line.setdefault(arch, line)
    return out


# ----------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------

def _align(scores: ScoresLike, truth: ScoresLike) -> tuple[list[str] | None, np.ndarray, np.ndarray]:
    if isinstance(scores, Mapping) != isinstance(truth, Mapping):
        raise TypeError(
            "scores and truth must both be {arch: value} mappings or both be sequences; "
            f"got {type(scores).__name__} and {type(truth).__name__}"
        )
    if isinstance(scores, Mapping):
        keys = sorted(set(scores) & set(truth))
        x = np.array([scores[k] for k in keys], dtype=float)
        y = np.array([truth[k] for k in keys], dtype=float)
        return keys, x, y
    x = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(truth, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"scores and truth have different lengths: {x.size} and {y.size}")
    return None, x, y


def _prepare(scores: ScoresLike, truth: ScoresLike, nan_policy: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Align, check the truth, apply the NaN policy. Returns (x, y, n_nonfinite)."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"unknown nan_policy {nan_policy!r}; valid: {list(NAN_POLICIES)}")
    keys, x, y = _align(scores, truth)
    bad_y = ~np.isfinite(y)
    if bad_y.any():
        where = [keys[i] for i in np.flatnonzero(bad_y)[:3]] if keys else np.flatnonzero(bad_y)[:3].tolist()
        raise ValueError(f"truth has {int(bad_y.sum())} non-finite value(s) (first at {where}); accuracies must be finite")
    bad = ~np.isfinite(x)
    n_bad = int(bad.sum())
    if n_bad:
        if nan_policy == "raise":
            where = [keys[i] for i in np.flatnonzero(bad)[:3]] if keys else np.flatnonzero(bad)[:3].tolist()
            raise ValueError(
                f"{n_bad} non-finite score(s) (first at {where}, values {x[bad][:3].tolist()}); "
                f"use nan_policy='last' to rank them last or 'omit' to drop them"
            )
        if nan_policy == "omit":
            x, y = x[~bad], y[~bad]
        else:  # "last": all failures tie below every finite score
            x = np.where(bad, -np.inf, x)
    return x, y, n_bad


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    # ranks are finite even where v holds -inf, and rank statistics are unchanged by them
    return rankdata(v, method="average")


def _quiet_scipy(fn: Callable[..., Any], *args: Any) -> float:
    from scipy.stats import ConstantInputWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(fn(*args)[0])


def kendall_tau(scores: ScoresLike, truth: ScoresLike, *, nan_policy: str = "last") -> float:
    """Kendall's tau-b between proxy scores and true accuracies (ties handled).

    ``scores`` and ``truth`` are both ``{arch: value}`` mappings (only shared
    architectures count) or two equally long sequences. NaN if fewer than two items
    or either side is constant. See the module docstring for ``nan_policy``.

    >>> round(kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]), 4)  # one discordant pair of six
    0.6667
    """
    from scipy.stats import kendalltau

    x, y, _ = _prepare(scores, truth, nan_policy)
    if x.size < 2:
        return math.nan
    return _quiet_scipy(kendalltau, _ranks(x), y)


def spearman_rho(scores: ScoresLike, truth: ScoresLike, *, nan_policy: str = "last") -> float:
    """Spearman's rank correlation (average ranks for ties); inputs as :func:`kendall_tau`.

    >>> round(spearman_rho([1, 2, 3, 4], [10, 20, 40, 30]), 4)
    0.8
    """
    from scipy.stats import spearmanr

    x, y, _ = _prepare(scores, truth, nan_policy)
    if x.size < 2:
        return math.nan
    return _quiet_scipy(spearmanr, _ranks(x), y)


def _top_k(n: int, frac: float, k: int | None) -> int:
    if k is None:
        if not 0 < frac <= 1:
            raise ValueError(f"frac must be in (0, 1], got {frac!r}")
        k = int(math.floor(frac * n + 0.5))  # round half up: the top 10% of 45 is 5
    if k < 1 and n > 0:
        k = 1
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of architectures ({n}), got {k}")
    return k


def top_k_precision(
    scores: ScoresLike,
    truth: ScoresLike,
    frac: float = 0.1,
    *,
    k: int | None = None,
    nan_policy: str = "last",
) -> float:
    """Share of the true top-k architectures found in the proxy's top-k.

    ``k = round(frac * n)`` (at least 1) unless ``k`` is given. Items tied at the
    cut-off get a fractional share, so the result is the expected precision under a
    random tie-break.

    >>> top_k_precision([4, 3, 2, 1], [40, 30, 20, 10], frac=0.5)
    1.0
    >>> top_k_precision([4, 3, 2, 1], [10, 20, 30, 40], frac=0.5)
    0.0
    """
    x, y, _ = _prepare(scores, truth, nan_policy)
    kk = _top_k(x.size, frac, k)
    return float(_topk_weighted(_ranks(x), y, np.ones((1, x.size)), kk)[0])


# --- Weighted (bootstrap) versions -------------------------------------------------------
# A bootstrap resample is an integer count vector W over the n original architectures
# (each row sums to n). Computing the statistics from counts lets all resamples be
# evaluated at once with numpy, and gives exactly what scipy returns on the resampled
# arrays (copies of one architecture are ties in both variables).

def _groups(v: np.ndarray, descending: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, start of each tie group in that order, and each item's group index."""
    order = np.argsort(-v if descending else v, kind="stable")
    vs = v[order]
    new = np.ones(v.size, dtype=bool)
    new[1:] = vs[1:] != vs[:-1]
    starts = np.flatnonzero(new)
    gid_sorted = np.cumsum(new) - 1
    inv = np.empty(v.size, dtype=np.int64)
    inv[order] = gid_sorted
    return order, starts, inv


def _group_weights(W: np.ndarray, v: np.ndarray, descending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    order, starts, inv = _groups(v, descending)
    return np.add.reduceat(W[:, order], starts, axis=1), inv


def _spearman_weighted(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    def ranks(v):
        Wg, inv = _group_weights(W, v)
        below = np.cumsum(Wg, axis=1) - Wg
        return (below + (Wg + 1) / 2)[:, inv]

    m = W.sum(axis=1, keepdims=True)
    rx, ry = ranks(x), ranks(y)
    rx = rx - (W * rx).sum(axis=1, keepdims=True) / m
    ry = ry - (W * ry).sum(axis=1, keepdims=True) / m
    cov = (W * rx * ry).sum(axis=1)
    var = (W * rx * rx).sum(axis=1) * (W * ry * ry).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = cov / np.sqrt(var)
    rho[var <= 1e-12 * np.maximum(1.0, m[:, 0] ** 4)] = np.nan
    return np.clip(rho, -1.0, 1.0)


# Above this many architectures the n x n sign matrix of the vectorised Kendall tau gets
# too large; resamples are then evaluated one at a time with scipy.
_KENDALL_DENSE_MAX = 4000


def _kendall_weighted(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    n = x.size
    if n > _KENDALL_DENSE_MAX:
        from scipy.stats import kendalltau

        out = np.empty(W.shape[0])
        for b, w in enumerate(W.astype(np.int64)):
            idx = np.repeat(np.arange(n), w)
            out[b] = _quiet_scipy(kendalltau, x[idx], y[idx])
        return out
    # concordance sign of every pair, built from int8 comparisons to keep the n x n
    # temporaries small; float32 is exact for the products since |W @ M| <= n < 2**24
    def sign(v):
        return np.greater(v[:, None], v[None, :]).astype(np.int8) - np.less(v[:, None], v[None, :])

    M = (sign(x) * sign(y)).astype(np.float32)
    m = W.sum(axis=1)
    n0 = m * (m - 1) / 2
    Wgx, _ = _group_weights(W, x)
    Wgy, _ = _group_weights(W, y)
    n1 = ((Wgx ** 2).sum(axis=1) - m) / 2  # pairs tied in x (copies included)
    n2 = ((Wgy ** 2).sum(axis=1) - m) / 2
    out = np.empty(W.shape[0])
    chunk = max(1, 2**22 // max(n, 1))
    Wf = W.astype(np.float32)
    for s in range(0, W.shape[0], chunk):
        wb = Wf[s:s + chunk]
        out[s:s + chunk] = 0.5 * ((wb @ M).astype(np.float64) * W[s:s + chunk]).sum(axis=1)
    denom = (n0 - n1) * (n0 - n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = out / np.sqrt(denom)
    tau[denom <= 0] = np.nan
    return np.clip(tau, -1.0, 1.0)


def _topk_weighted(x: np.ndarray, y: np.ndarray, W: np.ndarray, k: int) -> np.ndarray:
    def share(v):
        Wg, inv = _group_weights(W, v, descending=True)
        above = np.cumsum(Wg, axis=1) - Wg
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(Wg > 0, np.clip((k - above) / np.where(Wg > 0, Wg, 1), 0.0, 1.0), 0.0)
        return frac[:, inv]

    return (W * share(x) * share(y)).sum(axis=1) / k


# ----------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------

@dataclass
class Interval:
    """A point estimate with a percentile-bootstrap confidence interval.

    ``n_valid`` counts the resamples where the statistic was defined (a resample can be
    constant); the interval is taken over those.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_valid: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _weighted_impl(stat_fn: Callable[..., float]):
    """The vectorised count-weighted twin of one of this module's statistics, or None."""
    kwargs: dict[str, Any] = {}
    fn = stat_fn
    if isinstance(stat_fn, functools.partial):
        fn, kwargs = stat_fn.func, dict(stat_fn.keywords)
        if stat_fn.args:
            return None
    if fn is kendall_tau and set(kwargs) <= {"nan_policy"}:
        return lambda x, y, W: _kendall_weighted(x, y, W)
    if fn is spearman_rho and set(kwargs) <= {"nan_policy"}:
        return lambda x, y, W: _spearman_weighted(x, y, W)
    if fn is top_k_precision and set(kwargs) <= {"frac", "k", "nan_policy"}:
        frac, k = kwargs.get("frac", 0.1), kwargs.get("k")
        return lambda x, y, W: _topk_weighted(x, y, W, _top_k(x.size, frac, k))
    return None


def bootstrap_ci(
    stat_fn: Callable[..., float],
    scores: ScoresLike,
    truth: ScoresLike,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    *,
    nan_policy: str = "last",
) -> Interval:
    """Percentile-bootstrap confidence interval of ``stat_fn(scores, truth)``.

    Architectures are resampled with replacement ``n_boot`` times using
    ``numpy.random.default_rng(seed)``, so the result is deterministic for a seed. For
    :func:`kendall_tau`, :func:`spearman_rho` and :func:`top_k_precision` (also wrapped
    in ``functools.partial``) all resamples are evaluated at once with numpy; any other
    ``stat_fn(x, y) -> float`` is called once per resample on the aligned arrays (after
    the NaN policy, so failed scores arrive as ``-inf`` under ``"last"``). The
    ``nan_policy`` given here is the one applied, whatever ``stat_fn`` is bound to.

    >>> ci = bootstrap_ci(kendall_tau, list(range(30)), [v % 7 for v in range(30)], n_boot=200)
    >>> ci.low <= ci.estimate <= ci.high
    True
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot!r}")
    x, y, _ = _prepare(scores, truth, nan_policy)
    n = x.size
    if n < 2:
        raise ValueError(f"need at least 2 architectures to bootstrap, got {n}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    fast = _weighted_impl(stat_fn)
    if fast is not None:
        rx = _ranks(x)
        estimate = float(fast(rx, y, np.ones((1, n)))[0])
        # resamples in blocks of about 2M counts, so memory stays bounded for large n
        block = max(1, 2**21 // n)
        parts = []
        for s in range(0, n_boot, block):
            rows = idx[s:s + block]
            W = np.bincount((rows + n * np.arange(len(rows))[:, None]).ravel(), minlength=len(rows) * n)
            parts.append(fast(rx, y, W.reshape(len(rows), n).astype(np.float64)))
        stats = np.concatenate(parts)
    else:
        estimate = float(stat_fn(x, y))
        stats = np.array([float(stat_fn(x[i], y[i])) for i in idx])
    valid = stats[np.isfinite(stats)]
    if valid.size == 0:
        low = high = math.nan
    else:
        alpha = (1 - level) / 2
        low, high = (float(v) for v in np.quantile(valid, [alpha, 1 - alpha]))
    return Interval(estimate, low, high, level, n_boot, int(valid.size))


# ----------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------

def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf by None so the output is strict JSON."""
    return jsonable(obj, nonfinite="null")


@dataclass
class ProxyCorrelation:
    """Ranking quality of one proxy against the ground truth."""

    proxy: str
    n: int  # architectures scored by the proxy and present in the truth
    n_nonfinite: int  # of those, how many got NaN/inf (see the NaN policy)
    kendall_tau: Interval
    spearman_rho: Interval
    top_k_precision: Interval
    top_k: int
    seconds_per_arch: float | None = None
    #: why the proxy ranked nothing (every score equal, or none finite), else None; its
    #: statistics are then undefined or chance level, not evidence
    degenerate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CorrelationReport:
    """Per-proxy correlations; ``report['synflow']`` gives one :class:`ProxyCorrelation`."""

    proxies: list[ProxyCorrelation]
    n_truth: int
    n_boot: int
    level: float
    seed: int
    top_frac: float
    nan_policy: str

    def __getitem__(self, proxy: str) -> ProxyCorrelation:
        for p in self.proxies:
            if p.proxy == proxy:
                return p
        raise KeyError(f"no proxy {proxy!r} in the report; proxies: {[p.proxy for p in self.proxies]}")

    def sorted(self) -> list[ProxyCorrelation]:
        """Proxies by Kendall tau, best first (undefined tau last)."""
        def key(p: ProxyCorrelation):
            t = p.kendall_tau.estimate
            return (not math.isfinite(t), -t if math.isfinite(t) else 0.0, p.proxy)

        return sorted(self.proxies, key=key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Strict JSON (undefined values as null); written atomically when ``path`` is given."""
        text = json.dumps(_json_safe(self.to_dict()), indent=2, allow_nan=False) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def table(self) -> str:
        """A markdown table, best Kendall tau first."""
        pct = int(round(self.level * 100))
        head = (
            f"| proxy | n | Kendall tau [{pct}% CI] | Spearman rho [{pct}% CI] | "
            f"top-{self.top_frac:.0%} precision [{pct}% CI] | s/arch | non-finite |"
        )
        lines = [head, "|" + "---|" * 7]

        def fmt(v: float | None, spec: str = ".3f") -> str:
            return "n/a" if v is None or not math.isfinite(v) else format(v, spec)

        for p in self.sorted():
            cells = [p.proxy, str(p.n)]
            for iv in (p.kendall_tau, p.spearman_rho, p.top_k_precision):
                cells.append(f"{fmt(iv.estimate)} [{fmt(iv.low)}, {fmt(iv.high)}]")
            cells.append(fmt(p.seconds_per_arch, ".4g"))
            cells.append(str(p.n_nonfinite))
            lines.append("| " + " | ".join(cells) + " |")
        notes = [f"- {p.proxy} ranked nothing: {p.degenerate}" for p in self.sorted() if p.degenerate]
        return "\n".join(lines + ([""] + notes if notes else []))


def correlate(
    scores: Mapping[str, Mapping[str, float]],
    truth: Mapping[str, float],
    seconds: Mapping[str, float] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    top_frac: float = 0.1,
    *,
    level: float = 0.95,
    nan_policy: str = "last",
    min_n: int = 5,
) -> CorrelationReport:
    """Rank correlation of every proxy with the ground truth, with bootstrap CIs.

    ``scores`` maps proxy name -> ``{arch: score}`` (higher = predicted better);
    ``truth`` maps arch -> accuracy (e.g. from :func:`read_truth`); ``seconds``
    optionally maps proxy name -> seconds spent per architecture. Only architectures
    present in both a proxy's scores and the truth count; fewer than ``min_n`` raises
    ``ValueError``. All statistics of one proxy use the same bootstrap resamples.

    >>> truth = {f"a{i}": float(i) for i in range(10)}
    >>> r = correlate({"p": dict(truth)}, truth, n_boot=100)
    >>> r["p"].kendall_tau.estimate, r["p"].top_k_precision.estimate
    (1.0, 1.0)
    """
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty mapping proxy -> {arch: score}")
    bad_truth = [a for a, v in truth.items() if not math.isfinite(float(v))]
    if bad_truth:
        raise ValueError(f"truth has non-finite accuracies, e.g. {bad_truth[:3]}")
    seconds = dict(seconds or {})
    unknown = sorted(set(seconds) - set(scores))
    if unknown:
        raise ValueError(f"seconds given for unknown proxies {unknown}; proxies: {sorted(scores)}")
    results = []
    for name, proxy_scores in scores.items():
        if not isinstance(proxy_scores, Mapping):
            raise TypeError(f"scores[{name!r}] must be a mapping arch -> score, got {type(proxy_scores).__name__}")
        shared = set(proxy_scores) & set(truth)
        if len(shared) < min_n:
            only = sorted(set(proxy_scores) - set(truth))[:2]
            raise ValueError(
                f"proxy {name!r}: only {len(shared)} architecture(s) are in both the scores "
                f"({len(proxy_scores)}) and the truth ({len(truth)}); need at least {min_n}. "
                f"Scored but not in the truth, e.g.: {only} (are the architecture strings "
                f"in the same format?)"
            )
        x, y, n_bad = _prepare(proxy_scores, truth, nan_policy)
        n = x.size
        if n < min_n:
            raise ValueError(
                f"proxy {name!r}: {n} architecture(s) left after nan_policy={nan_policy!r} "
                f"({n_bad} non-finite); need at least {min_n}"
            )
        k = _top_k(n, top_frac, None)
        # the same seed gives every statistic of this proxy the same resamples
        common = dict(n_boot=n_boot, level=level, seed=seed, nan_policy=nan_policy)
        results.append(
            ProxyCorrelation(
                proxy=name,
                n=n,
                n_nonfinite=n_bad,
                kendall_tau=bootstrap_ci(kendall_tau, proxy_scores, truth, **common),
                spearman_rho=bootstrap_ci(spearman_rho, proxy_scores, truth, **common),
                top_k_precision=bootstrap_ci(
                    functools.partial(top_k_precision, frac=top_frac), proxy_scores, truth, **common
                ),
                top_k=k,
                seconds_per_arch=None if name not in seconds else float(seconds[name]),
                degenerate=degenerate_reason([proxy_scores[a] for a in shared]),
            )
        )
    return CorrelationReport(
        proxies=results,
        n_truth=len(truth),
        n_boot=n_boot,
        level=level,
        seed=seed,
        top_frac=top_frac,
        nan_policy=nan_policy,
    )


# ----------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------

def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "proxy"


def _draw(ax, name: str, proxy_scores: Mapping[str, float], truth: Mapping[str, float], truth_label: str,
          x_axis: str) -> None:
    keys = sorted(set(proxy_scores) & set(truth))
    x = np.array([proxy_scores[k] for k in keys], dtype=float)
    y = np.array([truth[k] for k in keys], dtype=float)
    ok = np.isfinite(x)
    tau = kendall_tau(x, y) if x.size >= 2 else math.nan
    rho = spearman_rho(x, y) if x.size >= 2 else math.nan
    if x_axis == "rank":
        # percentile of the score among the finite ones: outliers and sentinel values
        # (NASLib's jacov uses -1e8 for failures) no longer squash the other points
        from scipy.stats import rankdata

        xv = 100 * (rankdata(x[ok]) - 0.5) / max(int(ok.sum()), 1)
        xlabel = f"proxy score percentile ({name})"
    else:
        xv = x[ok]
        xlabel = f"proxy score ({name})"
    ax.scatter(xv, y[ok], s=10, alpha=0.6, edgecolors="none")
    title = f"{name}: Kendall τ={tau:.3f}, Spearman ρ={rho:.3f} (n={x.size})"
    if (~ok).any():
        title += f"\n{int((~ok).sum())} non-finite score(s) not drawn, ranked last"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(truth_label)
    ax.grid(True, alpha=0.3)


def scatter_plots(
    scores: Mapping[str, Mapping[str, float]],
    truth: Mapping[str, float],
    out: str | os.PathLike,
    *,
    truth_label: str = "true accuracy (%)",
    x_axis: str = "value",
    dpi: int = 120,
) -> list[Path]:
    """Scatter plots of proxy score (x) against true accuracy (y), tau and rho in titles.

    If ``out`` ends in ``.png`` all proxies go into one grid figure at that path;
    otherwise ``out`` is a folder that receives one ``<proxy>.png`` per proxy. Non-finite
    scores are not drawn (their count is in the title; the statistics rank them last).
    ``x_axis="rank"`` plots the score's percentile instead of its value, which keeps
    plots readable when a proxy has extreme outliers. Returns the written paths.

    >>> scatter_plots({"synflow": ref["synflow"]}, truth, "plots/")  # doctest: +SKIP
    [PosixPath('plots/synflow.png')]
    """
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        # no display is needed (or wanted) to write files; switch quietly when possible
        try:
            matplotlib.use("Agg", force=True)
        except Exception:
            pass
    import matplotlib.pyplot as plt

    if not scores:
        raise ValueError("scores must name at least one proxy")
    if x_axis not in ("value", "rank"):
        raise ValueError(f"unknown x_axis {x_axis!r}; valid: 'value', 'rank'")
    out = Path(out)
    written: list[Path] = []
    if out.suffix.lower() == ".png":
        names = list(scores)
        cols = min(3, len(names))
        rows = math.ceil(len(names) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False)
        try:
            for ax, name in zip(axes.flat, names):
                _draw(ax, name, scores[name], truth, truth_label, x_axis)
            for ax in list(axes.flat)[len(names):]:
                ax.set_visible(False)
            fig.tight_layout()
            atomic_savefig(fig, out, dpi, bbox_inches="tight")
        finally:
            plt.close(fig)
        written.append(out)
        return written
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for name, proxy_scores in scores.items():
        stem = _safe_name(name)
        while stem in used:
            stem += "_"
        used.add(stem)
        fig, ax = plt.subplots(figsize=(5.6, 4.4))
        try:
            _draw(ax, name, proxy_scores, truth, truth_label, x_axis)
            fig.tight_layout()
            path = out / f"{stem}.png"
            atomic_savefig(fig, path, dpi, bbox_inches="tight")
        finally:
            plt.close(fig)
        written.append(path)
    return written
