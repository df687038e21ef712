"""How large are GHN-predicted weights next to PyTorch's initialisation, and which of them
feed batch norm (so that their scale does not change the network)?

For the architectures ``bench_warm_start.py`` fine-tunes (the GHN run's held-out
architectures first, built at the standard training size with the same seeds), each
weight of two or more dimensions is compared with the same weight at PyTorch's default
initialisation: the ratio of Frobenius norms, predicted / initial. Behind batch norm a
weight's scale leaves the function unchanged but divides its gradient, so SGD's effective
step on it shrinks with the square of the ratio; ``ghnas.warm.match_init_norms`` finds
those weights (the output does not move when they are rescaled) and rescales them.

    python benchmarks/probe_weight_norms.py --space darts --n-archs 3
    python benchmarks/probe_weight_norms.py --space nb201 --n-archs 3

Prints one line per architecture and writes ``benchmarks/results/warm_start/weight_norms_<space>.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

import search_spaces  # noqa: E402
from ghnas.proxies import arch_seed  # noqa: E402
from ghnas.warm import match_init_norms, resolve_ghn_arg, warm_start  # noqa: E402


def norm_ratios(space: str, arch: str, build: dict, ghn, seed: int = 0) -> dict:
    """Predicted / initial norm of every weight (>= 2 dims), and which ones feed batch norm."""
    sp = search_spaces.get(space)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch_seed(seed, sp.hash(arch)))  # bench_warm_start's build
        fresh = sp.build(arch, **build)
    init = {k: float(p.detach().norm()) for k, p in fresh.named_parameters() if p.dim() >= 2}
    model = warm_start(copy.deepcopy(fresh), ghn)
    ratios = {k: float(p.detach().norm()) / init[k] for k, p in model.named_parameters() if k in init}
    invariant = match_init_norms(copy.deepcopy(model), init)
    return {"ratios": ratios, "feed_batch_norm": sorted(invariant)}


def main(argv: list[str] | None = None) -> int:
    from _ghnbench import never_trained, parse_build, resolve_ghn_source, write_atomic
    from bench_warm_start import DEFAULT_GHN, STANDARD_SIZES

    from ghnas.metatrain import MetaTrainConfig, _ArchPool

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="darts", choices=sorted(DEFAULT_GHN))
    ap.add_argument("--ghn", default=None, help="default: the shipped GHN of the space")
    ap.add_argument("--size", default=None, help="default: the standard training size (bench_warm_start)")
    ap.add_argument("--n-archs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/warm_start")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    src = resolve_ghn_source(args.ghn or DEFAULT_GHN[args.space])
    cfg = MetaTrainConfig.from_dict(src.config)
    archs, _ = never_trained(_ArchPool(cfg), cfg, args.n_archs, args.seed)
    build = parse_build(args.size or STANDARD_SIZES[args.space])
    ghn = resolve_ghn_arg(str(src.path))
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for arch in archs:
            r = norm_ratios(args.space, arch, build, ghn, args.seed)
            vals = list(r["ratios"].values())
            bn = [r["ratios"][k] for k in r["feed_batch_norm"]]
            row = {"arch": arch, "n_weights": len(vals), "n_feed_batch_norm": len(bn),
                   "median_ratio": statistics.median(vals), "min_ratio": min(vals), "max_ratio": max(vals),
                   "median_ratio_feed_batch_norm": statistics.median(bn) if bn else None,
                   "not_feeding_batch_norm": sorted(set(r["ratios"]) - set(r["feed_batch_norm"])),
                   "ratios": r["ratios"]}
            rows.append(row)
            print(f"{args.space} {build}: {len(vals)} weights, {len(bn)} feed batch norm; predicted / initial "
                  f"norm median {row['median_ratio']:.2f} [{row['min_ratio']:.2f}, {row['max_ratio']:.2f}]; "
                  f"not feeding batch norm: {row['not_feeding_batch_norm']}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"weight_norms_{args.space}.json"
    write_atomic(out, json.dumps({"ghn": src.label, "build": build, "command": "python benchmarks/probe_weight_norms.py "
                                  + " ".join(sys.argv[1:] if argv is None else argv), "archs": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
