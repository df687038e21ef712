"""Average the weights of several GHN checkpoints (stochastic weight averaging over the
snapshots of one run), to score the average as one more candidate GHN.

SWA (Izmailov et al., 2018) takes snapshots of a run at a constant, moderate learning rate and
averages them uniformly; ``train_shipped_ghns.py --fork-from`` gives such a stretch (a branch
whose ``--steps`` puts it between the two learning-rate drops), and its kept snapshots
(``ghn_step<N>.pt``) are averaged here:

    python benchmarks/train_shipped_ghns.py --space darts --fork-from benchmarks/runs/ghn-darts \\
        --out runs/ghn-darts-swa --steps 7000 --data-root ../shared/data/cifar10
    python benchmarks/average_ghns.py runs/ghn-darts-swa/ghn_swa.pt runs/ghn-darts-swa/ghn_step5[1-5]*.pt

The snapshots must be the same GHN (same configuration); the average is written in the same
checkpoint format, so ``ghnas.load_ghn`` and ``choose_ranking_ghn.py --candidate`` read it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel

from ghnas.ghn import GHN2, load_ghn, save_ghn


def average_ghns(paths: list[Path]) -> GHN2:
    """The uniform average of the GHNs saved at ``paths`` (at least two, one configuration)."""
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two checkpoints, got {len(paths)}")
    first = load_ghn(paths[0])
    avg = AveragedModel(first)  # a running uniform mean; its first update takes the first GHN
    avg.update_parameters(first)
    for p in paths[1:]:
        g = load_ghn(p)
        if g.config != first.config:
            raise ValueError(f"{p} is another GHN ({g.config}) than {paths[0]} ({first.config})")
        avg.update_parameters(g)
    return avg.module


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="where to write the averaged GHN")
    ap.add_argument("ghns", type=Path, nargs="+", help="the checkpoints to average (two or more)")
    args = ap.parse_args(argv)
    missing = [str(p) for p in args.ghns if not p.exists()]
    if missing:
        raise SystemExit(f"missing checkpoints: {', '.join(missing)}")
    try:
        ghn = average_ghns(args.ghns)
    except ValueError as e:
        raise SystemExit(str(e))
    save_ghn(ghn, args.out)
    print(f"averaged {len(args.ghns)} GHNs ({', '.join(p.name for p in args.ghns)}) into {args.out}", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
