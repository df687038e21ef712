"""Cost of TPE with a set-level aggregate (issue 11): the study is rebuilt whenever the
whole-set ranks change which trials TPE counts as good.

The scores are synthetic (two members computed from the encoding, their rank mean over
every architecture proposed so far), so the time is the strategy's own overhead, not a
proxy's. Compared: fixed scores (no rebuild), rebuild when TPE's good set changes (what
ghnas does), rebuild on every change of the values; the last two must propose the same.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/bench_tpe_aggregate.py --budgets 100 300
"""
from __future__ import annotations

import argparse
import time

import search_spaces
import ghnas.searching.strategies as strategies
from ghnas.proxies import rank_aggregate
from ghnas.searching import run_strategy

NB = search_spaces.get("nb201")


def m1(a: str) -> float:
    return float(sum(NB.encode(a)))


def m2(a: str) -> float:
    e = NB.encode(a)
    return float(e[0] * 7 % 5 + e[2])


def aggregate_run(budget: int, seed: int) -> tuple[float, list[str]]:
    seen: list[str] = []

    def current(archs):
        agg = dict(zip(seen, rank_aggregate([[m1(a) for a in seen], [m2(a) for a in seen]], [True, True])))
        return [agg[a] for a in archs]

    def evaluate(archs):
        seen.extend(archs)
        return current(archs)

    t = time.perf_counter()
    log = run_strategy("tpe", NB, budget, evaluate, seed=seed, current=current)
    return time.perf_counter() - t, [a for a, _ in log]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("budget  fixed_s  good_set_s  every_change_s  same_proposals")
    for budget in args.budgets:
        t = time.perf_counter()
        run_strategy("tpe", NB, budget, lambda archs: [m1(a) + m2(a) for a in archs], seed=args.seed)
        fixed = time.perf_counter() - t
        good, log_good = aggregate_run(budget, args.seed)
        keep = strategies._same_proposals
        strategies._same_proposals = lambda a, b, sign, sampler: list(a) == list(b)
        try:
            every, log_every = aggregate_run(budget, args.seed)
        finally:
            strategies._same_proposals = keep
        print(f"{budget:6d}  {fixed:7.1f}  {good:10.1f}  {every:14.1f}  {log_good == log_every}", flush=True)


if __name__ == "__main__":
    main()
