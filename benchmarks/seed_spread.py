"""How much does a proxy's rank correlation depend on its image batch? Collects the
reports of `ghnas correlate` runs that differ only in `--seed` into one table.

The runs behind benchmarks/results/correlate_nb201_seeds (seed 0 is the main report):

    for s in 1 2 3 4; do
      ghnas correlate --space nb201 --truth ../shared/data/nb201/cifar10_dev.csv --proxies ghn \\
          --data cifar10 --data-root <CIFAR-10> --seed $s \\
          --out benchmarks/results/correlate_nb201_seeds/gpu_ghn_seed$s
      ghnas correlate ... --ghn <CPU-trained GHN file> ... --out .../cpu_ghn_seed$s
    done
    python benchmarks/seed_spread.py \\
        "shipped GHN (GPU, 900 steps)=benchmarks/results/correlate_nb201/report.json,benchmarks/results/correlate_nb201_seeds/gpu_ghn_seed*/report.json" \\
        "earlier GHN (CPU, 800 steps)=benchmarks/results/correlate_nb201_cpu_ghn/report.json,benchmarks/results/correlate_nb201_seeds/cpu_ghn_seed*/report.json" \\
        --proxy ghn --out benchmarks/results/correlate_nb201_seeds/README.md

and, for the number of images (the shipped GHN; runs with --batch-size 500 and 1000 into
gpu_ghn_n<N>_seed<S>, seeds 0-2):

    python benchmarks/seed_spread.py \
        "200 images=benchmarks/results/correlate_nb201/report.json,benchmarks/results/correlate_nb201_seeds/gpu_ghn_seed[12]/report.json" \
        "500 images=benchmarks/results/correlate_nb201_seeds/gpu_ghn_n500_seed*/report.json" \
        "1000 images=benchmarks/results/correlate_nb201_seeds/gpu_ghn_n1000_seed*/report.json" \
        --proxy ghn --out benchmarks/results/correlate_nb201_seeds/by_images.md
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import numpy as np


def kendall_taus(patterns: str, proxy: str) -> list[float]:
    """Kendall tau of ``proxy`` in every report matched by the comma-separated glob patterns."""
    out = []
    for pattern in patterns.split(","):
        files = sorted(glob.glob(pattern.strip()))
        if not files:
            raise SystemExit(f"no report matches {pattern!r}")
        for f in files:
            rows = [p for p in json.loads(Path(f).read_text())["proxies"] if p["proxy"] == proxy]
            if not rows:
                raise SystemExit(f"{f} has no proxy {proxy!r}")
            out.append(rows[0]["kendall_tau"]["estimate"])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("groups", nargs="+", help="LABEL=GLOB[,GLOB...] of report.json files, one group per row")
    ap.add_argument("--proxy", default="ghn")
    ap.add_argument("--out", default=None, help="write the table as Markdown here")
    args = ap.parse_args(argv)
    lines = [f"# Kendall tau of `{args.proxy}` on the NB201 dev set: one row per setting, one column per image seed",
             "", "Each run: `ghnas correlate --proxies ghn --data cifar10 --seed S [--batch-size N] "
             "[--ghn FILE]` (N validation images, 200 by default, drawn with seed S; the same 491 "
             "architectures and ground truth). Command: `python benchmarks/seed_spread.py` (its "
             "docstring lists the runs).", ""]
    rows = []
    for group in args.groups:
        label, _, patterns = group.partition("=")
        taus = kendall_taus(patterns, args.proxy)
        rows.append((label, taus))
    n = max(len(t) for _, t in rows)
    lines.append("| setting | " + " | ".join(f"seed {i}" for i in range(n)) + " | mean | std | min | max |")
    lines.append("| --- |" + " ---: |" * (n + 4))
    for label, taus in rows:
        cells = [f"{t:.3f}" for t in taus] + [""] * (n - len(taus))
        a = np.array(taus)
        lines.append(f"| {label} | " + " | ".join(cells) +
                     f" | {a.mean():.3f} | {a.std(ddof=1):.3f} | {a.min():.3f} | {a.max():.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
