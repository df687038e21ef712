"""Choose the GHN that the GHN proxy ranks with, on the tuning half; report it on the other.

The GHN that predicts the most accurate parameters (the shipped ``ghnas-<space>-cifar10``,
chosen on validation images) need not be the one whose predicted networks *rank*
architectures best: on NB201 the ranking got worse after the learning-rate drop while
accuracy rose (``ghn_proxy_curve.py``). So the proxy gets a GHN of its own, chosen here.

``--half tune``: every candidate GHN (``--candidate label=path``, or ``label=git:<commit>``
for a GHN shipped by an earlier commit, so the choice can be re-run from the repository)
scores every tuning-half architecture (even data rows of the dev set) at the proxy size on
CIFAR-10 *training* images, for each image seed of ``--seeds`` and each image count of
``--images`` (prefixes of one batch of the largest count), under every metric of
``ghn_proxy_curve.METRICS``. Chosen: the (GHN, metric, image count) with the best mean
Kendall tau over the seeds. Many seeds, because one image batch can swing the tau by 0.3
(a choice made on three seeds' 200 images did not hold on new seeds).

``--build 'C=8,layers=5;C=16,layers=8'`` scores every candidate at each size (default: the
space's proxy size); ``--rank-mean K`` adds, for information, rows for the rank mean over K
image batches (seeds in groups of K), which the choice passes over: the GHN proxy scores
each architecture on its own. ``--ensemble name=a+b+c`` adds rows for the mean of candidates
``a``, ``b`` and ``c``'s measures per architecture (a checkpoint ensemble, e.g. snapshots of one
run), also for information: the GHN proxy loads one GHN.

``--half report``: the choice, and the GHN proxy as shipped before it (``--reference``, scored
with ``--reference-metric``, by default the proxy's metric for the space), on the reporting
half (odd rows), same seeds. Nothing is chosen there. On DARTS (where the metric changed):

    python benchmarks/choose_ranking_ghn.py --space darts --half tune --candidate step5000=git:4a28a58 --seeds 0,1,2
    python benchmarks/choose_ranking_ghn.py --space darts --half report --reference-metric neg_loss

``--install`` copies the chosen GHN to ``ghnas/assets/ghnas-<space>-cifar10-rank.pt`` with a
sidecar JSON of the choice (tuning and reporting figures).

    python benchmarks/choose_ranking_ghn.py --space nb201 --half tune \\
        --candidate step4500=git:9943f8d --candidate step10500=git:df2d979 --candidate step15500=git:bde2bed \\
        --candidate step17500=runs/ghn-nb201/ghn_step17500.pt --candidate step20000=runs/ghn-nb201/ghn_step20000.pt
    python benchmarks/choose_ranking_ghn.py --space nb201 --half report --reference step15500=git:bde2bed
    python benchmarks/choose_ranking_ghn.py --space nb201 --install
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ghnbench import (CACHE_ROOT, DEV_SETS, REPO, JsonlCache, command_line, dev_half, file_digest,  # noqa: E402
                       machine, parse_build, repo_relative, write_atomic)
from ghn_proxy_curve import (METRICS, Networks, base_vector, correlations, image_batch, rank_mean,  # noqa: E402
                             score_snapshot)

import search_spaces  # noqa: E402
from ghnas.ghn import load_ghn  # noqa: E402
from ghnas.searching import PROXY_BUILD_KWARGS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "ranking_ghn"


def resolve_candidate(spec: str, space: str, fetch_dir: Path) -> tuple[str, Path, str]:
    """``label=path`` or ``label=git:<commit>`` -> (label, local file, how to get it again)."""
    if "=" not in spec:
        raise SystemExit(f"--candidate wants label=path or label=git:<commit>, got {spec!r}")
    label, src = spec.split("=", 1)
    if src.startswith("git:"):
        commit = src[4:]
        blob = f"{commit}:ghnas/assets/ghnas-{space}-cifar10.pt"
        out = fetch_dir / f"{label}.pt"
        fetch_dir.mkdir(parents=True, exist_ok=True)
        try:
            data = subprocess.run(["git", "show", blob], cwd=REPO, check=True, capture_output=True).stdout
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"--candidate {spec}: git show {blob} failed: {e.stderr.decode().strip()}")
        out.write_bytes(data)
        return label, out, src
    path = Path(src)
    if not path.exists():
        raise SystemExit(f"--candidate {spec}: {path} does not exist")
    return label, path, repo_relative(str(path.resolve()))


def _row(label: str, origin: str, digest: str | None, build: dict[str, Any], metric: str, n: int, batches: int,
         pairs: list[tuple[float, float]], members: list[str] | None = None) -> dict[str, Any]:
    k = np.array([p[0] for p in pairs])
    return {**({"members": members} if members else {}), "ghn": label, "origin": origin, "digest": digest, "build": build, "metric": metric, "n": n,
            "batches": batches, "kendall": k.tolist(), "spearman": [p[1] for p in pairs],
            "kendall_mean": float(k.mean()), "kendall_std": float(k.std()),
            "kendall_min": float(k.min()), "kendall_max": float(k.max()),
            "spearman_mean": float(np.mean([p[1] for p in pairs]))}


def mean_records(members: list[dict[str, dict[str, list]]]) -> dict[str, dict[str, list]]:
    """Per architecture, each measure of each image batch averaged over several GHNs' records:
    the scores of a checkpoint ensemble, still one per architecture."""
    return {a: {f: np.mean([m[a][f] for m in members], axis=0).tolist() for f in members[0][a]}
            for a in members[0]}


def parse_ensembles(specs: list[str], labels: list[str]) -> dict[str, list[str]]:
    """``['ens=a+b+c']`` -> ``{'ens': ['a', 'b', 'c']}``, every member a candidate's label."""
    out = {}
    for spec in specs:
        name, _, members = spec.partition("=")
        parts = [m for m in members.split("+") if m]
        if not name or len(parts) < 2:
            raise SystemExit(f"--ensemble wants name=label+label[+...], got {spec!r}")
        if name in labels or name in out:
            raise SystemExit(f"--ensemble {spec}: the name {name!r} is taken (candidates: {labels})")
        unknown = [m for m in parts if m not in labels]
        if unknown:
            raise SystemExit(f"--ensemble {spec}: {unknown} are not --candidate labels ({labels})")
        out[name] = parts
    return out


def score_all(space, archs, truth, candidates, images, seeds, data, cache, builds: list[dict[str, Any]],
              rank_mean_batches: int = 1, ensembles: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """One row per (candidate, network size, metric, image count): Kendall tau / Spearman per seed.

    With ``rank_mean_batches`` K > 1, also one row per (candidate, size, metric, image count)
    for the rank mean over K image batches: the seeds are cut into consecutive groups of K
    (seeds 0-2, 3-5, ...), each group scores once, and the spread is over the groups.
    ``ensembles`` (name -> candidate labels) add rows for each ensemble's mean records
    (:func:`mean_records`), which carry their ``members``."""
    rows = []
    groups = [seeds[i:i + rank_mean_batches] for i in range(0, len(seeds), rank_mean_batches)]
    for build in builds:
        nets = Networks(space, archs, build)
        scored: dict[str, dict[int, dict]] = {}
        runs = []  # (label, origin, digest, records per seed, ensemble members)
        for label, path, origin in candidates:
            ghn, digest = load_ghn(path), file_digest(path)
            recs = scored[label] = {}
            runs.append((label, origin, digest, recs, None))
            for seed in seeds:
                t1 = time.time()
                x, y = image_batch(data, max(images), seed)
                recs[seed] = score_snapshot(ghn, digest, nets, archs, x, y, seed, build, cache)
                print(f"  {label} at {size_label(build)}, seed {seed}: {time.time() - t1:.0f}s", flush=True)
        for name, members in (ensembles or {}).items():
            recs = {s: mean_records([scored[m][s] for m in members]) for s in seeds}
            runs.append((name, "mean of " + "+".join(members), None, recs, members))
        for label, origin, digest, recs, members in runs:
            for metric in METRICS:
                for n in images:
                    vec = {s: base_vector(recs[s], archs, metric, n) for s in seeds}
                    rows.append(_row(label, origin, digest, build, metric, n, 1,
                                     [correlations(vec[s], truth) for s in seeds], members))
                    if rank_mean_batches > 1:
                        pairs = [correlations(rank_mean([vec[s] for s in g]), truth) for g in groups]
                        rows.append(_row(label, origin, digest, build, metric, n, rank_mean_batches, pairs, members))
    return rows


def size_label(build: dict[str, Any] | None) -> str:
    """``{'C': 16, 'layers': 8}`` -> ``'C=16,layers=8'`` (the flags' notation); results from
    before sizes were recorded scored at the proxy size."""
    return ",".join(f"{k}={v}" for k, v in build.items()) if build else "proxy size"


def images_label(r: dict[str, Any]) -> str:
    """``'200'``, or ``'3x200'`` for a rank mean over three image batches."""
    return f"{r['batches']}x{r['n']}" if r.get("batches", 1) > 1 else str(r["n"])


def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [f"# The GHN proxy's own GHN: {m['space']}, {m['half']} half", "",
             f"Dev set `{m['dev_set']}`, **{m['half']} half** ({m['n_archs']} architectures), scored at "
             f"{', '.join(size_label(b) for b in m.get('builds', [m.get('build')]))} on CIFAR-10 train-split images, image seeds {m['seeds']}, batch norm on batches "
             "of 100. Kendall tau against the dev set's accuracy: mean over seeds, std, [min, max] (images "
             "'KxN': the rank mean over K image batches of N, one score per group of K seeds).", "",
             f"Command: `{m['command']}` ({m['seconds']:.0f} s, {m['machine']})", ""]
    if m["half"] == "tune":
        c = res["chosen"]
        lines += [f"**Chosen** (best mean Kendall tau over the seeds): GHN `{c['ghn']}` ({c['origin']}), "
                  f"size {size_label(c.get('build'))}, metric `{c['metric']}`, {images_label(c)} images: tau {c['kendall_mean']:.3f} "
                  f"(std {c['kendall_std']:.3f}, [{c['kendall_min']:.3f}, {c['kendall_max']:.3f}]), "
                  f"Spearman {c['spearman_mean']:.3f}.", ""]
    lines += ["| GHN | size | metric | images | Kendall tau | std | min | max | Spearman |",
              "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(res["rows"], key=lambda r: -r["kendall_mean"]):
        name = r.get("role", "") + r["ghn"] + (f" (mean of {' + '.join(r['members'])})" if "members" in r else "")
        lines.append(f"| {name} | {size_label(r.get('build'))} | {r['metric']} | "
                     f"{images_label(r)} | {r['kendall_mean']:.3f} | "
                     f"{r['kendall_std']:.3f} | {r['kendall_min']:.3f} | {r['kendall_max']:.3f} | "
                     f"{r['spearman_mean']:.3f} |")
    return "\n".join(lines) + "\n"


def install(space: str, out_dir: Path) -> str:
    tune = json.loads((out_dir / f"{space}_tune.json").read_text())
    report_path = out_dir / f"{space}_report.json"
    if not report_path.exists():
        raise SystemExit(f"--install wants the reporting figures first: run --half report ({report_path})")
    report = json.loads(report_path.read_text())
    c = tune["chosen"]
    src = REPO / tune["meta"]["files"][c["ghn"]]
    if not src.exists():
        raise SystemExit(f"the chosen GHN's file {src} is gone: re-run --half tune")
    if file_digest(src) != c["digest"]:
        raise SystemExit(f"{src} changed since the tuning stage chose it: re-run --half tune")
    from ghnas.ghn.hub import asset_dir

    dst = asset_dir() / f"ghnas-{space}-cifar10-rank.pt"
    shutil.copyfile(src, dst)
    chosen_report = next(r for r in report["rows"] if r.get("role") == "CHOSEN: ")
    # build_kwargs stays the size the GHN was trained at, which aggregates with this GHN score
    # at; the GHN proxy alone ranks at the chosen size (ghnas.proxies.ghn.SPACE_SIZES)
    meta = {"name": dst.stem, "space": space, "purpose": "rank", "build_kwargs": PROXY_BUILD_KWARGS.get(space),
            "choice": {k: c[k] for k in ("ghn", "origin", "build", "metric", "n", "batches") if k in c},
            "tune": {k: c[k] for k in ("kendall_mean", "kendall_std", "kendall_min", "kendall_max")},
            "report": {k: chosen_report[k] for k in ("kendall_mean", "kendall_std", "kendall_min", "kendall_max")},
            "seeds": tune["meta"]["seeds"], "report_seeds": report["meta"]["seeds"],
            "command": tune["meta"]["command"], "digest": c["digest"]}
    write_atomic(dst.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")
    return f"installed {c['ghn']} ({c['origin']}) as {repo_relative(str(dst))}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", choices=sorted(DEV_SETS), required=True)
    ap.add_argument("--half", choices=("tune", "report"), default=None)
    ap.add_argument("--candidate", action="append", default=[], help="label=path or label=git:<commit> (tune)")
    ap.add_argument("--reference", default=None,
                    help="report: label=path of the GHN proxy as shipped before (default: the space's shipped "
                         "GHN with the GHN proxy's default metric and image count)")
    ap.add_argument("--reference-metric", default=None,
                    help="report: the reference's metric (default: the GHN proxy's default for the space; "
                         "the previous default where it changed, e.g. neg_loss)")
    ap.add_argument("--reference-images", type=int, default=None,
                    help="report: the reference's image count (default: GHNProxy.default_batch_size, 1,000, the "
                         "GHN proxy's count on every space before per-space counts; DARTS now scores on 200)")
    ap.add_argument("--images", default="200,500,1000")
    ap.add_argument("--seeds", default=None,
                    help="image seeds (tune default: 0,1,2,3,4,5; report default: the tuning stage's)")
    ap.add_argument("--max-archs", type=int, default=0, help="fixed subsample of the half (0: all of it)")
    ap.add_argument("--build", default=None,
                    help="tune: the network sizes scored, e.g. 'C=8,layers=5;C=16,layers=8' (default: the space's "
                         "proxy size)")
    ap.add_argument("--reference-build", default=None,
                    help="report: the reference's network size (default: the space's proxy size)")
    ap.add_argument("--rank-mean", type=int, default=1,
                    help="tune: also rows for the rank mean over this many image batches (seeds in groups of it; "
                         "for information, never chosen)")
    ap.add_argument("--ensemble", action="append", default=[],
                    help="tune: name=label+label[+...]: also rows for the mean of these candidates' measures per "
                         "architecture (a checkpoint ensemble; for information, never chosen)")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared/data/cifar10"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--install", action="store_true", help="copy the chosen GHN into ghnas/assets")
    args = ap.parse_args(argv)
    if args.install:
        print(install(args.space, args.out))
        return
    if args.rank_mean < 1:
        raise SystemExit(f"--rank-mean must be >= 1, got {args.rank_mean}")
    if args.half is None:
        raise SystemExit("give --half tune, --half report or --install")
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    t0 = time.time()
    space = search_spaces.get(args.space)
    fetch = CACHE_ROOT / "ranking_ghn" / "candidates"
    images = sorted(int(v) for v in args.images.split(","))
    seeds = [int(s) for s in (args.seeds or "0,1,2,3,4,5").split(",")]
    default_build = dict(PROXY_BUILD_KWARGS.get(args.space, {}))
    builds = [parse_build(b) for b in args.build.split(";")] if args.build else [default_build]
    if args.half == "tune":
        if not args.candidate:
            raise SystemExit("--half tune needs at least one --candidate")
        if len(seeds) % args.rank_mean:
            raise SystemExit(f"--rank-mean {args.rank_mean} needs a multiple of {args.rank_mean} seeds, got {len(seeds)}")
        candidates = [resolve_candidate(c, args.space, fetch) for c in args.candidate]
        ensembles = parse_ensembles(args.ensemble, [c[0] for c in candidates])
    else:
        tune = json.loads((args.out / f"{args.space}_tune.json").read_text())
        c = tune["chosen"]
        chosen_path = REPO / tune["meta"]["files"][c["ghn"]]
        if not chosen_path.exists() or file_digest(chosen_path) != c["digest"]:
            raise SystemExit(f"the chosen GHN {chosen_path} is missing or changed: re-run --half tune")
        from ghnas.ghn.hub import asset_dir
        from ghnas.proxies.ghn import GHNProxy

        ref_label, ref_path, ref_origin = resolve_candidate(
            args.reference or "shipped=" + str(asset_dir() / f"ghnas-{args.space}-cifar10.pt"), args.space, fetch)
        ref_metric = args.reference_metric or GHNProxy().metric_for(args.space)
        ref_n = args.reference_images or GHNProxy.default_batch_size
        ref_build = parse_build(args.reference_build) if args.reference_build else default_build
        candidates = [(c["ghn"], chosen_path, c["origin"])]
        if file_digest(ref_path) == c["digest"]:  # the reference is another setting of the chosen GHN
            ref_label = c["ghn"]
        images, args.max_archs = sorted({c["n"], ref_n}), tune["meta"]["max_archs"]
        seeds = seeds if args.seeds else tune["meta"]["seeds"]
        builds = [c.get("build") or default_build]
        args.rank_mean = 1  # the choice is always per architecture (never a rank-mean row)
        ensembles = {}
    truth_map = dev_half(space, args.half, max_archs=args.max_archs)
    archs = list(truth_map)
    truth = np.array([truth_map[a] for a in archs])
    print(f"{space.name} {args.half} half: {len(archs)} archs; GHNs {[c[0] for c in candidates]}", flush=True)
    import ghnas.data

    data = ghnas.data.load("cifar10", root=args.data_root, split="train")
    cache = JsonlCache(CACHE_ROOT / "ranking_ghn" / f"{args.space}.jsonl")
    rows = score_all(space, archs, truth, candidates, images, seeds, data, cache, builds, args.rank_mean, ensembles)
    if args.half == "report":  # the reference at its own size (a cache hit where it is the chosen one's)
        rows += [{**r, "reference": True} for r in
                 score_all(space, archs, truth, [(ref_label, ref_path, ref_origin)], [ref_n], seeds, data, cache,
                           [ref_build])]
    res: dict[str, Any] = {"rows": rows}
    if args.half == "tune":
        # chosen among what the GHN proxy computes with one GHN, per architecture; the rank-mean
        # and ensemble rows show what averaging over image batches or GHNs would add
        best = max((r for r in rows if r["batches"] == 1 and "members" not in r), key=lambda r: r["kendall_mean"])
        res["chosen"] = {k: best[k] for k in best if k not in ("kendall", "spearman")}
    else:
        keep = []
        for r in rows:
            batches = r.get("batches", 1)
            if r.pop("reference", False):
                if r["metric"] == ref_metric and batches == 1:
                    keep.append({**r, "role": f"reference ({ref_metric}, {ref_n} images): "})
            elif r["metric"] == c["metric"] and r["n"] == c["n"] and batches == 1:
                keep.append({**r, "role": "CHOSEN: "})
        res["rows"], res["chosen"] = keep, c
    res["meta"] = {"space": args.space, "half": args.half, "dev_set": repo_relative(str(DEV_SETS[args.space][0])),
                   "n_archs": len(archs), "max_archs": args.max_archs, "builds": builds,
                   "rank_mean": args.rank_mean, "ensembles": ensembles, "seeds": seeds, "images": images,
                   "files": {lab: repo_relative(str(Path(p).resolve())) for lab, p, _ in candidates},
                   "command": command_line("choose_ranking_ghn.py", argv), "machine": machine(),
                   "torch": torch.__version__, "seconds": time.time() - t0}
    name = f"{args.space}_{args.half}"
    write_atomic(args.out / f"{name}.json", json.dumps(res, indent=1) + "\n")
    text = markdown(res)
    write_atomic(args.out / f"{name}.md", text)
    print(text)


if __name__ == "__main__":
    main()
