"""Search quality on NAS-Bench-201: what test accuracy does each proxy's pick reach?

The only NB201 architectures with ground truth here are the 491 of
``../shared/data/nb201/cifar10_dev.csv``, so searches run inside that pool. For each of
``--seeds`` seeds we let a strategy visit ``--budget`` (default 100) of the 491 with
:func:`ghnas.searching.run_strategy` (``random``: a uniform sample; ``evolution``:
regularised evolution restricted to the pool), take the architecture the proxy likes
best, and record its benchmark ``test_acc``. We report the mean and standard deviation
over seeds for every proxy, next to

* ``random choice``: one architecture of the visited set drawn at random (what a search
  without a proxy would return after one evaluation);
* ``best visited``: the best test accuracy among the visited architectures (what a
  perfect proxy would pick; the ceiling of each run);
* the pool optimum (the best of the 491).

Each proxy scores all 491 architectures once (cached in JSON-lines files under
``--cache-dir``, so an interrupted run resumes); the seeds only re-sample. Baselines
(``synflow``, ``naswot``, ``params``) score the benchmark network (C=16, N=5) on one
batch of CIFAR-10 training images. With ``--ghn`` the GHN proxy is added: it scores the
small proxy networks the GHN was trained for (:data:`ghnas.searching.PROXY_BUILD_KWARGS`,
or the GHN's sidecar) on 200 held-out CIFAR-10 validation images, as ``ghnas search``
does.

Outputs: ``benchmarks/results/search_nb201.{json,md}``.

Usage::

    python benchmarks/bench_search_nb201.py                         # baselines only
    python benchmarks/bench_search_nb201.py --ghn ghnas-nb201-cifar10
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import search_spaces  # noqa: E402
from ghnas.proxies import get_proxy, score  # noqa: E402
from ghnas.searching import run_strategy  # noqa: E402

BASELINES = ["synflow", "naswot", "params"]
FULL_SPACE_OPTIMUM = 94.37  # NAS-Bench-201 CIFAR-10 test accuracy of the best cell
NASWOT_ANCHOR = 91.6  # NASWOT, 100 samples of the full space (the anchor given with this task)


def read_pool(path: Path) -> tuple[list[str], dict[str, float]]:
    sp = search_spaces.get("nb201")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    archs = [sp.validate(r["arch"]) for r in rows]
    return archs, {a: float(r["test_acc"]) for a, r in zip(archs, rows)}


def simulate(archs: list[str], truth: dict[str, float], scores: dict[str, dict[str, float]],
             budget: int, seeds: list[int], strategy: str, **strategy_kwargs: Any) -> dict[str, Any]:
    """Replay ``strategy`` for each seed with each proxy's precomputed scores.

    Returns per method the test accuracy of its pick for every seed. Every score must be
    "higher is better" (negate lower-is-better proxies before calling).
    """
    sp = search_spaces.get("nb201")
    out: dict[str, list[float]] = {name: [] for name in scores}
    out["random choice"] = []
    out["best visited"] = []
    for seed in seeds:
        for name, s in scores.items():
            log = run_strategy(strategy, sp, budget, lambda xs, s=s: [s[a] for a in xs], seed=seed,
                               pool=archs, **strategy_kwargs)
            # ties (e.g. params of equivalent cells) go to the architecture visited first
            best = max(range(len(log)), key=lambda i: (log[i][1], -i))
            out[name].append(truth[sp.validate(log[best][0])])
        # proxy-free references on the set a random search visits with this seed
        rng = np.random.default_rng([seed, 7])
        visited = [a for a, _ in run_strategy("random", sp, budget, lambda xs: [0.0] * len(xs), seed=seed,
                                              pool=archs)]
        out["random choice"].append(truth[visited[int(rng.integers(len(visited)))]])
        out["best visited"].append(max(truth[a] for a in visited))
    return {name: {"picks": v, "mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0}
            for name, v in out.items()}


def score_pool(archs: list[str], proxy: str, *, data, build_kwargs: dict[str, Any], batch_size: int,
               seed: int, cache: Path, device: str, proxy_obj=None, chunk: int = 50) -> tuple[dict[str, float], float]:
    """Score every pool architecture once (resumable); return higher-is-better scores and s/arch."""
    prox = proxy_obj if proxy_obj is not None else get_proxy(proxy)
    values: dict[str, float] = {}
    seconds = []
    for start in range(0, len(archs), chunk):
        part = archs[start:start + chunk]
        t = time.time()
        table = score(part, "nb201", prox, data if prox.needs_data else None, seed, batch_size, build_kwargs,
                      progress=False, cache=cache, device=device)
        sign = 1.0 if table.higher_is_better else -1.0
        for a, r in zip(part, table.rows):
            values[a] = sign * r.score
            seconds.append(r.seconds)
        fresh = sum(not r.cached for r in table.rows)
        print(f"  {proxy}: {start + len(part)}/{len(archs)} ({fresh} new, {time.time() - t:.1f}s)", flush=True)
    return values, statistics.median(seconds)


def markdown(res: dict[str, Any]) -> str:
    m = res["settings"]
    lines = ["# Search quality on NAS-Bench-201 (CIFAR-10), inside the 491-architecture dev pool", "",
             f"{m['seeds']} seeds; each search visits {m['budget']} of the {m['pool']} distinct architectures "
             f"of the pool ({m['rows']} rows; cells that differ only in dead edges are one architecture, "
             f"the first row of each is used) and "
             f"returns the proxy's favourite; the table gives the benchmark test accuracy of that pick "
             f"(mean ± std over seeds). Pool optimum: {res['pool_optimum']:.2f}% ({res['pool_optimum_all_rows']:.2f}% "
             f"over all rows); pool mean: "
             f"{res['pool_mean']:.2f}%. Baselines score C={m['baseline_build']['C']}, N={m['baseline_build']['N']} "
             f"networks on {m['batch_size']} CIFAR-10 training images"
             + (f"; the GHN proxy ({m['ghn']}) scores {m['ghn_build']} networks on {m['ghn_images']} "
                f"CIFAR-10 validation images" if m.get("ghn") else "")
             + f". {m['device']}, {m['machine']}.", ""]
    strategies = list(res["strategies"])
    head = "| method | " + " | ".join(f"{s}: test acc of pick (%)" for s in strategies) + " | s/arch (median) |"
    lines += [head, "|---|" + "---:|" * (len(strategies) + 1)]
    names = list(res["strategies"][strategies[0]])
    for name in names:
        cells = [f"{res['strategies'][s][name]['mean']:.2f} ± {res['strategies'][s][name]['std']:.2f}"
                 for s in strategies]
        sec = res["seconds_per_arch"].get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'' if sec is None else f'{sec:.3f}'} |")
    lines += ["", f"Anchors on the full space (15,625 cells): the optimum is {FULL_SPACE_OPTIMUM}%; NASWOT "
              f"with 100 samples finds about {NASWOT_ANCHOR}%. 'best visited' (the best of the architectures "
              "a random search visits: what a perfect proxy would pick) and 'random choice' (one of them at "
              "random) do not use a proxy and are computed on the random strategy's visits in both columns. "
              f"Evolution inside a {m['rows']}-row pool is mostly random: few single-edit neighbours of a "
              "pool member are in the pool.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ghn", default=None, help="GHN name or path: adds the GHN proxy")
    ap.add_argument("--proxies", default=",".join(BASELINES), help="baseline proxies (comma-separated)")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--strategies", default="random,evolution")
    ap.add_argument("--batch-size", type=int, default=64, help="images for the baselines")
    ap.add_argument("--ghn-images", type=int, default=200, help="validation images for the GHN proxy")
    ap.add_argument("--score-seed", type=int, default=0, help="seed of the proxies' batches and inits")
    ap.add_argument("--csv", type=Path, default=REPO.parent / "shared/data/nb201/cifar10_dev.csv")
    ap.add_argument("--cifar10", type=Path, default=REPO.parent / "shared/data/cifar10")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "runs/bench_search_nb201")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    ap.add_argument("--name", default="search_nb201")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from ghnas import data as gdata
    from ghnas.ghn import GHNRef
    from ghnas.searching import proxy_build_kwargs

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    archs, truth = read_pool(args.csv)
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    baseline_build = {"C": 16, "N": 5}
    train = gdata.load("cifar10", root=args.cifar10, split="train", seed=0)
    x, y = next(train.batches(args.batch_size, shuffle=True, seed=args.score_seed))
    batch = [(x, y)]
    scores: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}
    for p in proxies:
        print(f"scoring {len(archs)} architectures with {p}", flush=True)
        scores[p], seconds[p] = score_pool(archs, p, data=batch, build_kwargs=baseline_build,
                                           batch_size=args.batch_size, seed=args.score_seed,
                                           cache=args.cache_dir / f"{p}_C16N5_bs{args.batch_size}.jsonl",
                                           device=args.device)
    ghn_build = None
    if args.ghn:
        from ghnas.proxies.ghn import GHNProxy

        ghn_ref = GHNRef.of(args.ghn, "nb201")
        net, ref = ghn_ref.load(args.device), ghn_ref.label
        ghn_build = proxy_build_kwargs("nb201", ghn_ref if ghn_ref.saved else None)
        val = gdata.load("cifar10", root=args.cifar10, split="val", seed=0)
        vx, vy = next(val.batches(args.ghn_images, shuffle=True, seed=args.score_seed))
        print(f"scoring {len(archs)} architectures with ghn ({ref}, build {ghn_build})", flush=True)
        scores["ghn"], seconds["ghn"] = score_pool(
            archs, "ghn", data=[(vx, vy)], build_kwargs=ghn_build, batch_size=args.ghn_images,
            seed=args.score_seed, cache=args.cache_dir / "ghn.jsonl", device=args.device,
            proxy_obj=GHNProxy(ghn=net))
    seeds = list(range(args.seeds))
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    sp = search_spaces.get("nb201")
    distinct: dict[str, str] = {}
    for a in archs:  # equivalent cells (differing only in dead edges) count once, as in ghnas.search
        distinct.setdefault(sp.hash(a), a)
    res = {
        "pool_optimum": max(truth[a] for a in distinct.values()),
        "pool_optimum_all_rows": max(truth.values()),
        "pool_mean": statistics.fmean(truth[a] for a in distinct.values()),
        "seconds_per_arch": seconds,
        "strategies": {s: simulate(archs, truth, scores, args.budget, seeds, s) for s in strategies},
    }
    res["settings"] = dict(budget=args.budget, seeds=args.seeds, pool=len(distinct), rows=len(archs),
                           batch_size=args.batch_size,
                           baseline_build=baseline_build, ghn=args.ghn, ghn_build=ghn_build,
                           ghn_images=args.ghn_images if args.ghn else None, score_seed=args.score_seed,
                           device=args.device, threads=torch.get_num_threads(), torch=torch.__version__,
                           machine=f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)",
                           seconds=time.time() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    for suffix, text in (("json", json.dumps(res, indent=1)), ("md", markdown(res))):
        path = args.out / f"{args.name}.{suffix}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
