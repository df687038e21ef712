"""Search NAS-Bench-201 for the cell a GHN likes best, then get it ready to fine-tune.

    python examples/search_nb201.py                       # 100 architectures, shipped GHN
    python examples/search_nb201.py --ghn runs/meta/ghn.pt --strategy evolution
    python examples/search_nb201.py --quick --ghn my_ghn.pt   # a few seconds

Without a GHN (none given, none shipped yet) the example falls back to the synflow proxy.
"""
from __future__ import annotations

import argparse
import sys

import ghnas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=100, help="architectures to score")
    ap.add_argument("--strategy", default="random", choices=["random", "evolution", "tpe"])
    ap.add_argument("--ghn", default=None, help="GHN name or checkpoint (default: the one shipped for nb201)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="folder for result.json and search.png")
    ap.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    args = ap.parse_args(argv)

    proxy = "ghn"
    from ghnas.ghn import available_ghns

    if args.ghn is None and "ghnas-nb201-cifar10" not in available_ghns():
        print("no GHN given and none shipped for nb201 yet: using the synflow proxy instead")
        proxy = "synflow"
    kw = {}
    if args.quick:
        kw = dict(budget=6, build_kwargs={"C": 4, "N": 1}, batch_size=32)
    result = ghnas.search("nb201", budget=kw.pop("budget", args.budget), proxy=proxy, strategy=args.strategy,
                          ghn=args.ghn, seed=args.seed, out_dir=args.out,
                          progress=not args.quick, **kw)
    print(result.summary(10))

    # the winner, at the benchmark's full size, initialised by the GHN (for the ghn proxy)
    model = result.build(**({} if args.quick else {"C": 16, "N": 5}))
    n = sum(p.numel() for p in model.parameters())
    init = "GHN-predicted" if result.settings.get("ghn") else "random"
    print(f"\nbest cell: {result.best_arch}\nbuilt with {n:,} parameters ({init} initialisation), "
          f"ready for ghnas.train.train(model, data, ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
