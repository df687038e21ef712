"""Where our proxy scores disagree with NASLib's columns: is it the network size?

On the first ``--n`` TUNING-half architectures of a dev set (even rows; the reporting half
is never read), each proxy is scored at the proxy size and at the benchmark's own network
(``bench_proxies.SPACES``; for DARTS C=16 with 8 cells, the size of NAS-Bench-Suite-Zero's
DARTS network) and compared with the truth (Kendall tau) and with NASLib's column for the
same proxy (Spearman rho), next to NASLib's own tau on the same architectures. If our
tau moves towards NASLib's at the larger size, the size explains the gap.

    python benchmarks/probe_naslib_gap.py --space darts --proxies snip,grad_norm --n 100

Scores are cached (resumable) under ``runs/naslib_gap/<space>/``, apart from bench_proxies'
caches (whose size choice a partial set of larger-network rows would change); the proxy-size
rows come from the committed score table. Writes ``benchmarks/results/naslib_gap_<space>.{json,md}``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
from bench_proxies import (NASLIB, SPACES, Images, cache_file, proxy_direction, read_cache,  # noqa: E402
                           read_rows, restore_scores, run_job, scores_table)

from ghnas._io import atomic_write_text  # noqa: E402
from ghnas.correlation import kendall_tau, spearman_rho  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", choices=sorted(SPACES), required=True)
    ap.add_argument("--proxies", default="snip,grad_norm")
    ap.add_argument("--n", type=int, default=100, help="first N tuning-half architectures")
    ap.add_argument("--sizes", default="proxy,bench")
    ap.add_argument("--root", type=Path, default=REPO.parent)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cache_dir = args.cache_dir or REPO / "runs/naslib_gap" / args.space
    restore_scores(scores_table(args.space), cache_dir)
    archs, truth, rows = read_rows(args.space, args.root)
    idx = list(range(0, len(archs), 2))[:args.n]
    images = Images(args.root / "shared/data/cifar10")
    proxies = [p for p in args.proxies.split(",") if p]
    sizes = [s for s in args.sizes.split(",") if s]
    for p in proxies:
        if p not in NASLIB:
            raise SystemExit(f"{p} has no NASLib column (those with one: {', '.join(sorted(NASLIB))})")
    t_truth = [truth[i] for i in idx]
    out: dict = {"space": args.space, "n": len(idx), "rows": "first tuning-half (even) rows", "proxies": {}}
    for p in proxies:
        col = NASLIB[p]
        ref = [float(rows[i][col]) for i in idx]
        sign = 1.0 if proxy_direction(p) else -1.0
        entry = {"naslib_kendall": kendall_tau([sign * v for v in ref], t_truth), "sizes": {}}
        for size in sizes:
            t0 = time.time()
            run_job(args.space, p, size, 0, [archs[i] for i in idx], images, cache_dir, 50, print)
            got = read_cache(cache_file(cache_dir, p, size, 0))
            ours = [got[archs[i]][0] for i in idx]
            entry["sizes"][size] = {"build": SPACES[args.space]["sizes"][size],
                                    "kendall": kendall_tau([sign * v for v in ours], t_truth),
                                    "spearman_vs_naslib": spearman_rho(ours, ref),
                                    "wall_s": round(time.time() - t0, 1)}
        out["proxies"][p] = entry
    path = args.out or REPO / "benchmarks" / "results" / f"naslib_gap_{args.space}"
    atomic_write_text(path.with_suffix(".json"), json.dumps(out, indent=1) + "\n")
    lines = [f"# Our proxies against NASLib's columns, by network size ({args.space})", "",
             f"First {len(idx)} tuning-half architectures (even rows), image seed 0. Kendall tau against "
             f"the truth; Spearman rho between our scores and NASLib's column for the same proxy.", "",
             f"`python benchmarks/probe_naslib_gap.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "| proxy | NASLib tau | size | build | our tau | rho vs NASLib |", "| --- | ---: | --- | --- | ---: | ---: |"]
    for p, e in out["proxies"].items():
        for size, s in e["sizes"].items():
            lines.append(f"| {p} | {e['naslib_kendall']:.3f} | {size} | {s['build']} | {s['kendall']:.3f} | "
                         f"{s['spearman_vs_naslib']:.3f} |")
    atomic_write_text(path.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
