"""Accuracy of GHN-predicted parameters on held-out architectures, per network size, next
to random initialisation.

For each GHN (``--ghn``: shipped names, run folders or checkpoint files inside a run
folder; default the shipped ones): take architectures its meta-training run never trained
on (the run's own held-out architectures first, then fresh samples outside everything the
run samples in its whole planned length, replayed from its seed: see
``benchmarks/_ghnbench.never_trained``), build each at every size, predict its parameters
and evaluate on CIFAR-10 *test* images with batch norm on batch statistics (batches of
100). The same networks with PyTorch's default initialisation give the random-init
reference. Every (GHN weights, size, architecture, images) result is cached in
``runs/bench_cache/eval_ghn/cache.jsonl``, so an interrupted run resumes.

Default sizes: NB201 C=8 N=1 (proxy size), C=16 N=1, C=16 N=5 (the benchmark's network);
DARTS C=8 with 5 cells (proxy size), C=16 with 8 cells, C=36 with 20 cells (the DARTS
evaluation network; expensive on a CPU, so by default 5 architectures on 200 images, said
in the table). ``SIZE@AxI`` in ``--sizes-<space>`` caps a size at A architectures and I
images.

    python benchmarks/eval_shipped_ghns.py                                  # shipped GHNs
    nice -n 10 python benchmarks/eval_shipped_ghns.py --ghn runs/ghn-nb201/ghn_step1000.pt \\
        --name nb201_step1000 --threads 1
    python benchmarks/eval_shipped_ghns.py --quick                          # smoke test

Writes ``benchmarks/results/ghn_eval/<name>.json``, ``.md`` and ``.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ghnbench import (CACHE_ROOT, REPO, JsonlCache, file_digest, machine, never_trained, parse_build,  # noqa: E402
                       resolve_ghn_source, write_atomic, command_line, repo_relative)

import ghnas.data  # noqa: E402
from ghnas.ghn import load_ghn  # noqa: E402
from ghnas.ghn.evaluate import evaluate_predicted  # noqa: E402
from ghnas.metatrain import MetaTrainConfig, _ArchPool, evaluate_ghn, size_label  # noqa: E402
from ghnas.proxies import arch_seed  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "ghn_eval"
DEFAULT_GHNS = "ghnas-nb201-cifar10,ghnas-darts-cifar10"
DEFAULT_SIZES = {"nb201": "C=8,N=1;C=16,N=1;C=16,N=5",
                 "darts": "C=8,layers=5;C=16,layers=8;C=36,layers=20@5x200"}


def parse_sizes(spec: str) -> list[dict[str, Any]]:
    """``'C=8,N=1;C=36,layers=20@5x200'`` -> ``[{'build': {...}, 'archs': None, 'images': None},
    {'build': {...}, 'archs': 5, 'images': 200}]``."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        kv, _, cap = part.partition("@")
        build = parse_build(kv)
        archs = images = None
        if cap:
            a, x, i = cap.partition("x")
            if not (a.isdigit() and x and i.isdigit()):
                raise SystemExit(f"cannot read cap {cap!r} of {part!r}: expected ARCHSxIMAGES, e.g. 5x200")
            archs, images = int(a), int(i)
        out.append({"build": build, "archs": archs, "images": images})
    return out


@torch.no_grad()
def random_init(space, arch: str, build: dict, x: torch.Tensor, y: torch.Tensor, seed: int) -> dict:
    """The network with PyTorch's default initialisation, through the same evaluator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch_seed(seed, space.hash(arch)))
        model = space.build(arch, **build)
    res = evaluate_predicted(model, dict(model.named_parameters()), x, y, batch=100)
    return {"acc": res.acc, "loss": res.loss}


def evaluate_source(ghn_arg: str, sizes: list[dict], n_archs: int, n_images: int, data_root: str | None,
                    seed: int, cache: JsonlCache, log=print) -> dict[str, Any]:
    src = resolve_ghn_source(ghn_arg)
    cfg = MetaTrainConfig.from_dict(src.config)
    pool = _ArchPool(cfg)
    ghn = load_ghn(src.path)
    digest = file_digest(src.path)
    archs, found = never_trained(pool, cfg, n_archs, seed)
    test_all = ghnas.data.load("cifar10", root=data_root, split="test")
    rows = []
    for size in sizes:
        build, na = size["build"], min(size["archs"] or n_archs, len(archs))
        ni = min(size["images"] or n_images, n_images)
        test = test_all.subset(ni, seed=seed)
        x = torch.cat([xb for xb, _ in test.batches(len(test))])
        y = test.labels
        per = {"ghn": [], "random": []}
        t0 = time.perf_counter()
        for i, a in enumerate(archs[:na]):
            for kind in ("ghn", "random"):
                key = [kind, digest if kind == "ghn" else pool.space.name, build, a, ni, seed]
                res = cache.get(key)
                if res is None:
                    if kind == "ghn":
                        r = evaluate_ghn(ghn, pool, [a], test, torch.device("cpu"), 100, False, build,
                                         per_arch=True)
                        res = {"acc": r["accs"][0], "loss": r["losses"][0]}
                    else:
                        res = random_init(pool.space, a, build, x, y, seed)
                    cache.put(key, res)
                per[kind].append(res)
            log(f"  {src.label} {size_label(build)} [{i + 1}/{na}] GHN {100 * per['ghn'][-1]['acc']:.1f}% "
                f"random {100 * per['random'][-1]['acc']:.1f}% ({time.perf_counter() - t0:.0f}s)")
        row: dict[str, Any] = {"size": size_label(build), "build": build, "n_archs": na, "n_images": ni,
                               "capped": bool(size["archs"] or size["images"])}
        for kind, vals in per.items():
            accs = np.array([v["acc"] for v in vals])
            row[kind] = {"acc_mean": float(accs.mean()), "acc_std": float(accs.std(ddof=1)) if na > 1 else 0.0,
                         "acc_min": float(accs.min()), "acc_max": float(accs.max()),
                         "loss_mean": float(np.nanmean([v["loss"] for v in vals])),
                         "accs": [float(a) for a in accs]}
        rows.append(row)
    return {"ghn": src.label, "path": repo_relative(str(src.path)), "weights": digest, "space": pool.space.name,
            "meta_training_steps": src.step, "planned_steps": cfg.steps, "archs": archs,
            "arch_sources": found, "seed": seed, "sizes": rows}


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# GHN-predicted parameters on held-out architectures, per network size (CIFAR-10 test)", "",
             "Architectures the GHN's meta-training run never trained on: the run's held-out "
             "architectures first, then fresh samples outside every architecture the run samples "
             "in its whole planned length (replayed from its seed). No training of the evaluated "
             "networks: predicted parameters (GHN) or PyTorch's default initialisation (random), the "
             "same networks, batch norm on batch statistics (batches of 100 test images). Mean ± std "
             "over architectures; capped sizes (fewer archs/images for CPU time) are marked *.", "",
             "| GHN | steps | size | archs | test images | GHN mean acc | GHN min-max | random-init mean acc | random min-max |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for res in results:
        for r in res["sizes"]:
            g, q = r["ghn"], r["random"]
            lines.append(f"| {res['ghn']} | {res['meta_training_steps']} | {r['size']}{' *' if r['capped'] else ''} | "
                         f"{r['n_archs']} | {r['n_images']} | {100 * g['acc_mean']:.1f} ± {100 * g['acc_std']:.1f}% | "
                         f"{100 * g['acc_min']:.1f}-{100 * g['acc_max']:.1f}% | {100 * q['acc_mean']:.1f} ± "
                         f"{100 * q['acc_std']:.1f}% | {100 * q['acc_min']:.1f}-{100 * q['acc_max']:.1f}% |")
    lines += ["", "Where the architectures came from: "
              + "; ".join(f"{r['ghn']}: {r['arch_sources']['run_heldout']} run held-out + "
                          f"{r['arch_sources']['fresh_unseen']} fresh unseen "
                          f"({r['arch_sources']['excluded_trained']} trained hashes excluded)" for r in results),
              "", f"Command: `{meta['command']}`; seed {meta['seed']}; {meta['machine']}; {meta['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ghnas._io import atomic_savefig

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        labels = [r["size"] + (" *" if r["capped"] else "") for r in res["sizes"]]
        xs = np.arange(len(labels))
        for off, kind, color in ((-0.2, "ghn", "C3"), (0.2, "random", "C0")):
            m = [100 * r[kind]["acc_mean"] for r in res["sizes"]]
            s = [100 * r[kind]["acc_std"] for r in res["sizes"]]
            ax.bar(xs + off, m, 0.4, yerr=s, color=color, capsize=3,
                   label="GHN-predicted" if kind == "ghn" else "random init")
        ax.axhline(10, color="gray", ls=":", lw=1)
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set_ylabel("CIFAR-10 test accuracy (%)")
        ax.set_title(f"{res['ghn']} ({res['meta_training_steps']} steps)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ghn", default=DEFAULT_GHNS,
                    help="comma-separated shipped GHN names, run folders or checkpoint files in a run folder")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared/data/cifar10"))
    ap.add_argument("--sizes-nb201", default=DEFAULT_SIZES["nb201"])
    ap.add_argument("--sizes-darts", default=DEFAULT_SIZES["darts"])
    ap.add_argument("--n-archs", type=int, default=20, help="held-out architectures per GHN (uncapped sizes)")
    ap.add_argument("--images", type=int, default=1000, help="CIFAR-10 test images (uncapped sizes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="shipped", help="output file stem under --out")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cache", type=Path, default=CACHE_ROOT / "eval_ghn" / "cache.jsonl")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 archs, 100 images, small sizes only, results under <out>/quick_*")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    if args.quick:
        args.n_archs, args.images, args.name = 2, 100, "quick_" + args.name
        args.sizes_nb201, args.sizes_darts = "C=8,N=1;C=16,N=1", "C=8,layers=5"
    t0 = time.time()
    cache = JsonlCache(args.cache)
    results = []
    for g in filter(None, (s.strip() for s in args.ghn.split(","))):
        space = MetaTrainConfig.from_dict(resolve_ghn_source(g).config).space
        sizes = parse_sizes(args.sizes_darts if space == "darts" else args.sizes_nb201)
        results.append(evaluate_source(g, sizes, args.n_archs, args.images, args.data_root, args.seed, cache))
    meta = {"command": command_line("eval_shipped_ghns.py", argv),
            "seed": args.seed, "machine": machine(), "torch": torch.__version__, "seconds": time.time() - t0}
    write_atomic(args.out / f"{args.name}.json", json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    text = markdown(results, meta)
    write_atomic(args.out / f"{args.name}.md", text)
    plot(results, args.out / f"{args.name}.png")
    print(text)


if __name__ == "__main__":
    main()
