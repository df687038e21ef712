"""Accuracy of GHN-predicted parameters on held-out architectures, next to random init.

For each shipped GHN: sample architectures of its space that were never trained on
(the meta-training run's samples are replayed from its seed and excluded, and so are
the held-out architectures used to pick the checkpoint), build them at the GHN's size,
predict their parameters, and evaluate on CIFAR-10 *test* images with batch norm on
batch statistics. The same networks with PyTorch's default initialisation give the
random-init reference.

    python benchmarks/eval_shipped_ghns.py --data-root ../shared/data/cifar10

Writes benchmarks/results/shipped_ghns.json and .md, and copies each run's learning
curve next to them when the run folder is present (runs/ghn-<space>).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ghnas.data  # noqa: E402
from ghnas.ghn import load_ghn  # noqa: E402
from ghnas.ghn.hub import asset_dir  # noqa: E402
from ghnas.metatrain import MetaTrainConfig, _ArchPool, evaluate_ghn  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def trained_hashes(pool: _ArchPool, cfg: MetaTrainConfig, steps: int) -> set[str]:
    """Hashes of every architecture the run sampled for training (replayed from its seed)."""
    out = set()
    for step in range(steps):
        rng = np.random.default_rng([cfg.seed, step])
        out.update(pool.space.hash(a) for a in pool.sample(rng, cfg.meta_batch))
    return out


@torch.no_grad()
def random_init_accuracy(pool: _ArchPool, archs: list[str], data, batch: int, seed: int) -> list[float]:
    accs = []
    for i, a in enumerate(archs):
        torch.manual_seed(seed + i)
        model = pool.space.build(a, **pool.build_kwargs).train()  # batch statistics, as for the GHN
        correct = 0
        for x, y in data.batches(batch):
            out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            correct += int((out.argmax(1) == y).sum())
        accs.append(correct / len(data))
    return accs


def evaluate_space(space: str, n_archs: int, n_images: int, data_root: str | None, seed: int) -> dict:
    name = f"ghnas-{space}-cifar10"
    meta = json.loads((asset_dir() / f"{name}.json").read_text())
    cfg = MetaTrainConfig.from_dict(meta["config"])
    ghn = load_ghn(name)
    pool = _ArchPool(cfg)
    excluded = trained_hashes(pool, cfg, meta["steps_trained"]) | {pool.space.hash(a) for a in pool.heldout}
    rng = np.random.default_rng([seed, 2024])
    archs: list[str] = []
    seen = set(excluded)
    while len(archs) < n_archs:
        a = pool.space.sample(rng)
        h = pool.space.hash(a)
        if h not in seen:
            seen.add(h)
            archs.append(a)
    test = ghnas.data.load("cifar10", root=data_root, split="test").subset(n_images, seed=seed)
    t0 = time.perf_counter()
    ghn_res = evaluate_ghn(ghn, pool, archs, test, torch.device("cpu"), batch=100)
    t_ghn = time.perf_counter() - t0
    rand = random_init_accuracy(pool, archs, test, 100, seed)
    return {
        "ghn": name, "space": space, "build_kwargs": pool.build_kwargs,
        "n_archs": n_archs, "n_test_images": n_images, "seed": seed,
        "meta_training_steps": meta["steps_trained"], "excluded_trained_archs": len(excluded),
        "ghn_acc_mean": ghn_res["acc_mean"], "ghn_acc_max": ghn_res["acc_max"],
        "ghn_acc_min": ghn_res["acc_min"],
        "random_acc_mean": float(np.mean(rand)), "random_acc_max": float(np.max(rand)),
        "seconds_ghn_eval": t_ghn, "archs": archs,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--spaces", default="nb201,darts")
    ap.add_argument("--n-archs", default="nb201=50,darts=20",
                    help="held-out architectures per space, e.g. nb201=50,darts=20")
    ap.add_argument("--images", type=int, default=1000, help="CIFAR-10 test images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    n_archs = {k: int(v) for k, v in (kv.split("=") for kv in args.n_archs.split(","))}
    rows = []
    for space in args.spaces.split(","):
        rows.append(evaluate_space(space, n_archs.get(space, 20), args.images, args.data_root, args.seed))
        run_curve = REPO / "runs" / f"ghn-{space}" / "curve.png"
        if run_curve.exists():
            shutil.copyfile(run_curve, RESULTS / f"ghn_{space}_curve.png")
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {"machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
           "torch": torch.__version__}
    (RESULTS / "shipped_ghns.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
    lines = ["# Shipped GHNs: predicted parameters on held-out architectures (CIFAR-10 test)", "",
             "Held-out architectures exclude every architecture sampled during meta-training and "
             "the ones used to pick the checkpoint. No training of the evaluated networks: "
             "parameters are predicted (GHN) or PyTorch's default initialisation (random), "
             "batch norm on batch statistics (batches of 100 images).", "",
             "| GHN | network size | meta-training steps | archs | test images | GHN mean acc | GHN max acc | random-init mean acc | random-init max acc |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['ghn']} | {r['build_kwargs']} | {r['meta_training_steps']} | {r['n_archs']} | "
                     f"{r['n_test_images']} | {100 * r['ghn_acc_mean']:.1f}% | {100 * r['ghn_acc_max']:.1f}% | "
                     f"{100 * r['random_acc_mean']:.1f}% | {100 * r['random_acc_max']:.1f}% |")
    lines += ["", f"Command: `python benchmarks/eval_shipped_ghns.py --data-root <CIFAR-10>` (seed {args.seed}); "
              f"{env['machine']}."]
    (RESULTS / "shipped_ghns.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
