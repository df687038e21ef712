"""Meta-train the GHNs that ship with ghnas, and install them as package data.

The exact configurations of the shipped GHNs live here. A run is resumable: run the
same command again after an interruption and it continues from its last checkpoint.

    python benchmarks/train_shipped_ghns.py --space nb201 --data-root ../shared/data/cifar10
    python benchmarks/train_shipped_ghns.py --space darts --data-root ../shared/data/cifar10
    python benchmarks/train_shipped_ghns.py --space nb201 --install   # copy into ghnas/assets
    python benchmarks/train_shipped_ghns.py --space nb201 --export    # commit-able resume state
    # a branch of the run from its last checkpoint, here with the learning-rate drops moved
    # so that the first has just passed (drops at 67% / 83% of --steps)
    python benchmarks/train_shipped_ghns.py --space nb201 --fork-from runs/ghn-nb201 \
        --out runs/ghn-nb201-decay --steps 9328 --data-root ../shared/data/cifar10

A run spans many sessions and machines: ``--export`` copies its resumable state into
``benchmarks/runs/<name of the run folder>/`` (tracked by git; ``ghn-<space>`` by default), and on a machine without a run folder the
training command continues from there.

On a GPU, ``--gpu`` uses the GPU recipe (GHN-2's meta-batch of 8 in both spaces, worker
processes preparing graphs) and ``--budget-s`` sizes the run to a time budget: it times
a few steps, then fixes ``steps`` (recorded in the run's config.json, so the run is
reproducible with ``--steps``):

    python benchmarks/train_shipped_ghns.py --space darts --gpu --device cuda --budget-s 400

Training uses CIFAR-10's training images (minus a 5,000-image validation split, on which
the learning curve is measured, with held-out architectures). Test images are never used
here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ghnas._io import atomic_write_bytes  # noqa: E402
from ghnas.metatrain import MetaTrainConfig, meta_train, plot_curve  # noqa: E402
from ghnas.searching import PROXY_BUILD_KWARGS  # noqa: E402

# GHN-2's recipe (meta-batch 8, Adam 1e-3, wd 1e-5, clip 5, image batch 64, lr drops late),
# trained on the space's multi-size distribution (metatrain.DEFAULT_SIZES: from the proxy
# sizes up to the sizes users train) with an exponential moving average of the weights.
# `steps` is the length of the whole run, continued over many sessions and machines: the
# learning-rate drops come at 67% and 83% of it.
CONFIGS = {
    "nb201": dict(space="nb201", sizes="space", steps=20000, ema=0.998, eval_every=500, eval_archs=20,
                  eval_images=500, ckpt_every=50, keep_every=250),
    # DARTS networks are ~10x slower than NB201 ones on CPU: half the meta-batch
    "darts": dict(space="darts", sizes="space", steps=5000, meta_batch=4, ema=0.995, eval_every=250,
                  eval_archs=10, eval_images=200, ckpt_every=10, keep_every=50),
}


# On a GPU: GHN-2's meta-batch in both spaces; graph extraction (CPU) runs in worker
# processes so the GPU is not kept waiting. `steps` comes from --steps or --budget-s.
GPU_CONFIGS = {
    "nb201": dict(space="nb201", sizes="space", ema=0.998, meta_batch=8, eval_archs=20, eval_images=500,
                  workers=5),
    "darts": dict(space="darts", sizes="space", ema=0.995, meta_batch=8, eval_archs=20, eval_images=500,
                  workers=6),
}


# the files of a run folder that continuing it needs (the GHN files are re-written from the state)
# ghn_best.pt too: the validation-best snapshot would otherwise be lost with the run folder
# (a restored run then keeps its record of the best, and --install works on the new machine)
RESUME_FILES = ("state.pt", "config.json", "history.json", "curve.png", "ghn_best.pt")
# kept gzipped in git: the per-step history grows by ~150 bytes a step (2.5 MB at 16,000 steps)
COMPRESSED = {"history.json"}


def copy_resume_files(src: Path, dst: Path, to_git: bool = False) -> list[str]:
    """Copy a run's :data:`RESUME_FILES` from ``src`` to ``dst``; the names copied.

    The committed folder (``benchmarks/runs/<run folder name>``) holds :data:`COMPRESSED` files
    as ``<name>.gz``: ``to_git`` writes them so (``src`` is a run folder), otherwise a
    ``.gz`` in ``src`` is unpacked (a plain file there, from an older export, is used as is).
    """
    import gzip

    dst.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in RESUME_FILES:
        packed = name in COMPRESSED
        if to_git and packed and (src / name).exists():
            with open(src / name, "rb") as f:
                atomic_write_bytes(dst / f"{name}.gz", gzip.compress(f.read(), mtime=0))
            (dst / name).unlink(missing_ok=True)  # an older export's plain copy
        elif not to_git and packed and (src / f"{name}.gz").exists():
            atomic_write_bytes(dst / name, gzip.decompress((src / f"{name}.gz").read_bytes()))
        elif (src / name).exists():
            shutil.copyfile(src / name, dst / name)
        else:
            continue
        copied.append(name)
    return copied


def config_for(space: str, data_root: str | None, device: str, gpu: bool = False,
               steps: int | None = None, amp: bool = True) -> MetaTrainConfig:
    kw = dict((GPU_CONFIGS if gpu else CONFIGS)[space], amp=amp)
    if steps is not None:
        kw["steps"] = steps
    if gpu:
        if "steps" not in kw:
            raise SystemExit("the GPU recipe needs --steps or --budget-s")
        kw["eval_every"] = max(50, kw["steps"] // 10)
    return MetaTrainConfig(data="cifar10", data_root=data_root, device=device,
                           build_kwargs=dict(PROXY_BUILD_KWARGS[space]), **kw)


def steps_for_budget(cfg: MetaTrainConfig, budget_s: float, probe_steps: tuple[int, int] = (20, 60)) -> int:
    """Steps that fit in ``budget_s`` seconds, timed with two probe runs (thrown away).

    The time per step is the difference of a short and a longer probe divided by their
    difference in steps, so start-up costs (data, CUDA, worker processes) cancel out.
    The probes count against the budget; 15% of the rest is left for the periodic evaluations and checkpoints; rounds down
    to a multiple of 50.
    """
    import tempfile
    import time

    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in probe_steps:
            probe = dataclasses.replace(cfg, steps=n, eval_every=0, eval_archs=0, seed=cfg.seed + 1)
            t = time.perf_counter()
            meta_train(Path(tmp) / str(n), probe, progress=False)
            times.append(time.perf_counter() - t)
    per_step = max(times[1] - times[0], 1e-3) / (probe_steps[1] - probe_steps[0])
    steps = int(0.85 * (budget_s - sum(times)) / per_step) // 50 * 50
    print(f"probe: {per_step * 1000:.0f} ms/step (runs of {probe_steps} steps took "
          f"{times[0]:.1f} s, {times[1]:.1f} s) -> {steps} steps in {budget_s:.0f} s", flush=True)
    if steps < 50:
        raise SystemExit(f"a budget of {budget_s} s allows fewer than 50 steps ({per_step:.2f} s/step)")
    return steps


def compare_on_validation(space: str, run_dir: Path, candidate: Path) -> dict:
    """Held-out mean accuracy of ``candidate`` and of the GHN shipped now, on the run's
    held-out architectures and validation images, at each of the run's evaluation sizes.

    This is how a new GHN is chosen: never on test images or the dev sets' halves.
    """
    import torch

    import ghnas.data
    from ghnas.ghn import load_ghn
    from ghnas.metatrain import MetaTrainConfig, _ArchPool, evaluate_ghn, size_label

    cfg = MetaTrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    pool = _ArchPool(cfg)
    data = ghnas.data.load(cfg.data, root=cfg.data_root, split="val", seed=cfg.seed)
    data = data.subset(min(cfg.eval_images, len(data)), seed=cfg.seed)
    out: dict = {}
    ghns = {"candidate": load_ghn(str(candidate)), "shipped": load_ghn(f"ghnas-{space}-cifar10")}
    for who, ghn in ghns.items():
        out[who] = {size_label(e["build"]): evaluate_ghn(ghn, pool, pool.heldout, data, torch.device("cpu"),
                                                         cfg.eval_batch, build_kwargs=e["build"])["acc_mean"]
                    for e in cfg.eval_sizes}
        out[who]["mean"] = sum(out[who].values()) / len(cfg.eval_sizes)
    return out


def install(space: str, run_dir: Path, command: str, force: bool = False) -> Path | None:
    """Copy the run's best GHN into ghnas/assets with a sidecar JSON describing it, and
    draw the run's learning curve into benchmarks/results/ghn_<space>_curve.png.

    Only when it beats the GHN shipped now on validation (:func:`compare_on_validation`),
    unless ``force``.
    """
    name = f"ghnas-{space}-cifar10"
    hist = json.loads((run_dir / "history.json").read_text())
    cfg = json.loads((run_dir / "config.json").read_text())
    src = run_dir / "ghn_best.pt"
    cmp = compare_on_validation(space, run_dir, src)
    print(json.dumps(cmp, indent=1))
    if cmp["candidate"]["mean"] <= cmp["shipped"]["mean"] and not force:
        print(f"not installed: {src} is no better on validation than the shipped {name}")
        return None
    dst = REPO / "ghnas" / "assets" / f"{name}.pt"
    shutil.copyfile(src, dst)
    best = max(hist["evals"], key=lambda e: e["acc_mean"])
    meta = {"name": name, "space": space, "build_kwargs": cfg["build_kwargs"], "config": cfg,
            # the shipped weights are ghn_best.pt's: the steps they had, not the run's last step
            "command": command, "steps_trained": best["step"], "run_steps": hist["history"][-1]["step"],
            "best_eval": best, "validation_vs_previous": cmp, "evals": hist["evals"]}
    (dst.with_suffix(".json")).write_text(json.dumps(meta, indent=1) + "\n")
    curve = REPO / "benchmarks" / "results" / f"ghn_{space}_curve.png"
    plot_curve(hist["history"], hist["evals"], curve,
               f"GHN-2 on {space}: held-out architectures, validation images")
    print(curve)
    return dst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--data-root", default=None, help="CIFAR-10 root (ImageFolder tree or torchvision files)")
    ap.add_argument("--out", default=None, help="run folder (default runs/ghn-<space>)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gpu", action="store_true", help="the GPU recipe (GPU_CONFIGS)")
    ap.add_argument("--no-amp", action="store_true", help="float32 on the GPU (no bfloat16 autocast)")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="choose the number of steps that fits this many seconds (timed probe)")
    ap.add_argument("--install", action="store_true", help="copy the finished run into ghnas/assets")
    ap.add_argument("--force", action="store_true", help="--install even if not better on validation")
    ap.add_argument("--fork-from", type=Path, default=None, metavar="RUN",
                    help="start --out as a branch of the run folder RUN (its resume files at its last "
                         "checkpoint), e.g. to try another --steps (learning-rate schedule) from there")
    ap.add_argument("--export", action="store_true",
                    help=f"copy what a resume needs ({', '.join(RESUME_FILES)}) into "
                         "benchmarks/runs/<name of --out>/ (default ghn-<space>), which git tracks")
    args = ap.parse_args(argv)
    out = Path(args.out or REPO / "runs" / f"ghn-{args.space}")
    # the committed copy of a run is named like its folder: runs/ghn-nb201 <-> benchmarks/runs/ghn-nb201
    committed = REPO / "benchmarks" / "runs" / out.name
    if args.export:
        copied = copy_resume_files(out, committed, to_git=True)
        print(f"copied {', '.join(copied)} of {out} to {committed} (history gzipped)")
        return
    if args.install:
        cfg = json.loads((out / "config.json").read_text())
        cmd = f"python benchmarks/train_shipped_ghns.py --space {args.space} --data-root <CIFAR-10>"
        if out.name != f"ghn-{args.space}":  # a branch of the run (--fork-from): its own folder
            cmd += f" --out runs/{out.name}"
        if cfg.get("workers"):  # trained with the GPU recipe
            cmd += f" --gpu --device cuda --steps {cfg['steps']}" + ("" if cfg["amp"] else " --no-amp")
        elif cfg["steps"] != CONFIGS[args.space]["steps"]:
            cmd += f" --steps {cfg['steps']}"
        print(install(args.space, out, cmd, force=args.force))
        return
    if args.fork_from is not None:
        if (out / "state.pt").exists():
            raise SystemExit(f"--fork-from: {out} already holds a run; choose a new --out")
        copy_resume_files(args.fork_from, out)
        print(f"branching {args.fork_from} into {out}", flush=True)
    elif not (out / "state.pt").exists() and (committed / "state.pt").exists():
        # a new machine: continue the run committed to the repository
        copy_resume_files(committed, out)
        print(f"continuing the committed run {committed} in {out}", flush=True)
    resume = (out / "state.pt").exists()
    steps = args.steps
    if args.budget_s and not resume:
        steps = steps_for_budget(config_for(args.space, args.data_root, args.device, args.gpu, 1000,
                                            not args.no_amp), args.budget_s)
    cfg = config_for(args.space, args.data_root, args.device, args.gpu, steps, not args.no_amp)
    res = meta_train(out, cfg, resume=resume)
    print(json.dumps(res.evals[-1] if res.evals else {}, indent=1))


if __name__ == "__main__":
    main()
