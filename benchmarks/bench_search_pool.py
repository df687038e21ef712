"""Random search inside a dev set's reporting half, from cached proxy scores, 10 seeds.

For each seed, ``--budget`` distinct architectures are drawn from the reporting half (odd
rows) of the space's dev set, ranked by a proxy or aggregate over exactly that drawn set (as
``ghnas.search(strategy='random')`` ranks its whole set), and the accuracy of the pick is
recorded. Scores come from the per-architecture caches of ``benchmarks/bench_proxies.py``
(and GHN-proxy rows chosen with ``--ghn``), which is what ``ghnas.search`` would compute:
every proxy scores an architecture deterministically from ``(seed, arch)``.

    python benchmarks/bench_search_pool.py --space nb201 --ghn ghn:1000@proxy=ghn-<digest>-i1000
    python benchmarks/bench_search_pool.py --space darts --limit 200 --budget 50

Writes ``benchmarks/results/search_pool_<space>.{json,md}`` (``_tuning`` with ``--half tuning``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_proxies import SPACES, member_label, read_rows, scores_table  # noqa: E402
from choose_default import load_columns  # noqa: E402

from ghnas._io import atomic_write_text  # noqa: E402
from ghnas.proxies.ensemble import rank_aggregate  # noqa: E402
from ghnas.proxies.zero_shot import DEFAULTS  # noqa: E402


def pick(cols: dict, members: list[str], method: str, idx: np.ndarray) -> int:
    agg = rank_aggregate([[cols[m]["scores"][i] for i in idx] for m in members], [cols[m]["hib"] for m in members],
                         method)
    agg = np.nan_to_num(np.asarray(agg, dtype=float), nan=-np.inf)
    return int(idx[int(np.argmax(agg))])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", choices=sorted(SPACES), required=True)
    ap.add_argument("--scores", type=Path, default=None,
                    help="per-architecture scores (default benchmarks/results/proxy_scores/<space>.csv.gz)")
    ap.add_argument("--shared", type=Path, default=REPO.parent)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--ghn", action="append", default=[], metavar="LABEL=PROXY",
                    help="a GHN proxy's rows of the scores, e.g. ghn:1000@proxy=ghn-<digest>-i1000 (label name:images@size = rows)")
    ap.add_argument("--half", choices=("reporting", "tuning"), default="reporting",
                    help="the pool: the reporting half (odd rows, default) or the tuning half (even rows, "
                         "where the default was chosen: for comparisons that may inform a choice)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)
    if args.scores is None:
        args.scores = scores_table(args.space)
    archs, truth, _ = read_rows(args.space, args.shared)
    if args.limit:
        archs, truth = archs[:args.limit], truth[:args.limit]
    truth = np.asarray(truth)
    summary = REPO / "benchmarks" / "results" / f"proxies_{args.space}" / "summary.json"
    sizes = {p: d["chosen"] for p, d in json.loads(summary.read_text())["decision"].items()}
    cols = load_columns(args.space, args.scores, archs, dict(x.split("=", 1) for x in args.ghn), sizes=sizes)
    members, method = DEFAULTS[args.space]
    at_proxy = {m.split("@")[0]: m for m in cols if m.endswith("@proxy")}
    missing = [member_label(m) for m in members if member_label(m) not in at_proxy]
    if missing:
        raise SystemExit(f"no scores for the default's member(s) {missing}: give GHN rows with "
                         "--ghn ghn:<images>@proxy=<rows>")
    scorers = {"zero-shot (default)": ([at_proxy[member_label(m)] for m in members], method)}
    for m in sorted(cols):
        scorers[m] = ([m], "mean")
    report = np.arange(1 if args.half == "reporting" else 0, len(archs), 2)
    stem = f"search_pool_{args.space}" + ("" if args.half == "reporting" else "_tuning")
    budget = min(args.budget, len(report))
    rows: dict[str, list[float]] = {k: [] for k in scorers}
    rows["random choice"], rows["best drawn"] = [], []
    for seed in range(args.seeds):
        idx = np.sort(np.random.default_rng(seed).choice(report, size=budget, replace=False))
        for name, (ms, meth) in scorers.items():
            rows[name].append(float(truth[pick(cols, ms, meth, idx)]))
        rows["random choice"].append(float(np.mean(truth[idx])))
        rows["best drawn"].append(float(np.max(truth[idx])))
    res = {"space": args.space, "budget": budget, "seeds": args.seeds, "pool": f"{args.half} half",
           "pool_size": len(report), "pool_optimum": float(truth[report].max()),
           "pool_mean": float(truth[report].mean()),
           "picks": {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for k, v in rows.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{stem}.json", json.dumps(res, indent=1))
    acc = SPACES[args.space]["acc"]
    lines = [f"Random search, budget {budget}, {args.seeds} seeds, inside the {args.half} half of the {args.space} "
             f"dev set ({len(report)} architectures; optimum {res['pool_optimum']:.2f}, mean "
             f"{res['pool_mean']:.2f}); `{acc}` of the pick (%), mean ± std over seeds.", "",
             "| scorer | pick's accuracy |", "| --- | ---: |"]
    for k, v in sorted(res["picks"].items(), key=lambda kv: -kv[1]["mean"]):
        lines.append(f"| {k} | {v['mean']:.2f} ± {v['std']:.2f} |")
    lines += ["", "`python benchmarks/bench_search_pool.py " + " ".join(argv or sys.argv[1:]) + "`"]
    atomic_write_text(args.out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
