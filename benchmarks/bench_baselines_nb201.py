"""Check ghnas's baseline proxies against NASLib on the NAS-Bench-201 development set.

For each architecture of ``../shared/data/nb201/cifar10_dev.csv`` (491 rows) and each
baseline proxy, we score the NB201 network (C=16, N=5, built by ``search_spaces``) on one
batch of CIFAR-10 training images and report:

* Spearman's rho between our values and NASLib's column for the same proxy (the check:
  >= 0.9 wanted; ``naswot`` has no NASLib column);
* Kendall's tau and Spearman's rho of our values vs the benchmark's ``test_acc``, next to
  the same statistics for NASLib's column on the same rows;
* seconds per architecture (build + score, on this machine, median and mean);
* for the proxies named by ``--self-check`` (default ``jacob_cov,grasp``), Spearman's rho
  between two of our own runs with different seeds (another initialisation and another
  batch). NASLib's values come from one random initialisation and one random batch as
  well, so this is the ceiling that agreement with NASLib can reach for a noisy proxy.

Results go to ``benchmarks/results/baselines_nb201.{json,md}`` and one CSV per proxy
under ``benchmarks/results/baselines_nb201/``. Every score is also appended, as soon as
it is known, to a JSON-lines cache under ``runs/bench_baselines_nb201/`` (the
``cache=`` of :func:`ghnas.proxies.score`), so an interrupted run resumes where it
stopped; architectures are processed in chunks across all proxies so that partial runs
cover every proxy.

Batch size: 32 by default, because NASLib's values were evidently computed with 32
images: ``jacob_cov <= -B`` always holds for a batch of B images (each eigenvalue term
``log(v) + 1/v`` is at least 1), and NASLib's ``jacov`` column tops out at -32.23.
(Its runner config, ``naslib/runners/zc/zc_config.yaml``, also says ``batch_size: 32``.)

Usage::

    python benchmarks/bench_baselines_nb201.py --n 30            # a quick subset
    nice -n 10 python benchmarks/bench_baselines_nb201.py        # all 491 (hours on 2 CPU cores)
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from ghnas import correlation  # noqa: E402
from ghnas.proxies import score  # noqa: E402

PROXIES = ["params", "flops", "synflow", "naswot", "jacob_cov", "snip", "grad_norm", "fisher", "grasp"]
NASLIB_COLUMN = {"params": "naslib_params", "flops": "naslib_flops", "synflow": "naslib_synflow",
                 "jacob_cov": "naslib_jacov", "snip": "naslib_snip", "grad_norm": "naslib_grad_norm",
                 "fisher": "naslib_fisher", "grasp": "naslib_grasp"}
TARGET = 0.9


def read_dev_set(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_data(root: Path, batch_size: int, seed: int):
    """One seeded batch of normalised CIFAR-10 training images (no augmentation)."""
    from ghnas import data as gdata

    train = gdata.load("cifar10", root=root, split="train")
    x, y = next(train.batches(batch_size, shuffle=True, seed=seed))
    return [(x, y)]


def summarise(proxy: str, rows: list[dict[str, str]], table, other_seed=None) -> dict:
    ours = table.scores
    acc = [float(r["test_acc"]) for r in rows]
    # cached rows keep the seconds measured when they were computed
    seconds = [r.seconds for r in table.rows]
    out = {
        "proxy": proxy,
        "n": len(rows),
        "n_nonfinite": sum(not math.isfinite(v) for v in ours),
        "kendall_vs_test_acc": correlation.kendall_tau(ours, acc),
        "spearman_vs_test_acc": correlation.spearman_rho(ours, acc),
        "seconds_per_arch_median": statistics.median(seconds),
        "seconds_per_arch_mean": statistics.fmean(seconds),
    }
    col = NASLIB_COLUMN.get(proxy)
    if col is not None:
        ref = [float(r[col]) for r in rows]
        out.update({
            "naslib_column": col,
            "spearman_vs_naslib": correlation.spearman_rho(ours, ref),
            "naslib_kendall_vs_test_acc": correlation.kendall_tau(ref, acc),
            "naslib_spearman_vs_test_acc": correlation.spearman_rho(ref, acc),
        })
        if proxy in ("params", "flops"):
            out["max_abs_diff_vs_naslib"] = max(abs(a - b) for a, b in zip(ours, ref))
    if other_seed is not None:
        # correlation treats its second argument as ground truth, which must be finite:
        # put our degenerate (-inf) networks just below the worst finite score, tied
        other = other_seed.scores
        floor = min(v for v in other if math.isfinite(v)) - 1.0
        other = [v if math.isfinite(v) else floor for v in other]
        out["spearman_seed_vs_seed"] = correlation.spearman_rho(ours, other)
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_proxy_csv(path: Path, proxy: str, rows: list[dict[str, str]], table) -> None:
    col = NASLIB_COLUMN.get(proxy)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["arch", "ours", "naslib", "test_acc", "seconds"])
        for r, row in zip(rows, table.rows):
            w.writerow([r["arch"], repr(row.score), r[col] if col else "", r["test_acc"],
                        f"{row.seconds:.4f}"])
    os.replace(tmp, path)


def markdown(results: list[dict], meta: dict) -> str:
    def f(v, nd=3):
        return "" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    lines = [
        "# Baseline zero-cost proxies vs NASLib on NAS-Bench-201 (CIFAR-10 dev set)",
        "",
        f"{meta['n']} architectures, NB201 networks C={meta['C']} N={meta['N']}, one batch of "
        f"{meta['batch_size']} CIFAR-10 training images (seed {meta['seed']}), "
        f"{meta['device']}, {meta['threads']} torch thread(s), machine: {meta['machine']}.",
        "",
        "| proxy | Spearman vs NASLib | Spearman seed 0 vs seed 1 (ours) | KT / SP vs test_acc (ours) "
        "| KT / SP vs test_acc (NASLib) | s/arch (median) | non-finite |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        ok = ""
        if r.get("spearman_vs_naslib") is not None:
            ok = " ✓" if r["spearman_vs_naslib"] >= TARGET else " ✗"
        nas = (f"{f(r.get('naslib_kendall_vs_test_acc'))} / {f(r.get('naslib_spearman_vs_test_acc'))}"
               if r.get("naslib_column") else "n/a")
        lines.append(
            f"| {r['proxy']} | {f(r.get('spearman_vs_naslib')) or 'n/a'}{ok} | "
            f"{f(r.get('spearman_seed_vs_seed')) or ''} | "
            f"{f(r['kendall_vs_test_acc'])} / {f(r['spearman_vs_test_acc'])} | {nas} | "
            f"{f(r['seconds_per_arch_median'], 3)} | {r['n_nonfinite']} |")
    notes = []
    for r in results:
        if "max_abs_diff_vs_naslib" in r:
            notes.append(f"- {r['proxy']}: largest absolute difference from NASLib's value "
                         f"{r['max_abs_diff_vs_naslib']:.2g} (millions).")
    for r in results:
        rho = r.get("spearman_vs_naslib")
        if rho is not None and rho < TARGET:
            self_rho = r.get("spearman_seed_vs_seed")
            why = (f"two of our own runs with different seeds agree only to {self_rho:.3f}, so "
                   "the shortfall is the proxy's sensitivity to the random initialisation and "
                   "batch (NASLib's column is one such draw), not a different computation"
                   if self_rho is not None and self_rho <= rho + 0.05 else
                   "see the per-architecture CSV")
            notes.append(f"- {r['proxy']} is below the target ({rho:.3f}): {why}.")
    nonfinite = [f"{r['proxy']} {r['n_nonfinite']}" for r in results if r["n_nonfinite"]]
    if nonfinite:
        notes.append("- Non-finite scores are degenerate networks (no path from input to output, "
                     "or all activation codes equal), stored as -inf and ranked last, as NASLib's "
                     f"placeholder values rank them: {', '.join(nonfinite)}.")
    notes.append(f"- Batch size {meta['batch_size']}: jacob_cov <= -B for a batch of B images, and "
                 "NASLib's jacov column tops out at -32.23, so NASLib used 32 images.")
    lines += ["", "Notes:", "", *notes]
    lines += ["", f"Target: Spearman vs NASLib >= {TARGET}. KT = Kendall tau, SP = Spearman rho. "
              "Seconds are wall time per architecture (build + score) on a shared machine. "
              "'seed 0 vs seed 1': our own run repeated with another initialisation and batch, "
              "the ceiling for agreement with NASLib's single run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="use the first N architectures (default: all)")
    ap.add_argument("--proxies", default=",".join(PROXIES), help="comma-separated proxy names")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=25, help="architectures per chunk (across proxies)")
    ap.add_argument("--self-check", default="jacob_cov,grasp",
                    help="proxies to score a second time with seed+1 (noise ceiling); '' for none")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--csv", type=Path, default=REPO.parent / "shared/data/nb201/cifar10_dev.csv")
    ap.add_argument("--cifar10", type=Path, default=REPO.parent / "shared/data/cifar10")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    ap.add_argument("--cache-dir", type=Path, default=REPO / "runs/bench_baselines_nb201")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = read_dev_set(args.csv)
    if args.n is not None:
        rows = rows[: args.n]
    archs = [r["arch"] for r in rows]
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()]
    build_kwargs = {"C": 16, "N": 5}
    t0 = time.time()
    data = load_data(args.cifar10, args.batch_size, args.seed)
    self_check = [p.strip() for p in args.self_check.split(",") if p.strip() in proxies]
    data2 = load_data(args.cifar10, args.batch_size, args.seed + 1) if self_check else None
    print(f"data ready in {time.time() - t0:.1f}s: {tuple(data[0][0].shape)}", flush=True)

    common = dict(space="nb201", data=data, seed=args.seed, batch_size=args.batch_size,
                  build_kwargs=build_kwargs, progress=False, device=args.device)
    cache = {p: args.cache_dir / f"{p}_bs{args.batch_size}_seed{args.seed}.jsonl" for p in proxies}
    cache2 = {p: args.cache_dir / f"{p}_bs{args.batch_size}_seed{args.seed + 1}.jsonl" for p in self_check}
    common2 = {**common, "data": data2, "seed": args.seed + 1}
    for start in range(0, len(archs), args.chunk):
        chunk = archs[start:start + args.chunk]
        for p in proxies:
            t = time.time()
            table = score(chunk, proxy=p, cache=cache[p], **common)
            fresh = sum(not r.cached for r in table.rows)
            if fresh:
                print(f"[{start + len(chunk)}/{len(archs)}] {p}: {fresh} new in {time.time() - t:.1f}s",
                      flush=True)
        for p in self_check:
            score(chunk, proxy=p, cache=cache2[p], **common2)

    suffix = "" if args.n is None else f"_n{args.n}"
    results = []
    for p in proxies:
        table = score(archs, proxy=p, cache=cache[p], **common)
        write_proxy_csv(args.out / f"baselines_nb201{suffix}" / f"{p}.csv", p, rows, table)
        other = score(archs, proxy=p, cache=cache2[p], **common2) if p in self_check else None
        results.append(summarise(p, rows, table, other))

    meta = {"n": len(rows), "C": 16, "N": 5, "batch_size": args.batch_size, "seed": args.seed,
            "device": args.device, "threads": torch.get_num_threads(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)",
            "torch": torch.__version__, "target_spearman_vs_naslib": TARGET,
            "self_check_seed": args.seed + 1 if self_check else None}
    write_atomic(args.out / f"baselines_nb201{suffix}.json",
                 json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    write_atomic(args.out / f"baselines_nb201{suffix}.md", markdown(results, meta))
    print(markdown(results, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
