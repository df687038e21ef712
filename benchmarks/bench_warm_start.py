"""GHN warm start vs PyTorch's default initialisation at the sizes users train.

For several architectures of each space that the GHN's meta-training run never trained on
(``benchmarks/_ghnbench.never_trained``: the run's held-out architectures, then fresh
samples outside every architecture the run samples), built at the standard training size
(NB201 C=16 N=5, the benchmark's network; DARTS C=16 with 8 cells), we train the same
network twice with the same data order and hyper-parameters (:func:`ghnas.train.train`):
once from PyTorch's default initialisation, once from GHN-predicted parameters
(:func:`ghnas.warm_start`). Test accuracy (CIFAR-10 *test* images; nothing is chosen on
them) is recorded every ``--eval-every`` steps, and we report

* accuracy vs SGD steps for both initialisations (mean over architectures, and each one);
* the SGD steps random initialisation needs to reach the accuracy of the GHN start (step
  0), and the GHN curve's later points (``None``: not within the run);
* the gap at the end (GHN minus random, percentage points).

Both models start with batch-norm running statistics estimated on the same few training
batches, so eval-mode accuracy at step 0 is meaningful for both (``--bn-mode batch``
evaluates with batch statistics instead). Every (init, architecture, size, settings) run is
cached in ``runs/bench_cache/warm_start/cache.jsonl`` (GHN runs keyed by the GHN's weights),
so an interrupted benchmark resumes.

Length: ``--epochs 1`` (default) is one pass over the 45,000 training images at batch 64
(703 steps). Measured on the shared 2-core CPU (1 thread, next to two meta-training runs):
about 3.4 s per step for NB201 C=16 N=5 and 12.6 s for DARTS C=16 with 8 cells, so one
epoch costs about 40 min (NB201) or 2.5 h (DARTS) per architecture and initialisation:
use a GPU (``--device cuda``), or fewer steps (``--steps``) and say so. (On a later, faster
2-core machine a DARTS run took about 40 minutes on two-thirds of a core; ``--only-arch``
runs one process per architecture.)

Outputs (``--out``, default ``benchmarks/results/warm_start``): ``<name>.json`` (settings,
every curve), ``<name>.md`` (tables) and ``<name>.png`` (curves).

Usage::

    python benchmarks/bench_warm_start.py --quick                             # smoke test
    python benchmarks/bench_warm_start.py --ghn runs/ghn-nb201/ghn.pt \
        --ghn-darts runs/ghn-darts/ghn.pt --n-archs 5 --epochs 1 --device cuda
    # on CPU cores, one process per architecture, then the report from the cache
    for k in 0 1 2; do python benchmarks/bench_warm_start.py --spaces darts --n-archs 3 --only-arch $k & done; wait
    python benchmarks/bench_warm_start.py --spaces darts --n-archs 3
    # a new GHN, same architectures and settings: reuse the random-init curves of a report
    python benchmarks/bench_warm_start.py --spaces darts --n-archs 3 --name new \
        --reuse-random benchmarks/results/warm_start/warm_start_darts_std.json
    # choosing a warm-start setting on validation images: only the GHN start's curve, saved as <name>.json
    python benchmarks/bench_warm_start.py --spaces nb201 --steps 200 --eval-split val --only-arch 0 \
        --ghn-only --match-norms --name nb201_val_matched

Warm-start settings (GHN start only; random initialisation keeps the plain recipe):
``--match-norms`` (:func:`ghnas.warm.match_init_norms`), ``--orthogonalize`` and
``--noise BETA`` (:func:`ghnas.warm.decorrelate_weights`, Knyazev 2022's post-processing)
and ``--ghn-warmup STEPS`` (linear learning-rate warm-up).
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
if str(REPO / "benchmarks") not in sys.path:
    sys.path.insert(0, str(REPO / "benchmarks"))  # _ghnbench

import torch  # noqa: E402

import search_spaces  # noqa: E402
from ghnas.proxies import arch_seed  # noqa: E402
from ghnas.train import train  # noqa: E402
from ghnas.warm import calibrate_batchnorm, reset_batchnorm, resolve_ghn_arg, warm_start  # noqa: E402


def steps_to_reach(steps: Sequence[int], accs: Sequence[float], target: float) -> int | None:
    """First step of a curve whose accuracy is at least ``target`` (None if never)."""
    for s, a in zip(steps, accs):
        if a >= target:
            return int(s)
    return None


#: batches of training images that set a network's batch-norm statistics before fine-tuning
CALIB_BATCHES = 4


def curve_key(init: str, ghn_key: str, space: str, build_kwargs: dict[str, Any], arch: str, length: dict[str, Any],
              eval_every: int, seed: int, train_kwargs: dict[str, Any], bn_mode: str, calib_batches: int,
              n_train: int, n_val: int) -> list:
    """Cache key of one fine-tuning curve. Random-init curves carry no GHN key: they do not
    depend on the GHN, so a new GHN reuses them."""
    return ["warm", init, ghn_key if init == "ghn" else "", space, build_kwargs, arch, length,
            eval_every, seed, train_kwargs, bn_mode, calib_batches, n_train, n_val]


def seed_random_curves(report: dict, cache: Any, *, spaces: Sequence[str], sizes: dict[str, dict[str, Any]],
                       settings: dict[str, Any], calib_batches: int = CALIB_BATCHES) -> int:
    """Put the random-initialisation curves of an earlier report into ``cache``.

    Only when the report ran with the same settings (``settings``: the keys of the report's
    ``settings`` that decide a curve) and sizes, so each reused curve is the one this run
    would train (training is deterministic for a seed). Returns the number of curves put.
    """
    old = report["settings"]
    diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    if diff:
        raise SystemExit(f"--reuse-random: the report ran with other settings (report, now): {diff}")
    length = {"steps": old["steps"]} if old.get("epochs") is None else {"epochs": old["epochs"]}
    tk = {"batch_size": old["batch_size"], "lr": old["lr"]}
    put = 0
    for space in spaces:
        res = report["results"].get(space)
        if res is None:
            continue
        if res["build_kwargs"] != sizes[space]:
            raise SystemExit(f"--reuse-random: the report's {space} size is {res['build_kwargs']}, "
                             f"not {sizes[space]}")
        for rec in res["archs"]:
            key = curve_key("random", "", space, sizes[space], rec["arch"], length, old["eval_every"], old["seed"],
                            tk, old["bn_mode"], calib_batches, old["train_images"], old["val_images"])
            if key not in cache:
                cache.put(key, {"curve": rec["curves"]["random"], "params": rec["params"]})
                put += 1
    return put


def compare_inits(space: str, archs: Sequence[str], ghn: Any, train_data, val_data, *, steps: int | None = None,
                  eval_every: int, build_kwargs: dict[str, Any], seed: int = 0,
                  train_kwargs: dict[str, Any] | None = None, bn_mode: str = "eval",
                  calib_batches: int = CALIB_BATCHES, device: str = "cpu", progress: bool = False,
                  epochs: float | None = None, cache: Any = None, ghn_key: str = "",
                  match_norms: bool = False, inits: Sequence[str] = ("random", "ghn"),
                  ghn_warmup: int = 0, orthogonalize: bool = False, noise: float = 0.0) -> list[dict]:
    """Train each architecture from random and from GHN init; return one record per architecture.

    Give ``steps`` or ``epochs``. Each record: ``arch``, ``params``, ``curves``
    (``{'ghn'|'random': {'steps', 'acc', 'loss'}}``, accuracy in %), ``steps_to_match``
    (random-init steps to reach the GHN curve at each of its points) and ``final_gap``
    (final GHN minus final random accuracy). With ``cache`` (a ``JsonlCache``), each
    curve is stored under its settings (GHN curves also under ``ghn_key``, the weights).
    ``match_norms``, ``orthogonalize`` and ``noise`` are :func:`ghnas.warm_start`'s options of
    those names. ``inits=('ghn',)``
    trains (or reads) only the GHN curves: records then carry no comparison.
    ``ghn_warmup``: linear learning-rate warm-up steps for the GHN start only (random
    initialisation keeps the plain recipe, so its curves stay reusable).
    """
    # the plain prediction keeps the key of the curves cached before these options
    ghn_key += ":orth" * orthogonalize + (f":noise{noise:g}" if noise else "") + ":match-norms" * match_norms
    sp = search_spaces.get(space)
    net = resolve_ghn_arg(ghn, device)
    tk = dict(batch_size=64, lr=0.025)
    tk.update(train_kwargs or {})
    length = {"steps": steps} if epochs is None else {"epochs": epochs}
    out = []
    for arch in archs:
        rec: dict[str, Any] = {"arch": sp.validate(arch), "curves": {}}
        for init in inits:
            run_kw = dict(tk, warmup_steps=ghn_warmup) if init == "ghn" and ghn_warmup else tk
            key = curve_key(init, ghn_key, space, build_kwargs, rec["arch"], length, eval_every, seed, run_kw,
                            bn_mode, calib_batches, len(train_data), len(val_data))
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                rec["curves"][init], rec["params"] = hit["curve"], hit["params"]
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(arch_seed(seed, sp.hash(arch)))
                model = sp.build(arch, **build_kwargs)
            model = model.to(device)
            if init == "ghn":
                warm_start(model, net, data=train_data if bn_mode == "eval" else None,
                           calib_batches=calib_batches, seed=seed, match_norms=match_norms,
                           orthogonalize=orthogonalize, noise=noise)
            else:
                reset_batchnorm(model)
                if bn_mode == "eval":
                    calibrate_batchnorm(model, train_data, calib_batches, 128, seed)
                model.train()
            rec["params"] = sum(p.numel() for p in model.parameters())
            t0 = time.perf_counter()
            res = train(model, train_data, seed=seed, device=device, eval_data=val_data,
                        eval_every=eval_every, eval_bn_mode=bn_mode, progress=progress, **length, **run_kw)
            xs, acc = res.series("eval_accuracy")
            _, loss = res.series("eval_loss")
            rec["curves"][init] = {"steps": xs, "acc": [100 * a for a in acc], "loss": loss,
                                   "seconds": time.perf_counter() - t0, "diverged": res.diverged}
            if cache is not None:
                cache.put(key, {"curve": rec["curves"][init], "params": rec["params"]})
        if set(inits) != {"random", "ghn"}:
            out.append(rec)
            continue
        g, r = rec["curves"]["ghn"], rec["curves"]["random"]
        rec["steps_to_match"] = {str(s): steps_to_reach(r["steps"], r["acc"], a)
                                 for s, a in zip(g["steps"], g["acc"])}
        rec["final_gap"] = g["acc"][-1] - r["acc"][-1]
        out.append(rec)
        if progress:
            print(f"  [{len(out)}/{len(archs)}] {space}: GHN {g['acc'][0]:.1f}% -> {g['acc'][-1]:.1f}%, "
                  f"random {r['acc'][0]:.1f}% -> {r['acc'][-1]:.1f}% in {g['steps'][-1]} steps "
                  f"({g['seconds'] + r['seconds']:.0f}s)", flush=True)
    return out


def summarise(records: list[dict]) -> dict[str, Any]:
    """Mean curves over architectures, the random steps to match the GHN start, the final gap."""
    steps = records[0]["curves"]["ghn"]["steps"]
    mean = {init: [statistics.fmean(r["curves"][init]["acc"][i] for r in records) for i in range(len(steps))]
            for init in ("ghn", "random")}
    match0 = [r["steps_to_match"][str(steps[0])] for r in records]
    reached = [m for m in match0 if m is not None]
    gaps = [r["curves"]["ghn"]["acc"][-1] - r["curves"]["random"]["acc"][-1] for r in records]
    return {
        "steps": steps,
        "mean_acc": mean,
        "steps_to_match_ghn_start": match0,
        "n_reached": len(reached),
        "median_steps_to_match_ghn_start": statistics.median(reached) if reached else None,
        "mean_steps_to_match_mean_curve": {
            str(s): steps_to_reach(steps, mean["random"], a) for s, a in zip(steps, mean["ghn"])},
        "final_gaps": gaps,
        "final_gap_mean": statistics.fmean(gaps),
    }


def markdown(results: dict[str, Any], meta: dict[str, Any]) -> str:
    where = meta.get("eval_split", "val")
    what = (f"test accuracy on {meta['val_images']} CIFAR-10 test images" if where == "test" else
            f"validation accuracy on {meta['val_images']} held-out CIFAR-10 training images")
    length = f"{meta['epochs']} epoch(s) ({meta['steps']} SGD steps)" if meta.get("epochs") else f"{meta['steps']} SGD steps"
    lines = ["# GHN warm start vs random initialisation", "",
             f"{meta['n_archs']} architectures per space never trained on by the GHN (seed {meta['seed']}), "
             f"{length} on {meta.get('train_images', 'all')} training images "
             f"(batch {meta['batch_size']}, lr {meta['lr']}, cosine), {what} (BN: {meta['bn_mode']}); GHN start "
             f"{'orthogonalised (QR), ' if meta.get('orthogonalize') else ''}"
             f"{'with noise %g x the spread of filter correlations, ' % meta['noise'] if meta.get('noise') else ''}"
             f"{'with weights feeding batch norm rescaled to their initial norms' if meta.get('match_norms') else 'with the predicted weight norms'}"
             f"{', lr warm-up over %d steps' % meta['ghn_warmup'] if meta.get('ghn_warmup') else ''}; "
             f"{meta['device']}, {meta['machine']}.", ""]
    for space, res in results.items():
        s = res["summary"]
        lines += [f"## {space} (build {res['build_kwargs']}, GHN {res['ghn']})", ""]
        if "final_gap_mean" in s:
            med = s["median_steps_to_match_ghn_start"]
            lines += [f"Random init reaches the GHN start in {s['n_reached']} of {len(res['archs'])} architectures "
                      f"within the run (median {'-' if med is None else med} steps; per architecture "
                      f"{s['steps_to_match_ghn_start']}); final gap GHN minus random "
                      f"{s['final_gap_mean']:+.2f} points (per architecture "
                      f"{', '.join(f'{g:+.2f}' for g in s['final_gaps'])}).", ""]
        lines += ["| step | GHN init acc (%) | random init acc (%) | random steps to match GHN (mean curve) |",
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
        ax.set_ylabel("test accuracy (%)" if res.get("eval_split") == "test" else "validation accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def load_data(data: str, root: str | None, val_images: int, train_images: int | None, device: str,
              eval_split: str = "test"):
    """Training images (the ``train`` split, optionally a seeded subset) and ``val_images``
    evaluation images from ``eval_split`` (``'test'``: CIFAR-10 test images)."""
    from ghnas import data as gdata

    tr = gdata.load(data, root=root, split="train", seed=0)
    va = gdata.load(data, root=root, split=eval_split, seed=0)
    if train_images:
        tr = tr.subset(min(train_images, len(tr)), seed=0)
    va = va.subset(min(val_images, len(va)), seed=0)
    if device != "cpu":
        tr, va = tr.to(device), va.to(device)
    return tr, va


DEFAULT_GHN = {"nb201": "ghnas-nb201-cifar10", "darts": "ghnas-darts-cifar10"}
STANDARD_SIZES = {"nb201": "C=16,N=5", "darts": "C=16,layers=8"}


def main(argv: list[str] | None = None) -> int:
    from _ghnbench import (CACHE_ROOT, JsonlCache, file_digest, never_trained, parse_build, repo_relative,
                           resolve_ghn_source, write_atomic)

    from ghnas.metatrain import MetaTrainConfig, _ArchPool

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ghn", default=None, help="GHN for NB201 (name, run folder or checkpoint in a run folder; "
                    "default the shipped one), or for every space")
    ap.add_argument("--ghn-darts", default=None, help="GHN for DARTS when it differs from --ghn")
    ap.add_argument("--spaces", default="nb201,darts")
    ap.add_argument("--size-nb201", default=STANDARD_SIZES["nb201"])
    ap.add_argument("--size-darts", default=STANDARD_SIZES["darts"])
    ap.add_argument("--n-archs", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=1.0, help="fine-tuning length in passes over the training images")
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning length in SGD steps (overrides --epochs)")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.025)
    ap.add_argument("--bn-mode", default="eval", choices=["eval", "batch"])
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared/data/cifar10"))
    ap.add_argument("--eval-split", default="test", choices=["test", "val"])
    ap.add_argument("--val-images", type=int, default=2000, help="evaluation images (from --eval-split)")
    ap.add_argument("--train-images", type=int, default=None, help="train on a subset (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="warm_start")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/warm_start")
    ap.add_argument("--cache", type=Path, default=CACHE_ROOT / "warm_start" / "cache.jsonl")
    ap.add_argument("--only-arch", type=int, default=None, metavar="K",
                    help="train only the K-th (0-based) of the --n-archs architectures into the cache and "
                         "write no report: one process per architecture, then the same command without "
                         "--only-arch reads them all from the cache and writes the report")
    ap.add_argument("--reuse-random", type=Path, default=None, metavar="REPORT.json",
                    help="take the random-initialisation curves from an earlier report (<name>.json) with the "
                         "same settings instead of training them again (they do not depend on the GHN)")
    ap.add_argument("--match-norms", action="store_true",
                    help="rescale the predicted weights that feed batch norm to their initial norms before "
                         "fine-tuning (ghnas.warm_start(match_norms=True))")
    ap.add_argument("--orthogonalize", action="store_true",
                    help="replace every predicted weight but the classifier's by its orthonormal QR factor "
                         "(ghnas.warm_start(orthogonalize=True))")
    ap.add_argument("--noise", type=float, default=0.0, metavar="BETA",
                    help="add noise of BETA x the spread of each weight's filter correlations "
                         "(ghnas.warm_start(noise=BETA))")
    ap.add_argument("--ghn-warmup", type=int, default=0, metavar="STEPS",
                    help="linear learning-rate warm-up over the first STEPS steps, for the GHN start only")
    ap.add_argument("--ghn-only", action="store_true",
                    help="with --only-arch: train only the GHN start's curve (when random-initialisation curves "
                         "are not needed, e.g. comparing two warm-start settings)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 1 arch, 6 steps on 512 images, 200 test images, small sizes")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n_archs, args.steps, args.eval_every, args.train_images, args.val_images = 1, 6, 3, 512, 200
        args.size_nb201, args.size_darts, args.name = "C=8,N=1", "C=8,layers=5", "quick_" + args.name
    if args.ghn_only and args.only_arch is None:
        raise SystemExit("--ghn-only needs --only-arch: a report compares GHN and random curves")
    sizes = {"nb201": args.size_nb201, "darts": args.size_darts}
    spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
    t0 = time.time()
    train_data, val_data = load_data(args.data, args.data_root, args.val_images, args.train_images, args.device,
                                     args.eval_split)
    print(f"data: {len(train_data)} train / {len(val_data)} {args.eval_split} images ({time.time() - t0:.1f}s)",
          flush=True)
    cache = JsonlCache(args.cache)
    epochs = None if args.steps else args.epochs
    # the settings that decide a curve: checked against a reused report, and recorded in ours
    curve_settings = dict(seed=args.seed, epochs=epochs, eval_every=args.eval_every, batch_size=args.batch_size,
                          lr=args.lr, bn_mode=args.bn_mode, val_images=len(val_data), eval_split=args.eval_split,
                          train_images=len(train_data), data=args.data)
    if args.reuse_random is not None:
        report = json.loads(args.reuse_random.read_text())
        decide = dict(curve_settings, **({"steps": args.steps} if epochs is None else {}))
        n = seed_random_curves(report, cache, spaces=spaces, settings=decide,
                               sizes={sp: parse_build(sizes[sp]) for sp in spaces})
        print(f"reused {n} random-initialisation curve(s) from {args.reuse_random}", flush=True)
    results: dict[str, Any] = {}
    for space in spaces:
        ghn = (args.ghn_darts if space == "darts" and args.ghn_darts else args.ghn) or DEFAULT_GHN[space]
        src = resolve_ghn_source(ghn)
        cfg = MetaTrainConfig.from_dict(src.config)
        if cfg.space != space:
            raise SystemExit(f"GHN {ghn} was meta-trained on {cfg.space!r}, not {space!r}; use --ghn-darts")
        archs, found = never_trained(_ArchPool(cfg), cfg, args.n_archs, args.seed)
        if args.only_arch is not None:
            if not 0 <= args.only_arch < len(archs):
                raise SystemExit(f"--only-arch {args.only_arch}: there are {len(archs)} architectures (0-based)")
            archs = archs[args.only_arch:args.only_arch + 1]
        bk = parse_build(sizes[space])
        recs = compare_inits(space, archs, str(src.path), train_data, val_data, steps=args.steps, epochs=epochs,
                             eval_every=args.eval_every, build_kwargs=bk, seed=args.seed,
                             train_kwargs={"batch_size": args.batch_size, "lr": args.lr},
                             bn_mode=args.bn_mode, device=args.device, progress=True, cache=cache,
                             ghn_key=file_digest(src.path), match_norms=args.match_norms,
                             orthogonalize=args.orthogonalize, noise=args.noise,
                             inits=("ghn",) if args.ghn_only else ("random", "ghn"), ghn_warmup=args.ghn_warmup)
        if args.ghn_only:
            c = recs[0]["curves"]["ghn"]
            print(f"{space}: GHN start {c['acc'][0]:.2f}% -> {c['acc'][-1]:.2f}% after {c['steps'][-1]} steps", flush=True)
            results[space] = {"ghn": src.label, "build_kwargs": bk, "eval_split": args.eval_split,
                              "arch": recs[0]["arch"], "params": recs[0]["params"], "curve": c}
            continue
        results[space] = {"ghn": src.label, "ghn_steps": src.step, "build_kwargs": bk, "arch_sources": found,
                          "eval_split": args.eval_split, "archs": recs, "summary": summarise(recs)}
        s = results[space]["summary"]
        print(f"{space}: GHN start {s['mean_acc']['ghn'][0]:.2f}% vs random {s['mean_acc']['random'][0]:.2f}%; "
              f"random steps to match the GHN start: {s['steps_to_match_ghn_start']}; final gap "
              f"{s['final_gap_mean']:+.2f}", flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    command = "python benchmarks/bench_warm_start.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.ghn_only:  # one setting's GHN curves, kept beside the reports
        args.out.mkdir(parents=True, exist_ok=True)
        meta = dict(only_arch=args.only_arch, **curve_settings, steps=args.steps, match_norms=args.match_norms,
                    orthogonalize=args.orthogonalize, noise=args.noise, ghn_warmup=args.ghn_warmup, machine=machine, command=command)
        write_atomic(args.out / f"{args.name}.json", json.dumps({"settings": meta, "results": results}, indent=1))
        print(f"wrote {args.out / (args.name + '.json')}", flush=True)
    if args.only_arch is not None:
        print(f"architecture {args.only_arch} is in {args.cache}; the command without --only-arch writes the report",
              flush=True)
        return 0
    last = next(iter(results.values()))["summary"]["steps"][-1] if results else 0
    meta = dict(n_archs=args.n_archs, steps=last, **curve_settings, match_norms=args.match_norms,
                orthogonalize=args.orthogonalize, noise=args.noise, ghn_warmup=args.ghn_warmup,
                device=args.device,
                threads=torch.get_num_threads(), torch=torch.__version__, machine=machine, command=command,
                seconds=time.time() - t0,
                random_curves_from=repo_relative(str(args.reuse_random.resolve())) if args.reuse_random else None)
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / f"{args.name}.json", json.dumps({"settings": meta, "results": results}, indent=1,
                                                            default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else str(o)))
    reused = (f"\nRandom-initialisation curves reused from `{meta['random_curves_from']}` (same architectures, "
              "seed and settings; they do not depend on the GHN).\n" if args.reuse_random else "")
    write_atomic(args.out / f"{args.name}.md",
                 markdown(results, meta) + f"\nCommand: `{meta['command']}`\n" + reused)
    plot(results, args.out / f"{args.name}.png")
    print(f"wrote {args.out / (args.name + '.json')}, .md and .png", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
