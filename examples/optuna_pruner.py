"""Tune a NAS-Bench-201 architecture and its learning rate together with Optuna, pruning
the architectures the GHN proxy ranks low before they train.

Each trial suggests an architecture (``suggest_architecture``) and a learning rate; the
GHN proxy pruner scores the architecture and prunes the trial at once if it ranks in
the bottom ``--quantile`` of a pre-scored reference pool. Kept trials start from
GHN-predicted parameters (``--init ghn``, the default) or from a random initialisation,
train briefly, and return their validation accuracy.

The study lives in an RDB storage (SQLite by default), so several copies of this script
can share it, and a crashed run continues where it stopped::

    python examples/optuna_pruner.py --ghn path/to/ghn.pt --trials 30 &
    python examples/optuna_pruner.py --ghn path/to/ghn.pt --trials 30      # 2nd worker

The defaults (10 trials, 50 training steps per kept trial, a 32-architecture reference)
took 4.8 minutes of CPU time with a small GHN (hid=16), 12.5 minutes of wall clock on a
heavily shared 2-core machine; there a pruned trial cost one proxy score (about 5 s) and
a kept one about 2 minutes.
``--data cifar10 --root DIR`` trains on real CIFAR-10 instead of the shipped 1,000-image
sample. Without ``--ghn`` the GHN shipped for the space is used.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import optuna
import torch

import search_spaces
from ghnas.data import train_val
from ghnas.integrations import default_build_kwargs, warm_start
from ghnas.integrations.optuna import SCORE_ATTR, GHNProxyPruner, suggest_architecture
from ghnas.train import evaluate, train


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", default="nb201", help="search space")
    p.add_argument("--ghn", default=None, help="GHN name or checkpoint path (default: the one shipped "
                                               "for the space, ghnas-<space>-cifar10)")
    p.add_argument("--trials", type=int, default=10, help="trials this process runs")
    p.add_argument("--quantile", type=float, default=0.5, help="prune below this quantile of the reference")
    p.add_argument("--reference", type=int, default=32, help="size of the pre-scored reference pool")
    p.add_argument("--steps", type=int, default=50, help="training steps per kept trial")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--proxy-images", type=int, default=None,
                   help="held-out images the GHN proxy evaluates on (default: as ghnas.search, the proxy's own default_batch_size)")
    p.add_argument("--init", choices=("ghn", "random"), default="ghn", help="initialisation of kept trials")
    p.add_argument("--data", choices=("sample", "cifar10"), default="sample",
                   help="training data: the shipped sample (split in two) or CIFAR-10 (--root)")
    p.add_argument("--root", default=None, help="CIFAR-10 folder for --data cifar10")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=500)
    p.add_argument("--storage", default="sqlite:///optuna_ghnas.db", help="Optuna storage URL")
    p.add_argument("--study-name", default="ghnas-nb201-arch-lr")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default: from the process id, "
                                                           "so parallel workers differ)")
    p.add_argument("--cache", default=None, help="JSON-lines file caching proxy scores across runs")
    p.add_argument("--out", default=None, help="write a JSON summary here")
    return p.parse_args(argv)


def main(argv=None) -> optuna.Study:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = search_spaces.get(args.space)
    build = default_build_kwargs(space.name)
    ghn = args.ghn or f"ghnas-{space.name}-cifar10"
    train_data, val_data = train_val(args.data, args.root, args.train_images, args.val_images)

    pruner = GHNProxyPruner(space, ghn=ghn, quantile=args.quantile, reference=args.reference,
                            build_kwargs=build, batch_size=args.proxy_images, cache=args.cache)
    seed = args.seed if args.seed is not None else os.getpid()
    study = optuna.create_study(study_name=args.study_name, storage=args.storage, load_if_exists=True,
                                direction="maximize", pruner=pruner,
                                sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))

    def objective(trial: optuna.Trial) -> float:
        arch = suggest_architecture(trial, space)
        lr = trial.suggest_float("lr", 1e-3, 0.3, log=True)
        if trial.should_prune():  # the GHN proxy ranks this architecture low: no training
            raise optuna.TrialPruned()
        torch.manual_seed(trial.number)
        model = space.build(arch, **build)
        if args.init == "ghn":
            warm_start(model, ghn)
        result = train(model, train_data, steps=args.steps, batch_size=args.batch_size, lr=lr,
                       seed=trial.number, progress=False)
        if result.diverged:
            return 0.0
        return evaluate(model, val_data).accuracy

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    seconds = time.perf_counter() - t0

    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    summary = {
        "n_trials": len(study.trials),
        "n_pruned": states.count(optuna.trial.TrialState.PRUNED),
        "n_complete": len(complete),
        "threshold": pruner.threshold(study),
        "seconds_this_process": round(seconds, 1),
        "best": ({"value": study.best_value, "params": study.best_params,
                  "arch": study.best_trial.user_attrs.get("ghnas_arch"),
                  "proxy_score": study.best_trial.user_attrs.get(SCORE_ATTR)} if complete else None),
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return study


if __name__ == "__main__":
    main(sys.argv[1:])
