"""Choose the default zero-shot proxy of a space on the tuning half, report it on the other.

Reads the per-architecture scores that ``benchmarks/bench_proxies.py`` cached (one file per
proxy, network size and image seed; seed 0 here) and, optionally, GHN-proxy scores cached
with ``--ghn`` (rows of the same table). On the TUNING half of the dev set (even row
index) it grows an aggregate greedily: starting from the best single proxy, it adds the
member that raises the aggregate's Kendall tau the most, for both aggregations (rank mean
and AZ-NAS's log-rank), while the members' summed seconds per architecture stay within
``--max-s-per-arch`` (the speed target: 100 architectures in 60 s with image loading). Only
then is the chosen aggregate scored once on the REPORTING half (odd rows), with and without
the GHN proxy as a member, next to the best single proxies.

    python benchmarks/choose_default.py --space nb201 --ghn ghn:1000@proxy=ghn-<digest>-i1000
    python benchmarks/choose_default.py --space darts --limit 200

Writes ``benchmarks/results/default_<space>/{choice.json,README.md}``. The chosen member
lists are what ``ghnas.proxies.zero_shot.DEFAULTS`` holds.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_proxies import SPACES, open_scores, proxy_direction, read_cache, read_rows, scores_table  # noqa: E402

from ghnas._io import atomic_write_text  # noqa: E402
from ghnas.correlation import bootstrap_ci, kendall_tau, spearman_rho, top_k_precision  # noqa: E402
from ghnas.proxies.ensemble import rank_aggregate  # noqa: E402

#: the aggregations the selection tries (each a method of ghnas.proxies.ensemble.rank_aggregate)
METHODS = ("mean", "log_rank")


def read_scores(source: Path, seed: int = 0) -> dict[tuple[str, str], dict[str, tuple[float, float]]]:
    """``{(proxy, size): {arch: (score, seconds)}}`` of image seed ``seed``, from the committed
    table ``benchmarks/results/proxy_scores/<space>.csv.gz`` (columns proxy, size, seed, arch,
    score, seconds) or from a folder of bench_proxies' ``<proxy>__<size>__s0.jsonl`` caches."""
    out: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    if source.name.endswith((".csv", ".csv.gz")):
        with open_scores(source) as f:
            for r in csv.DictReader(f):
                if r["seed"] == str(seed):
                    out.setdefault((r["proxy"], r["size"]), {})[r["arch"]] = (float(r["score"]), float(r["seconds"]))
        return out
    for f in sorted(source.glob(f"*__s{seed}.jsonl")):
        proxy, size, _ = f.name[:-len(".jsonl")].split("__")
        out[(proxy, size)] = read_cache(f)
    return out


def load_columns(space: str, source: Path, archs: list[str], extra: dict[str, str], seed: int = 0,
                 required: list[str] | None = None, sizes: dict[str, str] | None = None) -> dict[str, dict]:
    """``{member label: {'scores': [...], 'seconds': s/arch, 'hib': bool}}`` for every
    proxy of ``source`` scored at the proxy size on every architecture of ``required``
    (default ``archs``; scores are read for ``archs`` only), plus the GHN labels of ``extra``
    (``{'ghn:1000@proxy': 'ghn-<digest>-i1000'}``: the rows of that proxy).

    The default scores every member on one network (the caller's size, by default the
    proxy size), so the candidates are the proxy-size columns, whatever size the benchmark
    table reports a proxy at (``bench_proxies.py --phases pool`` scores them on all rows).
    ``required`` lets a look at the tuning half alone keep the candidates of the full run;
    ``sizes`` (``{proxy: size}``) adds each proxy's column at that size (bench_search_pool
    compares single proxies at the size the benchmark table chose for them)."""
    table = read_scores(source, seed)
    out: dict[str, dict] = {}
    required = archs if required is None else required

    def column(proxy: str, size: str, got: dict[str, tuple[float, float]], hib: bool) -> dict:
        return {"proxy": proxy, "size": size, "scores": [got[a][0] for a in archs],
                "seconds": float(np.median([got[a][1] for a in archs])), "hib": hib}

    for (proxy, size), got in table.items():
        if proxy.startswith("ghn") or (size != "proxy" and (sizes or {}).get(proxy) != size):
            continue  # GHN scores come in via ``extra``
        if all(a in got for a in required):
            out[f"{proxy}@{size}"] = column(proxy, size, got, proxy_direction(proxy))
    for label, proxy in extra.items():
        size = label.split("@")[-1]
        got = table.get((proxy, size), {})
        missing = [a for a in archs if a not in got]
        if missing:
            raise SystemExit(f"{source} lacks {proxy} scores ({size}) of {len(missing)} dev architectures")
        out[label] = column(proxy, size, got, True)
    return out


def defaults_entry(members: list[str], method: str) -> str:
    """The chosen members as ``zero_shot.DEFAULTS`` spells them: bench_proxies' settings
    and batch size of each (seed 0), where they differ from the proxy's own."""
    from bench_proxies import as_member

    specs = []
    for label in members:
        m = as_member(label.split("@")[0])
        args = [repr(m.proxy)] + ([repr(m.settings)] if m.settings else []) + \
            ([f"batch_size={m.batch_size}"] if m.batch_size is not None else [])
        specs.append(f"Member({', '.join(args)})")
    return f"(({', '.join(specs)},), {method!r})"


#: measured costs of member groups that share work: ``{frozenset of proxy names: s/arch}``
#: (from the ``a+b`` rows of ``--costs``; AZ-NAS's statistics come from one pass)
GroupCosts = dict[frozenset, float]


def cost_of(cols: dict[str, dict], members: list[str] | tuple[str, ...], groups: GroupCosts | None = None) -> float:
    """Summed s/arch of ``members``, where a measured group of them (``groups``) costs
    what it was measured at together (largest groups first)."""
    left = {m.split("@")[0]: m for m in members}
    total = 0.0
    for group, secs in sorted((groups or {}).items(), key=lambda g: -len(g[0])):
        if group <= set(left) and len(group) > 1:
            total += secs
            for name in group:
                del left[name]
    return total + sum(cols[m]["seconds"] for m in left.values())


def tau_of(cols: dict[str, dict], members: list[str], idx: list[int], truth: np.ndarray, method: str) -> float:
    agg = rank_aggregate([[cols[m]["scores"][i] for i in idx] for m in members], [cols[m]["hib"] for m in members],
                         method)
    return kendall_tau(agg, truth[idx])


def greedy(cols: dict[str, dict], idx: list[int], truth: np.ndarray, method: str, budget_s: float,
           pool: list[str], max_members: int = 6, min_gain: float = 0.01,
           groups: GroupCosts | None = None) -> list[dict]:
    """Forward selection on ``idx``; returns the path (members and tau after each addition).

    A member joins only if it lifts tau by at least ``min_gain``: smaller gains on 246
    architectures are within the noise of the selection itself."""
    single = {m: kendall_tau([(v if cols[m]["hib"] else -v) for v in (cols[m]["scores"][i] for i in idx)],
                             truth[idx]) for m in pool if cols[m]["seconds"] <= budget_s}
    chosen = [max(single, key=lambda m: single[m])]
    path = [{"members": list(chosen), "tau": single[chosen[0]]}]
    while len(chosen) < max_members:
        best, best_tau = None, path[-1]["tau"]
        for m in pool:
            if m in chosen or cost_of(cols, chosen + [m], groups) > budget_s:
                continue
            t = tau_of(cols, chosen + [m], idx, truth, method)
            if t > best_tau + min_gain:
                best, best_tau = m, t
        if best is None:
            break
        chosen.append(best)
        path.append({"members": list(chosen), "tau": best_tau})
    return path


def best_subsets(cols: dict[str, dict], idx: list[int], truth: np.ndarray, method: str, budget_s: float,
                 pool: list[str], max_members: int = 5, min_gain: float = 0.01,
                 groups: GroupCosts | None = None) -> list[dict]:
    """Every subset of ``pool`` within the budget, up to ``max_members``: the best subset of
    each size on ``idx``, as a path of growing size that stops where one more member gains
    less than ``min_gain`` over the best smaller subset.

    Greedy forward selection keeps every member it took; this search can swap one set for
    another (two cheap members for an expensive one, say), at the price of comparing many
    more subsets on the same tuning architectures, hence the same parsimony rule."""
    from itertools import combinations

    cheap = [m for m in pool if cols[m]["seconds"] <= budget_s]
    path: list[dict] = []
    for k in range(1, max_members + 1):
        best, best_tau = None, -np.inf
        for sub in combinations(cheap, k):
            if cost_of(cols, sub, groups) > budget_s:
                continue
            t = tau_of(cols, list(sub), idx, truth, method)
            if t > best_tau:
                best, best_tau = list(sub), t
        if best is None or (path and best_tau < path[-1]["tau"] + min_gain):
            break
        path.append({"members": best, "tau": float(best_tau)})
    return path


SEARCHES = {"greedy": greedy, "subsets": best_subsets}


def seed_spread(args, archs: list[str], truth: np.ndarray, members: list[str], idx: list[int],
                method: str) -> dict[str, float]:
    """Kendall tau of the chosen aggregate on ``idx`` for every image seed whose scores of
    all members (a GHN member's rows too, ``--ghn``) are in the table
    (``bench_proxies.py --phases seeds``)."""
    out = {}
    extra = {k: v for k, v in (x.split("=", 1) for x in args.ghn) if k in members}
    for seed in range(10):
        try:
            cols = load_columns(args.space, args.scores, archs, extra, seed=seed)
        except SystemExit:
            continue
        if all(m in cols for m in members):
            out[str(seed)] = tau_of(cols, members, idx, truth, method)
    return out


def report(cols: dict[str, dict], members: list[str], idx: list[int], truth: np.ndarray, method: str,
           groups: GroupCosts | None = None) -> dict:
    agg = np.asarray(rank_aggregate([[cols[m]["scores"][i] for i in idx] for m in members],
                                    [cols[m]["hib"] for m in members], method))
    t = truth[idx]
    return {"members": members, "method": method, "n": len(idx),
            "kendall": kendall_tau(agg, t), "spearman": spearman_rho(agg, t),
            "top10": top_k_precision(agg, t, 0.1),
            "kendall_ci": [(ci := bootstrap_ci(kendall_tau, agg, t, n_boot=1000, seed=0)).low, ci.high],
            "s_per_arch": cost_of(cols, members, groups)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", choices=sorted(SPACES), required=True)
    ap.add_argument("--scores", type=Path, default=None,
                    help="per-architecture scores: a table (default benchmarks/results/proxy_scores/<space>.csv.gz) "
                         "or a folder of bench_proxies caches")
    ap.add_argument("--shared", type=Path, default=REPO.parent, help="folder holding shared/")
    ap.add_argument("--ghn", action="append", default=[], metavar="LABEL=PROXY",
                    help="a GHN proxy's rows of the scores as a candidate member, e.g. ghn:1000@proxy=ghn-<digest>-i1000 (label name:images@size = rows)")
    ap.add_argument("--costs", type=Path, default=None,
                    help="bench_proxy_speed.py's <space>.json: each member's cost is its end-to-end "
                         "s/arch there (default: the median s/arch recorded in the scores)")
    ap.add_argument("--max-s-per-arch", type=float, default=0.45,
                    help="budget of the members' summed s/arch (the target: 100 architectures in 60 s)")
    ap.add_argument("--min-gain", type=float, default=0.01, help="smallest tau gain that adds a member")
    ap.add_argument("--search", choices=sorted(SEARCHES), default="greedy",
                    help="greedy forward selection, or the best subset of each size within the budget")
    ap.add_argument("--tuning-only", action="store_true",
                    help="print the choice and the selection paths (tuning half) and stop: nothing is "
                         "computed on the reporting half and nothing is written")
    ap.add_argument("--limit", type=int, default=None, help="use the first N rows of the dev set")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.scores is None:
        args.scores = scores_table(args.space)
    archs, truth, _ = read_rows(args.space, args.shared)
    if args.limit:  # the first rows only (what bench_proxies --limit scored); halves as before
        archs, truth = archs[:args.limit], truth[:args.limit]
    truth = np.asarray(truth)
    every = list(archs)
    if args.tuning_only:  # the tuning half only: its scores are all that is read
        archs, truth = archs[0::2], truth[0::2]
    extra = dict(x.split("=", 1) for x in args.ghn)
    cols = load_columns(args.space, args.scores, archs, extra, required=every)
    groups: GroupCosts = {}
    if args.costs is not None:
        speed = json.loads(args.costs.read_text())["rows"]
        groups = {frozenset(k.split("+")): r["s_per_arch"] for k, r in speed.items()
                  if "+" in k and r["size"] == "proxy"}
        for label, c in cols.items():
            name = label.split("@")[0]
            if name in speed and speed[name]["size"] == "proxy":
                c["seconds"] = speed[name]["s_per_arch"]
            elif c["proxy"] not in extra.values():
                c["seconds"] = float("inf")  # unmeasured: not a candidate
    tune, rep = list(range(0, len(archs), 2)), list(range(1, len(archs), 2))
    if args.tuning_only:
        tune, rep = list(range(len(archs))), []
    ghn_labels = set(extra)
    zero_cost = [m for m in cols if m not in ghn_labels]
    result: dict = {"space": args.space, "rows": len(archs), "n_tuning": len(tune), "n_reporting": len(rep),
                    "budget_s_per_arch": args.max_s_per_arch, "search": args.search, "available": sorted(cols), "paths": {}}
    # every candidate alone on the tuning half: what the selection starts from
    result["tuning_singles"] = {m: tau_of(cols, [m], tune, truth, "mean") for m in sorted(cols)}
    best = None
    for method in METHODS:
        for with_ghn in ([False, True] if ghn_labels else [False]):
            pool = zero_cost + (sorted(ghn_labels) if with_ghn else [])
            path = SEARCHES[args.search](cols, tune, truth, method, args.max_s_per_arch, pool,
                                         min_gain=args.min_gain, groups=groups)
            key = f"{method}{'+ghn' if with_ghn else ''}"
            result["paths"][key] = path
            # the GHN joins the default where it wins on the tuning half like any member
            if best is None or path[-1]["tau"] > best[1][-1]["tau"]:
                best = (method, path)
    method, path = best
    members = path[-1]["members"]
    result["choice"] = {"method": method, "members": members, "tuning_kendall": path[-1]["tau"],
                        "defaults_entry": defaults_entry(members, method)}
    if args.tuning_only:  # look at choices without seeing the held-out half
        print(json.dumps({"choice": result["choice"], "paths": result["paths"],
                          "tuning_singles": result["tuning_singles"]}, indent=1))
        return
    result["reporting"] = {"default": report(cols, members, rep, truth, method, groups)}
    # with and without the GHN: the other paths' choices, and the default with the GHN
    # added or taken out
    for key, p in result["paths"].items():
        if p[-1]["members"] != members and (key.endswith("+ghn") or set(members) & ghn_labels):
            result["reporting"][f"chosen {'with' if key.endswith('+ghn') else 'without'} the GHN ({key})"] = \
                report(cols, p[-1]["members"], rep, truth, key.split("+")[0], groups)
    for g in sorted(ghn_labels):
        if g in members:
            rest = [m for m in members if m != g]
            if rest:
                result["reporting"][f"default - {g}"] = report(cols, rest, rep, truth, method, groups)
        else:
            result["reporting"][f"default + {g}"] = report(cols, members + [g], rep, truth, method, groups)
        result["reporting"][g] = report(cols, [g], rep, truth, method, groups)
    result["reporting"]["default"]["kendall_by_seed"] = seed_spread(args, archs, truth, members, rep, method)
    singles = sorted(zero_cost, key=lambda m: -tau_of(cols, [m], tune, truth, "mean"))[:5]
    for m in singles:
        result["reporting"][m] = report(cols, [m], rep, truth, "mean", groups)
    out = args.out or REPO / "benchmarks" / "results" / f"default_{args.space}"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "choice.json", json.dumps(result, indent=1))
    lines = [f"# Default zero-shot proxy for {args.space}", "",
             f"Chosen on the tuning half (even rows, n={len(tune)}, image seed 0) by "
             + ("greedy forward selection" if args.search == "greedy" else "the best subset of each size") + ", "
             f"members limited to {args.max_s_per_arch} s/arch in all, a member added only for a tau gain >= {args.min_gain}: **{method}** aggregate of "
             f"{', '.join(members)} (tuning Kendall tau {path[-1]['tau']:.3f}). Reported once on the "
             f"reporting half (odd rows, n={len(rep)}); 95% bootstrap CI over architectures.", "",
             "| scorer | members | KT reporting [CI] | SP reporting | top-10% | s/arch |", "| --- | --- | --- | ---: | ---: | ---: |"]
    for name, r in result["reporting"].items():
        lines.append(f"| {name} | {' + '.join(r['members'])} ({r['method']}) | {r['kendall']:.3f} "
                     f"[{r['kendall_ci'][0]:.3f}, {r['kendall_ci'][1]:.3f}] | {r['spearman']:.3f} | "
                     f"{r['top10']:.3f} | {r['s_per_arch']:.3f} |")
    by_seed = result["reporting"]["default"]["kendall_by_seed"]
    lines += ["", "The default's reporting-half Kendall tau per image seed: "
              + ", ".join(f"seed {k}: {v:.3f}" for k, v in by_seed.items())
              + (f" (spread max - min {max(by_seed.values()) - min(by_seed.values()):.3f})" if len(by_seed) > 1 else
                 " (other seeds not scored yet: `bench_proxies.py --phases seeds`)")]
    lines += ["", "As `ghnas.proxies.zero_shot.DEFAULTS` holds it (each member with the settings and "
              "batch it was measured with):", "", f"    {result['choice']['defaults_entry']}"]
    lines += ["", "Every candidate alone on the tuning half (Kendall tau): " + ", ".join(
        f"{m} {t:.3f}" for m, t in sorted(result["tuning_singles"].items(), key=lambda kv: -kv[1]))]
    lines += ["", "Selection paths on the tuning half (members after each step, Kendall tau):", ""]
    for key, p in result["paths"].items():
        lines.append(f"- {key}: " + " -> ".join(f"{'+'.join(s['members'])} ({s['tau']:.3f})" for s in p))
    lines += ["", "`python benchmarks/choose_default.py " + " ".join(argv or sys.argv[1:]) + "`"]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
