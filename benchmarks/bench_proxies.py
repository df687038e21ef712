"""Every zero-cost proxy (old and new, not the GHN) on both dev sets, tuning / reporting halves.

For each space (``nb201``: ``../shared/data/nb201/cifar10_dev.csv``, 491 architectures,
truth ``test_acc``; ``darts``: ``../shared/data/nb301/cifar10_dev.csv``, 718 DARTS genotypes,
truth ``val_acc``) and each proxy, the architectures are scored on CIFAR-10 training
images (one batch per image seed, the proxy's own batch size) and we report Kendall tau,
Spearman rho and top-10% precision with 95% bootstrap CIs (:mod:`ghnas.correlation`,
1,000 resamples), separately on the **tuning half** (even row index of the CSV), the
**reporting half** (odd row index) and the full set, plus seconds per architecture
(build + score, one torch thread, this machine, median) and, where NASLib has a column
for the same proxy, Spearman's rho between our scores and NASLib's.

Network size is the one setting chosen here, per proxy and space, on the tuning half only
(phase ``size``): the proxy is scored at the small "proxy size" (NB201 C=8 N=1, DARTS C=8
with 5 cells) and at the benchmark's own network (NB201 C=16 N=5, DARTS C=16 with 8 cells;
TE-NAS's linear regions, on its random 3x3 crops (4x4 on DARTS), also on a thin C=1 network) on the first ``--n-size`` tuning
architectures; the size with the higher Kendall tau wins, among the sizes that cost at
most ``--max-seconds`` per architecture (the speed target: 100 architectures in <= 60 s).
The reporting half is then scored at the chosen size only, so its numbers are held out.

The set-level aggregates ``az_nas`` (AZ-NAS's log-rank sum of its four proxies) and
``te_nas`` (mean rank of ``ntk_cond`` and ``linear_regions``) are computed from their
members' cached scores *within* each half, as they would rank a set they were given.

Several image seeds: ``--seeds 0,1,2``. A proxy with random inputs or a random
re-initialisation (Zen, SWAP, the AZ-NAS members) gets the image seed as its own ``seed``
setting, so every proxy varies with the seed. Statistics are averaged over the seeds that
are complete for a proxy (CIs too); ``KT sd`` is the spread of Kendall tau across seeds.

Everything is resumable: each (proxy, size, seed) has a JSON-lines cache (the ``cache=``
of :func:`ghnas.proxies.score`) under ``runs/bench_proxies/<space>/`` (git-ignored), and
a new machine starts from the committed score table (``--phases export`` writes it):
rows the caches lack are restored into them before anything is scored;
the summaries go to ``benchmarks/results/proxies_<space>/{README.md,summary.json,kendall.png}``
and are rewritten after every job, so partial results exist early.

Usage (one space per process, 1 thread, in the background)::

    nohup python benchmarks/bench_proxies.py --space nb201 > runs/bench_proxies_nb201.log 2>&1 &
    nohup python benchmarks/bench_proxies.py --space darts > runs/bench_proxies_darts.log 2>&1 &
    python benchmarks/bench_proxies.py --space darts --phases report   # tables from the caches
    python benchmarks/bench_proxies.py --space darts --phases export   # caches -> proxy_scores/darts.csv.gz

(``--limit N`` uses the first N rows of a dev set, for a quick run; the committed tables
use all rows. The size study's sample, ``--n-size``, defaults to the committed tables'
per space, so a report on a new machine reproduces them.)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ghnas import correlation  # noqa: E402
from ghnas._io import atomic_path, atomic_write_text  # noqa: E402
from ghnas.proxies import get_proxy, rank_aggregate, score  # noqa: E402

# cheapest first, so that partial runs cover many proxies
PROXIES = ["params", "flops", "l2_norm", "synflow", "naswot", "jacob_cov", "snip", "grad_norm",
           "plain", "epe_nas", "fisher", "grasp", "meco", "zico", "az_expressivity",
           "az_progressivity", "az_trainability", "az_complexity", "linear_regions", "ntk_cond",
           "zen", "swap", "swap-r1", "swap-r2", "swap-r4"]
AGGREGATES = {"az_nas": (["az_expressivity", "az_progressivity", "az_trainability", "az_complexity"],
                         "log_rank"),
              "te_nas": (["ntk_cond", "linear_regions"], "mean_rank")}
# images per batch: NASLib's 32 for the NASLib proxies (its zc_config), the authors' for the others
BATCH = {"meco": 1, "zico": 128, "swap": 16, "ntk_cond": 32, "linear_regions": 1000,
         "zen": 16, "az_expressivity": 64, "az_progressivity": 64, "az_trainability": 64,
         "az_complexity": 64}
DEFAULT_BATCH = 32
SEEDED = {"swap", "zen", "az_expressivity", "az_progressivity", "az_trainability", "linear_regions"}
# the authors average 32 random re-initialisations; 8 here, for the CPU budget (noise only)
SETTINGS = {"swap": {"repeats": 8}, "zen": {"repeats": 8}}
#: cheaper settings of a proxy, scored as rows of their own ('swap-r2': SWAP averaged over
#: 2 re-initialisations instead of 8), so that a default can trade noise for time
VARIANTS = {f"swap-r{n}": ("swap", {"repeats": n}) for n in (1, 2, 4)}
NASLIB = {"params": "naslib_params", "flops": "naslib_flops", "synflow": "naslib_synflow",
          "jacob_cov": "naslib_jacov", "snip": "naslib_snip", "grad_norm": "naslib_grad_norm",
          "fisher": "naslib_fisher", "grasp": "naslib_grasp", "l2_norm": "naslib_l2_norm",
          "epe_nas": "naslib_epe_nas", "plain": "naslib_plain", "naswot": "naslib_nwot"}
SPACES = {
    "nb201": {"csv": "shared/data/nb201/cifar10_dev.csv", "arch": "arch", "acc": "test_acc",
              "sizes": {"proxy": {"C": 8, "N": 1}, "bench": {"C": 16, "N": 5}, "thin": {"C": 1, "N": 1}},
              "n_size": 40},
    "darts": {"csv": "shared/data/nb301/cifar10_dev.csv", "arch": "genotype", "acc": "val_acc",
              "sizes": {"proxy": {"C": 8, "layers": 5}, "bench": {"C": 16, "layers": 8},
                        "thin": {"C": 1, "layers": 5}},
              # the sample of the committed DARTS size study (its networks cost more to score)
              "n_size": 20},
}
# published NB201 CIFAR-10 numbers (all 15,625 architectures) for the notes
PUBLISHED = {"meco": "Spearman 0.89 (MeCo, NeurIPS 2023)", "swap": "Spearman 0.90 with its regulariser",
             "zico": "Spearman ~0.80 (ZiCo, ICLR 2023)",
             "az_nas": "Kendall 0.74 / Spearman 0.91 (AZ-NAS, CVPR 2024)"}


NOTES_DIR = REPO / "benchmarks" / "notes"


def candidate_sizes(proxy: str) -> list[str]:
    # TE-NAS counts linear regions on a thin (C=1) network: wider ones put every image in its own region
    return ["thin", "proxy", "bench"] if proxy == "linear_regions" else ["proxy", "bench"]


# --------------------------------------------------------------------------- data


def read_rows(space: str, root: Path) -> tuple[list[str], list[float], list[dict[str, str]]]:
    import search_spaces

    cfg = SPACES[space]
    sp = search_spaces.get(space)
    with open(root / cfg["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    archs = [sp.validate(r[cfg["arch"]]) for r in rows]
    return archs, [float(r[cfg["acc"]]) for r in rows], rows


class Images:
    """Seeded batches of normalised CIFAR-10 training images, loaded once."""

    def __init__(self, root: Path):
        from ghnas import data as gdata

        self.train = gdata.load("cifar10", root=root, split="train")
        self._cache: dict[tuple[int, int], list] = {}

    def batch(self, size: int, seed: int) -> list:
        key = (size, seed)
        if key not in self._cache:
            x, y = next(self.train.batches(size, shuffle=True, seed=seed))
            self._cache[key] = [(x, y)]
        return self._cache[key]


def base_proxy(row: str) -> tuple[str, dict]:
    """The registered proxy that the rows named ``row`` score, and the settings this
    benchmark gives it (a :data:`VARIANTS` name is a proxy with other settings)."""
    name, settings = VARIANTS.get(row, (row, SETTINGS.get(row, {})))
    return name, dict(settings)


def proxy_for(row: str, seed: int = 0, images: int | None = None, space: str | None = None):
    """``(proxy, images per batch)`` as this benchmark scores the rows ``row`` with image
    seed ``seed`` (the seed is also the proxy's own where it re-initialises or draws inputs);
    ``images`` overrides the batch (the GHN proxy's image counts); ``space``: with the
    settings the proxy takes for that space, as a user's ``score(..., space)`` gets them
    (linear_regions' crop size on DARTS)."""
    name, settings = base_proxy(row)
    prox = get_proxy(name, space=space, **settings, **({"seed": seed} if name in SEEDED else {}))
    bs = int(images) if images else (prox.default_batch_size if prox.needs_ghn else BATCH.get(name, DEFAULT_BATCH))
    return prox, bs


def as_member(proxy: str):
    """``proxy`` as this benchmark scores it (seed 0), spelled as a
    :class:`ghnas.proxies.zero_shot.Member`: its settings and batch size where they differ
    from the proxy's own. ``'name:N'`` is the proxy with a batch of N images (the GHN proxy
    on 1,000 images: ``'ghn:1000'``). What ``choose_default.py`` writes into
    ``zero_shot.DEFAULTS`` and ``bench_proxy_speed.py`` times for a candidate aggregate."""
    from ghnas.proxies.zero_shot import Member

    row, _, images = proxy.partition(":")
    own, bs = proxy_for(row, 0, int(images) if images else None)
    name, settings = base_proxy(row)
    return Member(name, tuple(sorted(settings.items())),
                  bs if own.needs_data and bs != own.default_batch_size else None)


def member_label(member) -> str:
    """The name of a :class:`~ghnas.proxies.zero_shot.Member`'s column in choose_default and
    bench_search_pool (the inverse of :func:`as_member`): the rows' name (a :data:`VARIANTS`
    name where the settings are a variant's), with ``:<images>`` for a GHN member (whose
    rows are given per image count with ``--ghn``)."""
    own = get_proxy(member.proxy)
    if own.needs_ghn:
        return f"{member.proxy}:{member.batch_size or own.default_batch_size}"
    for row in (member.proxy, *VARIANTS):
        if base_proxy(row) == (member.proxy, dict(member.settings)):
            return row
    raise ValueError(f"no rows of this benchmark score {member} (settings {dict(member.settings)})")


#: 'ghn-<digest>[-i<images>][-<metric>]' -> (the GHN checkpoint it names, images per batch,
#: metric); filled by --ghn
GHN_FILES: dict[str, tuple[str, int, str]] = {}
#: the images of the rows labelled without '-i<N>' (the committed tables' first GHN rows)
GHN_LABEL_IMAGES = 200


def ghn_label(ghn: str, images: int | None = None, space: str | None = None) -> str:
    """``'ghn-<first 8 hex of the checkpoint's sha256>'``: the GHN proxy's rows are kept per
    checkpoint, so scores of a retrained GHN never mix with an older one's; ``-i<N>`` is
    appended where the proxy scores on N images instead of 200, and ``-<metric>`` where the
    GHN proxy's default metric for ``space`` is not minus the loss (DARTS: ``-neg_prob``)."""
    import hashlib

    from ghnas.ghn import GHNRef
    from ghnas.proxies.ghn import DEFAULT_METRIC, GHNProxy

    path = GHNRef.of(ghn).path() if not Path(ghn).exists() else Path(ghn)
    images = int(images or GHN_LABEL_IMAGES)
    metric = GHNProxy().metric_for(space)
    label = "ghn-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:8] + (
        "" if images == GHN_LABEL_IMAGES else f"-i{images}") + ("" if metric == DEFAULT_METRIC else f"-{metric}")
    GHN_FILES[label] = (str(path), images, metric)
    return label


def cache_file(cache_dir: Path, proxy: str, size: str, seed: int) -> Path:
    return cache_dir / f"{proxy}__{size}__s{seed}.jsonl"


def read_cache(path: Path) -> dict[str, tuple[float, float]]:
    """{arch: (score, seconds)} from a score() cache file (one run key per file)."""
    out: dict[str, tuple[float, float]] = {}
    if not path.exists():
        return out
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "arch" in rec:
                out[rec["arch"]] = (float(rec["score"]), float(rec.get("seconds", 0.0)))
    return out


def run_job(space: str, proxy: str, size: str, seed: int, archs: list[str], images: Images,
            cache_dir: Path, chunk: int, log) -> None:
    """Score ``archs`` (resumable, in chunks so that progress is logged and cached)."""
    path = cache_file(cache_dir, proxy, size, seed)
    done = read_cache(path)
    todo = [a for a in archs if a not in done]
    if not todo:
        return
    if proxy.startswith("ghn-"):  # a GHN proxy row set: 'ghn-<digest>[-i<images>][-<metric>]' (see ghn_label)
        ghn_file, bs, metric = GHN_FILES[proxy]
        prox = get_proxy("ghn", ghn=ghn_file, metric=metric)
    else:
        prox, bs = proxy_for(proxy, seed, space=space)
    data = images.batch(bs, seed) if prox.needs_data else None
    build = SPACES[space]["sizes"][size]
    t0 = time.time()
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        score(part, space, prox, data, seed, bs, build, progress=False, cache=path, device="cpu")
    log(f"{space} {proxy} size={size} seed={seed}: {len(todo)} scored in {time.time() - t0:.1f}s "
        f"({(time.time() - t0) / len(todo):.3f} s/arch)")


def scores_table(space: str) -> Path:
    """The committed table of every per-architecture score of a space (gzip-compressed CSV)."""
    return REPO / "benchmarks" / "results" / "proxy_scores" / f"{space}.csv.gz"


def open_scores(path: Path):
    """A score table for reading, as text: ``.csv.gz`` (the committed form) or plain ``.csv``."""
    import gzip

    return gzip.open(path, "rt", newline="") if path.name.endswith(".gz") else open(path, newline="")


def export_scores(cache_dir: Path, path: Path) -> Path:
    """Every cached score (all proxies, sizes and seeds, GHN rows included) as one table
    ``proxy, size, seed, arch, score, seconds`` (gzip-compressed when ``path`` ends in
    ``.gz``): what git keeps of a run, and what ``choose_default.py`` and
    ``bench_search_pool.py`` read."""
    import gzip
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["proxy", "size", "seed", "arch", "score", "seconds"])
    for f in sorted(cache_dir.glob("*__*__s*.jsonl")):
        proxy, size, seed = f.name[:-len(".jsonl")].split("__")
        for arch, (value, secs) in sorted(read_cache(f).items()):
            w.writerow([proxy, size, seed[1:], arch, repr(value), f"{secs:.4f}"])
    data = buf.getvalue().encode()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime 0: the same scores give the same bytes
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def restore_scores(path: Path, cache_dir: Path) -> int:
    """Put the rows of a committed score table (:func:`export_scores`) that ``cache_dir``
    lacks back into its caches, so that a new machine resumes a run instead of starting
    over. The restored lines carry the key ``restored`` rather than the run key of
    :func:`ghnas.proxies.score` (the table does not keep it): :func:`read_cache` counts
    them as done, so :func:`run_job` scores only what the table does not have."""
    if not path.exists():
        return 0
    missing: dict[Path, list[str]] = {}
    known: dict[Path, dict] = {}
    with open_scores(path) as f:
        for row in csv.DictReader(f):
            target = cache_file(cache_dir, row["proxy"], row["size"], int(row["seed"]))
            if target not in known:
                known[target] = read_cache(target)
            if row["arch"] not in known[target]:
                missing.setdefault(target, []).append(json.dumps(
                    {"key": "restored", "arch": row["arch"], "score": float(row["score"]),
                     "seconds": float(row["seconds"])}))
    for target, lines in missing.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a") as f:
            f.write("".join(line + "\n" for line in lines))
    return sum(len(v) for v in missing.values())


# --------------------------------------------------------------------------- statistics


_STATS_MEMO: dict[tuple, dict] = {}


def stats(scores: list[float], truth: list[float], higher_is_better: bool, n_boot: int) -> dict:
    # the report is rewritten after every job: bootstraps of unchanged columns are reused
    key = (tuple(scores), tuple(truth), higher_is_better, n_boot)
    if key not in _STATS_MEMO:
        _STATS_MEMO[key] = _stats(scores, truth, higher_is_better, n_boot)
    return _STATS_MEMO[key]


def _stats(scores: list[float], truth: list[float], higher_is_better: bool, n_boot: int) -> dict:
    sign = 1.0 if higher_is_better else -1.0
    s = [sign * v for v in scores]
    out = {}
    for name, fn in (("kendall", correlation.kendall_tau), ("spearman", correlation.spearman_rho),
                     ("top10", correlation.top_k_precision)):
        ci = correlation.bootstrap_ci(fn, s, truth, n_boot=n_boot, seed=0)
        out[name] = [ci.estimate, ci.low, ci.high]
    out["n"] = len(s)
    out["n_nonfinite"] = sum(not math.isfinite(v) for v in s)
    return out


def aggregate_column(members: list[list[float]], hib: list[bool], method: str) -> list[float]:
    return rank_aggregate(members, hib, "log_rank" if method == "log_rank" else "mean")


def subsets(n: int) -> dict[str, list[int]]:
    return {"tuning": list(range(0, n, 2)), "reporting": list(range(1, n, 2)), "full": list(range(n))}


def proxy_direction(proxy: str) -> bool:
    return get_proxy(base_proxy(proxy)[0]).higher_is_better


def size_decision(space: str, archs: list[str], truth: list[float], cache_dir: Path, n_size: int,
                  max_seconds: float) -> dict[str, Any]:
    """Per proxy: Kendall tau and s/arch of each size on the first ``n_size`` tuning archs."""
    idx = list(range(0, len(archs), 2))[:n_size]
    out: dict[str, Any] = {}
    for p in PROXIES:
        per = {}
        for size in candidate_sizes(p):
            got = read_cache(cache_file(cache_dir, p, size, 0))
            if not all(archs[i] in got for i in idx):
                probe = [got[archs[i]][1] for i in idx[:3] if archs[i] in got]
                if len(probe) == 3 and statistics.median(probe) > 3 * max_seconds:
                    per[size] = {"kendall": math.nan, "seconds": statistics.median(probe), "probe_only": True}
                continue
            sc = [got[archs[i]][0] for i in idx]
            sign = 1.0 if proxy_direction(p) else -1.0
            per[size] = {"kendall": correlation.kendall_tau([sign * v for v in sc], [truth[i] for i in idx]),
                         "seconds": statistics.median(got[archs[i]][1] for i in idx)}
        if not per:
            continue
        fast = {k: v for k, v in per.items() if v["seconds"] <= max_seconds} or \
            {min(per, key=lambda k: per[k]["seconds"]): per[min(per, key=lambda k: per[k]["seconds"])]}
        chosen = max(fast, key=lambda k: (fast[k]["kendall"] if math.isfinite(fast[k]["kendall"]) else -2))
        out[p] = {"candidates": per, "chosen": chosen, "complete": len(per) == len(candidate_sizes(p))}
    return out


def summarise(space: str, archs: list[str], truth: list[float], rows: list[dict[str, str]],
              cache_dir: Path, seeds: list[int], decision: dict, n_boot: int) -> dict:
    subs = subsets(len(archs))
    results: dict[str, Any] = {}

    def column(p: str, size: str, seed: int) -> list[float] | None:
        got = read_cache(cache_file(cache_dir, p, size, seed))
        return None if not all(a in got for a in archs) else [got[a][0] for a in archs]

    def seconds_of(p: str, size: str) -> float | None:
        got = read_cache(cache_file(cache_dir, p, size, 0))
        return statistics.median(v[1] for v in got.values()) if got else None

    for p, size in [(p, z) for p in PROXIES for z in candidate_sizes(p)]:
        chosen = decision.get(p, {}).get("chosen", "proxy")
        if not read_cache(cache_file(cache_dir, p, size, 0)):
            continue
        per_seed = {s: c for s in seeds if (c := column(p, size, s)) is not None}
        # partial: the tuning half alone may be complete
        entry: dict[str, Any] = {"size": size, "chosen": size == chosen, "build": SPACES[space]["sizes"][size],
                                 "batch": proxy_for(p)[1], "seconds": seconds_of(p, size),
                                 "seeds": sorted(per_seed), "higher_is_better": proxy_direction(p)}
        got0 = read_cache(cache_file(cache_dir, p, size, 0))
        for name, idx in subs.items():
            seed_stats = []
            for s in seeds:
                got = got0 if s == 0 else read_cache(cache_file(cache_dir, p, size, s))
                if all(archs[i] in got for i in idx):
                    seed_stats.append(stats([got[archs[i]][0] for i in idx], [truth[i] for i in idx],
                                            entry["higher_is_better"], n_boot))
            if seed_stats:
                entry[name] = _mean_stats(seed_stats)
        col = NASLIB.get(p)
        have = [i for i in range(len(archs)) if archs[i] in got0]
        if col and col in rows[0] and len(have) >= 20:
            # on the rows scored at this size (seed 0); NASLib's own network is the "bench" size
            ref = [float(rows[i][col]) for i in have]
            ours = [got0[archs[i]][0] for i in have]
            finite = [v for v in ours if math.isfinite(v)]
            floor = (min(finite) - 1.0) if finite else -1.0
            entry["spearman_vs_naslib"] = correlation.spearman_rho(
                [v if math.isfinite(v) else floor for v in ours], [v if math.isfinite(v) else -1e30 for v in ref])
            entry["spearman_vs_naslib_n"] = len(have)
        if any(k in entry for k in subs):
            results[p if size == chosen else f"{p} @{size}"] = entry
    for agg, (members, method) in AGGREGATES.items():
        entry = {"size": "members' sizes", "chosen": True, "members": members, "method": method, "seeds": [],
                 "higher_is_better": True,
                 "seconds": _sum_or_none([results.get(m, {}).get("seconds") for m in members])}
        for name, idx in subs.items():
            seed_stats = []
            for s in seeds:
                mcols = []
                for m in members:
                    size = decision.get(m, {}).get("chosen", "proxy")
                    got = read_cache(cache_file(cache_dir, m, size, s))
                    if not all(archs[i] in got for i in idx):
                        break
                    mcols.append([got[archs[i]][0] for i in idx])
                else:
                    agg_scores = aggregate_column(mcols, [proxy_direction(m) for m in members], method)
                    seed_stats.append(stats(agg_scores, [truth[i] for i in idx], True, n_boot))
                    if name == "full":
                        entry["seeds"].append(s)
            if seed_stats:
                entry[name] = _mean_stats(seed_stats)
        if any(k in entry for k in subs):
            results[agg] = entry
    # NASLib's own columns as reference rows
    for p, col in NASLIB.items():
        if col not in rows[0]:
            continue
        ref = [float(r[col]) for r in rows]
        entry = {"size": "NASLib", "chosen": True, "seeds": [], "higher_is_better": True}
        for name, idx in subs.items():
            entry[name] = _mean_stats([stats([ref[i] for i in idx], [truth[i] for i in idx], True, n_boot)])
        results[f"NASLib {col[len('naslib_'):]}"] = entry
    return results


def _sum_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(sum(values))


def _mean_stats(seed_stats: list[dict]) -> dict:
    out: dict[str, Any] = {"n": seed_stats[0]["n"], "n_seeds": len(seed_stats),
                           "n_nonfinite": max(s["n_nonfinite"] for s in seed_stats)}
    for k in ("kendall", "spearman", "top10"):
        out[k] = [float(np.mean([s[k][j] for s in seed_stats])) for j in range(3)]
    out["kendall_sd"] = float(np.std([s["kendall"][0] for s in seed_stats])) if len(seed_stats) > 1 else None
    return out


# --------------------------------------------------------------------------- output


def fmt_ci(v: list[float] | None) -> str:
    if not v:
        return ""
    return f"{v[0]:.3f} [{v[1]:.2f}, {v[2]:.2f}]"


def markdown(space: str, results: dict, decision: dict, meta: dict) -> str:
    cfg = SPACES[space]
    lines = [f"# Zero-cost proxies on the {space} dev set ({meta['n']} architectures, truth `{cfg['acc']}`)", "",
             f"Tuning half = even row index of `{cfg['csv'].split('shared/')[-1]}` ({(meta['n'] + 1) // 2} rows), "
             f"reporting half = odd ({meta['n'] // 2}). Network size chosen per proxy on the tuning half "
             f"only (table at the end). CIFAR-10 training images, seeds {meta['seeds_available']}; "
             f"statistics are means over the complete seeds (column 'seeds'); 95% bootstrap CIs "
             f"({meta['n_boot']} resamples). s/arch: median build + score time, 1 torch thread, "
             f"{meta['machine']}. Settings differing from the proxies' defaults: {meta['settings']}."
             + (f" Only the first {meta['limit']} rows of the file (CPU budget)." if meta.get("limit") else "")
             + " Rows `name @size` are a proxy at a size that was not chosen.", "",
             "| proxy | size | batch | seeds | KT reporting [CI] | SP reporting [CI] | top-10% reporting | "
             "KT tuning | SP tuning | KT full | SP full | KT sd (seeds) | SP vs NASLib | s/arch |",
             "| --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- | --- | ---: | ---: | ---: |"]

    def key(item):
        r = item[1].get("reporting") or item[1].get("tuning")
        return -(r["kendall"][0] if r and math.isfinite(r["kendall"][0]) else -2)

    ours = [(p, e) for p, e in results.items() if not p.startswith("NASLib")]
    ref = [(p, e) for p, e in results.items() if p.startswith("NASLib")]
    for p, e in sorted(ours, key=key) + sorted(ref, key=key):
        rep, tun, full = e.get("reporting"), e.get("tuning"), e.get("full")
        size = e["size"]
        if size in cfg["sizes"]:
            size = ", ".join(f"{k}={v}" for k, v in cfg["sizes"][size].items())
        sd = (rep or tun or {}).get("kendall_sd")
        naslib_n = f" (n={e['spearman_vs_naslib_n']})" if e.get("spearman_vs_naslib_n") else ""

        def num(d, k, j=0):
            return "" if not d or d.get(k) is None else f"{(d[k][j] if j is not None else d[k]):.3f}"

        lines.append(
            f"| {p} | {size} | {e.get('batch', '')} | {','.join(map(str, e.get('seeds', []))) or '-'} | "
            f"{fmt_ci(rep['kendall']) if rep else 'pending'} | {fmt_ci(rep['spearman']) if rep else ''} | "
            f"{fmt_ci(rep['top10']) if rep else ''} | {num(tun, 'kendall')} | {num(tun, 'spearman')} | "
            f"{num(full, 'kendall')} | {num(full, 'spearman')} | {'' if sd is None else f'{sd:.3f}'} | "
            f"{num(e, 'spearman_vs_naslib', None)}{naslib_n} | {num(e, 'seconds', None)} |")
    lines += ["", "## Network size, chosen on the tuning half", "",
              f"Kendall tau on the first {meta['n_size']} tuning-half architectures (seed 0) and median "
              f"s/arch for each candidate size; the chosen size has the higher tau among sizes costing at "
              f"most {meta['max_seconds']} s/arch.", "",
              "| proxy | " + " | ".join(f"KT / s {s}" for s in ("thin", "proxy", "bench")) + " | chosen |",
              "| --- | --- | --- | --- | --- |"]
    for p, d in decision.items():
        cells = []
        for s in ("thin", "proxy", "bench"):
            c = d["candidates"].get(s)
            cells.append("" if c is None else f"{c['kendall']:.3f} / {c['seconds']:.3f}")
        lines.append(f"| {p} | " + " | ".join(cells) + f" | {d['chosen']}{'' if d['complete'] else ' (partial)'} |")
    lines += ["", "Sizes: " + "; ".join(f"{k} = {v}" for k, v in cfg["sizes"].items()) + ".", ""]
    notes = meta.get("notes")
    if notes:
        lines += [notes.rstrip(), ""]
    return "\n".join(lines)


def plot(space: str, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(p, e) for p, e in results.items() if e.get("reporting") or e.get("tuning")]
    items.sort(key=lambda it: (it[1].get("reporting") or it[1]["tuning"])["kendall"][0])
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(items) + 1.2))
    y = np.arange(len(items))
    for off, half, color in ((-0.18, "tuning", "tab:gray"), (0.18, "reporting", "tab:blue")):
        vals = [(e.get(half) or {}).get("kendall") for _, e in items]
        xs = [v[0] if v else np.nan for v in vals]
        err = np.array([[v[0] - v[1], v[2] - v[0]] if v else [0, 0] for v in vals]).T
        ax.errorbar(xs, y + off, xerr=err, fmt="o", ms=3, color=color, label=f"{half} half", capsize=2)
    ax.set_yticks(y)
    ax.set_yticklabels([p for p, _ in items], fontsize=7)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("Kendall tau vs accuracy (95% bootstrap CI)")
    ax.set_title(f"{space}: zero-cost proxies on the dev set")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", choices=sorted(SPACES), required=True)
    ap.add_argument("--phases", default="proxy,size,reporting,fill,seeds,report",
                    help="comma-separated, in order: proxy (tuning half at proxy size, seed 0), size "
                         "(other sizes on --n-size tuning archs), reporting (reporting half at the chosen "
                         "size, seed 0), fill (the other rows at the chosen size), seeds (all rows, the "
                         "other --seeds), pool (all rows at the proxy size, where the default's members "
                         "score, whatever size was chosen), pool-seeds (the same, the other --seeds), report (tables only), export (every cached "
                         "score into the committed table benchmarks/results/proxy_scores/<space>.csv.gz)")
    ap.add_argument("--proxies", default=",".join(PROXIES))
    ap.add_argument("--ghn", action="append", default=[], metavar="GHN",
                    help="also score the GHN proxy (the space's default metric, 200 images) with this GHN (name or "
                         "checkpoint); its rows are the proxy 'ghn-<checkpoint digest>' of the caches and "
                         "the exported table (choose_default.py --ghn ghn:200@proxy=ghn-<digest>, ghn:1000@proxy=ghn-<digest>-i1000)")
    ap.add_argument("--ghn-images", default="200",
                    help="comma-separated image counts the --ghn proxies score on (rows 'ghn-<digest>-i<N>' "
                         "for counts other than 200)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--limit", type=int, default=None,
                    help="use the first LIMIT rows of the dev set (halves by row parity within them)")
    ap.add_argument("--n-size", type=int, default=None,
                    help="tuning archs of the size study (default per space, the committed tables': "
                         + ", ".join(f"{k} {v['n_size']}" for k, v in SPACES.items()) + ")")
    ap.add_argument("--max-seconds", type=float, default=1.0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--root", type=Path, default=REPO.parent)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    space = args.space
    if args.n_size is None:
        args.n_size = SPACES[space]["n_size"]
    cache_dir = args.cache_dir or REPO / "runs/bench_proxies" / space
    out = args.out or REPO / "benchmarks/results" / f"proxies_{space}"
    proxies = [p for p in args.proxies.split(",") if p] + [
        ghn_label(g, int(n), space) for g in args.ghn for n in args.ghn_images.split(",") if n.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    archs, truth, rows = read_rows(space, args.root)
    if args.limit is not None:
        archs, truth, rows = archs[: args.limit], truth[: args.limit], rows[: args.limit]
    tuning = archs[0::2]
    size_archs = tuning[: args.n_size]
    images = Images(args.root / "shared/data/cifar10")

    def log(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    restored = restore_scores(scores_table(space), cache_dir)
    if restored:
        log(f"restored {restored} scores from {scores_table(space).relative_to(REPO)} into {cache_dir}")

    def report() -> dict:
        decision = size_decision(space, archs, truth, cache_dir, args.n_size, args.max_seconds)
        results = summarise(space, archs, truth, rows, cache_dir, seeds, decision, args.n_boot)
        meta = {"space": space, "n": len(archs), "n_boot": args.n_boot, "n_size": args.n_size,
                "max_seconds": args.max_seconds, "seeds_available": seeds, "limit": args.limit,
                "settings": SETTINGS, "variants": VARIANTS,
                # hand-written analysis kept next to the generated tables
                "notes": (NOTES_DIR / f"proxies_{space}.md").read_text() if (NOTES_DIR / f"proxies_{space}.md").exists() else None, "torch": torch.__version__,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)"}
        atomic_write_text(out / "summary.json", json.dumps({"meta": meta, "decision": decision,
                                                       "results": results}, indent=1) + "\n")
        atomic_write_text(out / "README.md", markdown(space, results, decision, meta))
        plot(space, results, out / "kendall.png")
        return decision

    for phase in phases:
        if phase == "proxy":
            # the smallest candidate size (TE-NAS's thin network for linear_regions)
            for p in proxies:
                run_job(space, p, candidate_sizes(p)[0], 0, tuning, images, cache_dir, args.chunk, log)
                report()
        elif phase == "size":
            for p in proxies:
                for size in candidate_sizes(p):
                    # a size that costs far more than the budget cannot be chosen: probe 3 archs first
                    run_job(space, p, size, 0, size_archs[:3], images, cache_dir, args.chunk, log)
                    probe = read_cache(cache_file(cache_dir, p, size, 0))
                    secs = statistics.median(probe[a][1] for a in size_archs[:3])
                    if secs > 3 * args.max_seconds:
                        log(f"{space} {p} size={size}: {secs:.2f} s/arch, over 3x the budget: not scored further")
                        continue
                    run_job(space, p, size, 0, size_archs, images, cache_dir, args.chunk, log)
                    report()
        elif phase in ("reporting", "fill"):
            # reporting: the held-out half at the chosen size; fill: the rest of the rows there
            decision = report()
            for p in proxies:
                size = decision.get(p, {}).get("chosen", "proxy")
                run_job(space, p, size, 0, archs[1::2] if phase == "reporting" else archs,
                        images, cache_dir, args.chunk, log)
                report()
        elif phase == "seeds":
            decision = report()
            for s in seeds:
                for p in proxies:
                    size = decision.get(p, {}).get("chosen", "proxy")
                    run_job(space, p, size, s, archs, images, cache_dir, args.chunk, log)
                    report()
        elif phase in ("pool", "pool-seeds"):
            # choose_default's candidates: the default scores all its members at the proxy size
            for s in ([0] if phase == "pool" else [s for s in seeds if s != 0]):
                for p in proxies:
                    if "proxy" in candidate_sizes(p):
                        run_job(space, p, "proxy", s, archs, images, cache_dir, args.chunk, log)
            report()
        elif phase == "report":
            report()
        elif phase == "export":
            log(f"wrote {export_scores(cache_dir, scores_table(space))}")
        else:
            raise SystemExit(f"unknown phase {phase!r}; valid: proxy, size, reporting, fill, seeds, pool, pool-seeds, report, export")
    log("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
