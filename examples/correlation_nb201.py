"""How well do proxies rank NAS-Bench-201 cells? Kendall tau against benchmark accuracy.

    python examples/correlation_nb201.py                    # 100 cells of the dev file
    python examples/correlation_nb201.py --ghn runs/meta/ghn.pt --n 200
    python examples/correlation_nb201.py --quick            # a few seconds

Reads architectures and their CIFAR-10 test accuracy from a benchmark CSV (default:
``../shared/data/nb201/cifar10_dev.csv``), scores a seeded random subset with each
proxy, and prints rank correlations with bootstrap confidence intervals. A scatter plot
goes to ``--out``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ghnas import correlation
from ghnas.proxies import score

HERE = Path(__file__).resolve().parent
DEFAULT_TRUTH = HERE.parent.parent / "shared" / "data" / "nb201" / "cifar10_dev.csv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--truth", type=Path, default=DEFAULT_TRUTH, help="CSV with arch and test_acc columns")
    ap.add_argument("--n", type=int, default=100, help="architectures to score")
    ap.add_argument("--proxies", default="params,synflow", help="baseline proxies")
    ap.add_argument("--ghn", default=None, help="add the GHN proxy with this GHN (name or path)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/correlation_nb201"))
    ap.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    args = ap.parse_args(argv)

    if not args.truth.is_file():
        print(f"ground truth {args.truth} not found; pass --truth", file=sys.stderr)
        return 2
    truth = correlation.read_truth(args.truth, space="nb201")
    n = 8 if args.quick else args.n
    archs = sorted(truth)
    archs = [archs[i] for i in np.random.default_rng(args.seed).permutation(len(archs))[:n]]
    size = {"C": 4, "N": 1} if args.quick else {"C": 8, "N": 1}
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    if args.ghn:
        proxies.insert(0, "ghn")

    scores, seconds = {}, {}
    for name in proxies:
        proxy = name
        if name == "ghn":
            from ghnas.proxies.ghn import GHNProxy

            proxy = GHNProxy(ghn=args.ghn)
        table = score(archs, "nb201", proxy, data="sample", seed=args.seed, batch_size=32 if args.quick else 200,
                      build_kwargs=size, progress=not args.quick, cache=args.out / "scores.jsonl", device="cpu")
        sign = 1.0 if table.higher_is_better else -1.0
        scores[name] = {a: sign * r.score for a, r in zip(archs, table.rows)}
        seconds[name] = sum(r.seconds for r in table.rows) / len(archs)

    report = correlation.correlate(scores, {a: truth[a] for a in archs}, seconds,
                                   n_boot=100 if args.quick else 1000, seed=args.seed)
    print(f"{len(archs)} NAS-Bench-201 cells, proxies on {size} networks, truth: CIFAR-10 test accuracy\n")
    print(report.table())
    plot = correlation.scatter_plots(scores, truth, args.out / "scatter.png", x_axis="rank")[0]
    print(f"\nscatter plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
