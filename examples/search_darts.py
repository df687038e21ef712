"""Regularised evolution over DARTS cells, guided by a GHN.

    python examples/search_darts.py                        # 30 architectures, shipped GHN
    python examples/search_darts.py --ghn runs/meta-darts/ghn.pt --budget 100
    python examples/search_darts.py --quick --ghn my_ghn.pt

Each candidate is a pair of cells (normal, reduction) written as a DARTS ``Genotype``
string; the GHN predicts all parameters of a small network built from them (C=8, 5
layers by default, see ``ghnas.searching.PROXY_BUILD_KWARGS``) and the proxy score is the
accuracy of those predicted parameters on held-out images. Without a GHN the example
falls back to the synflow proxy.
"""
from __future__ import annotations

import argparse
import sys

import ghnas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--population", type=int, default=10)
    ap.add_argument("--sample-size", type=int, default=3)
    ap.add_argument("--ghn", default=None, help="GHN name or checkpoint (default: the one shipped for darts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    args = ap.parse_args(argv)

    from ghnas.ghn import available_ghns

    proxy = "ghn"
    if args.ghn is None and "ghnas-darts-cifar10" not in available_ghns():
        print("no GHN given and none shipped for darts yet: using the synflow proxy instead")
        proxy = "synflow"
    budget, extra = args.budget, {}
    if args.quick:
        budget, extra = 4, dict(build_kwargs={"C": 4, "layers": 2}, batch_size=16)
    result = ghnas.search("darts", budget=budget, proxy=proxy, strategy="evolution",
                          population=min(args.population, budget), sample_size=args.sample_size,
                          ghn=args.ghn, seed=args.seed, out_dir=args.out,
                          progress=not args.quick, **extra)
    print(result.summary(5))
    print(f"\nbest genotype:\n{result.best_arch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
