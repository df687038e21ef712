"""GHN warm start vs random initialisation: accuracy after k SGD steps.

For a few architectures of each space (seeded samples, small networks), we train the
same network twice with the same data order and hyper-parameters: once from its default
random initialisation, once from GHN-predicted parameters (:func:`ghnas.warm_start`). We
record validation accuracy every ``--eval-every`` steps and report

* accuracy vs steps for both initialisations (mean over architectures, and each one);
* how many random-init steps it takes to reach the accuracy of the GHN start (step 0)
  and of the GHN curve at later points (``None``: not reached within the run).

Both models start with batch-norm running statistics estimated on the same few training
batches, so eval-mode accuracy at step 0 is meaningful for both (``--bn-mode batch``
evaluates with batch statistics instead).

Outputs (``--out``, default ``benchmarks/results/warm_start``): ``<name>.json`` (settings,
every curve), ``<name>.md`` (tables) and ``<name>.png`` (curves).

Usage::

    python benchmarks/bench_warm_start.py --ghn runs/meta-nb201/ghn.pt --spaces nb201
    python benchmarks/bench_warm_start.py --ghn ghnas-nb201-cifar10 --spaces nb201 \\
        --ghn-darts ghnas-darts-cifar10 --steps 200 --device cuda
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import search_spaces  # noqa: E402
from ghnas.proxies import arch_seed  # noqa: E402
from ghnas.searching import PROXY_BUILD_KWARGS  # noqa: E402
from ghnas.train import train  # noqa: E402
from ghnas.warm import calibrate_batchnorm, reset_batchnorm, resolve_ghn_arg, warm_start  # noqa: E402


def steps_to_reach(steps: Sequence[int], accs: Sequence[float], target: float) -> int | None:
    """First step of a curve whose accuracy is at least ``target`` (None if never)."""
    for s, a in zip(steps, accs):
        if a >= target:
            return int(s)
    return None


def compare_inits(space: str, archs: Sequence[str], ghn: Any, train_data, val_data, *, steps: int,
                  eval_every: int, build_kwargs: dict[str, Any], seed: int = 0,
                  train_kwargs: dict[str, Any] | None = None, bn_mode: str = "eval",
                  calib_batches: int = 4, device: str = "cpu", progress: bool = False) -> list[dict]:
    """Train each architecture from random and from GHN init; return one record per architecture.

    Each record: ``arch``, ``params``, ``curves`` (``{'ghn'|'random': {'steps', 'acc', 'loss'}}``),
    ``steps_to_match`` (random-init steps to reach the GHN curve at each of its points).
    """
    sp = search_spaces.get(space)
    net = resolve_ghn_arg(ghn, device)
    tk = dict(batch_size=64, lr=0.025)
    tk.update(train_kwargs or {})
    out = []
    for arch in archs:
        rec: dict[str, Any] = {"arch": sp.validate(arch), "curves": {}}
        for init in ("random", "ghn"):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(arch_seed(seed, sp.hash(arch)))
                model = sp.build(arch, **build_kwargs)
            model = model.to(device)
            if init == "ghn":
                warm_start(model, net, data=train_data if bn_mode == "eval" else None,
                           calib_batches=calib_batches, seed=seed)
            else:
                reset_batchnorm(model)
                if bn_mode == "eval":
                    calibrate_batchnorm(model, train_data, calib_batches, 128, seed)
                model.train()
            rec["params"] = sum(p.numel() for p in model.parameters())
            t0 = time.perf_counter()
            res = train(model, train_data, steps=steps, seed=seed, device=device, eval_data=val_data,
                        eval_every=eval_every, eval_bn_mode=bn_mode, progress=False, **tk)
            xs, acc = res.series("eval_accuracy")
            _, loss = res.series("eval_loss")
            rec["curves"][init] = {"steps": xs, "acc": [100 * a for a in acc], "loss": loss,
                                   "seconds": time.perf_counter() - t0, "diverged": res.diverged}
        g, r = rec["curves"]["ghn"], rec["curves"]["random"]
        rec["steps_to_match"] = {str(s): steps_to_reach(r["steps"], r["acc"], a)
                                 for s, a in zip(g["steps"], g["acc"])}
        out.append(rec)
        if progress:
            print(f"  [{len(out)}/{len(archs)}] {space}: GHN {g['acc'][0]:.1f}% -> {g['acc'][-1]:.1f}%, "
                  f"random {r['acc'][0]:.1f}% -> {r['acc'][-1]:.1f}% in {steps} steps "
                  f"({g['seconds'] + r['seconds']:.0f}s)", flush=True)
    return out


def summarise(records: list[dict]) -> dict[str, Any]:
    """Mean curves over architectures and the mean/median random steps to match the GHN start."""
    steps = records[0]["curves"]["ghn"]["steps"]
    mean = {init: [statistics.fmean(r["curves"][init]["acc"][i] for r in records) for i in range(len(steps))]
            for init in ("ghn", "random")}
    match0 = [r["steps_to_match"][str(steps[0])] for r in records]
    reached = [m for m in match0 if m is not None]
    return {
        "steps": steps,
        "mean_acc": mean,
        "steps_to_match_ghn_start": match0,
        "n_reached": len(reached),
        "median_steps_to_match_ghn_start": statistics.median(reached) if reached else None,
        "mean_steps_to_match_mean_curve": {
            str(s): steps_to_reach(steps, mean["random"], a) for s, a in zip(steps, mean["ghn"])},
    }


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# GHN warm start vs random initialisation", "",
             f"{meta['n_archs']} architectures per space (seed {meta['seed']}), {meta['steps']} SGD steps "
             f"(batch {meta['batch_size']}, lr {meta['lr']}, cosine), validation accuracy on "
             f"{meta['val_images']} held-out CIFAR-10 training images (BN: {meta['bn_mode']}); "
             f"{meta['device']}, {meta['machine']}.", ""]
    for space, res in results.items():
        s = res["summary"]
        lines += [f"## {space} (build {res['build_kwargs']}, GHN {res['ghn']})", "",
                  "| step | GHN init acc (%) | random init acc (%) | random steps to match GHN (mean curve) |",
                  "| ---: | ---: | ---: | ---: |"]
        for i, st in enumerate(s["steps"]):
            m = s["mean_steps_to_match_mean_curve"][str(st)]
            lines.append(f"| {st} | {s['mean_acc']['ghn'][i]:.2f} | {s['mean_acc']['random'][i]:.2f} | "
                         f"{'not within run' if m is None else m} |")
        lines += ["", "| architecture | params | GHN acc @0 | random steps to match it | final GHN | final random |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for r in res["archs"]:
            g, rr = r["curves"]["ghn"], r["curves"]["random"]
            m = r["steps_to_match"][str(g["steps"][0])]
            lines.append(f"| `{r['arch']}` | {r['params']:,} | {g['acc'][0]:.2f} | "
                         f"{'not within run' if m is None else m} | {g['acc'][-1]:.2f} | {rr['acc'][-1]:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.2), squeeze=False)
    for ax, (space, res) in zip(axes[0], results.items()):
        for init, color in (("ghn", "C3"), ("random", "C0")):
            for r in res["archs"]:
                c = r["curves"][init]
                ax.plot(c["steps"], c["acc"], color=color, alpha=0.25, lw=1)
            s = res["summary"]
            ax.plot(s["steps"], s["mean_acc"][init], color=color, lw=2.5,
                    label=f"{'GHN' if init == 'ghn' else 'random'} init (mean)")
        ax.set_title(f"{space}: {len(res['archs'])} architectures")
        ax.set_xlabel("SGD steps")
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_data(data: str, root: str | None, val_images: int, train_images: int | None, device: str):
    from ghnas import data as gdata

    tr = gdata.load(data, root=root, split="train", seed=0)
    va = gdata.load(data, root=root, split="val", seed=0)
    if train_images:
        tr = tr.subset(min(train_images, len(tr)), seed=0)
    va = va.subset(min(val_images, len(va)), seed=0)
    if device != "cpu":
        tr, va = tr.to(device), va.to(device)
    return tr, va


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ghn", required=True, help="GHN (name or path) for the first space, or for all")
    ap.add_argument("--ghn-darts", default=None, help="GHN for DARTS when it differs from --ghn")
    ap.add_argument("--spaces", default="nb201,darts")
    ap.add_argument("--n-archs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.025)
    ap.add_argument("--bn-mode", default="eval", choices=["eval", "batch"])
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared/data/cifar10"))
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--train-images", type=int, default=None, help="train on a subset (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="warm_start")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    t0 = time.time()
    train_data, val_data = load_data(args.data, args.data_root, args.val_images, args.train_images, args.device)
    print(f"data: {len(train_data)} train / {len(val_data)} val images ({time.time() - t0:.1f}s)", flush=True)
    results: dict[str, Any] = {}
    for space in spaces:
        ghn = args.ghn_darts if (space == "darts" and args.ghn_darts) else args.ghn
        sp = search_spaces.get(space)
        archs = sp.sample_many(args.n_archs, seed=args.seed, unique=True)
        bk = dict(PROXY_BUILD_KWARGS.get(space, {}))
        recs = compare_inits(space, archs, ghn, train_data, val_data, steps=args.steps,
                             eval_every=args.eval_every, build_kwargs=bk, seed=args.seed,
                             train_kwargs={"batch_size": args.batch_size, "lr": args.lr},
                             bn_mode=args.bn_mode, device=args.device, progress=True)
        results[space] = {"ghn": str(ghn), "build_kwargs": bk, "archs": recs, "summary": summarise(recs)}
        s = results[space]["summary"]
        print(f"{space}: GHN start {s['mean_acc']['ghn'][0]:.2f}% vs random {s['mean_acc']['random'][0]:.2f}%; "
              f"random steps to match the GHN start: {s['steps_to_match_ghn_start']}", flush=True)
    meta = dict(n_archs=args.n_archs, seed=args.seed, steps=args.steps, eval_every=args.eval_every,
                batch_size=args.batch_size, lr=args.lr, bn_mode=args.bn_mode, val_images=len(val_data),
                train_images=len(train_data), data=args.data, device=args.device,
                threads=torch.get_num_threads(), torch=torch.__version__,
                machine=f"{platform.machine()}, {os.cpu_count()} CPU cores",
                seconds=time.time() - t0)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / f"{args.name}.json", json.dumps({"settings": meta, "results": results}, indent=1,
                                                            default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else str(o)))
    write_atomic(args.out / f"{args.name}.md", markdown(results, meta))
    plot(results, args.out / f"{args.name}.png")
    print(f"wrote {args.out / (args.name + '.json')}, .md and .png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
