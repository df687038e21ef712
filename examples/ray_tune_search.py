"""Search NAS-Bench-201 architectures and learning rates with Ray Tune, guided by a GHN.

* ``GHNSearcher`` scores a pool of architectures with the GHN proxy (as Ray tasks when
  ``--score-workers`` > 1) and proposes them best-first, each with a sampled learning rate.
* Every trial starts from GHN-predicted parameters (``warm_start``), reports the accuracy
  of that initialisation at step 0, fine-tunes briefly and reports again.
* With ``--searcher random`` architectures are drawn at random from the same pool and
  ``ProxyStopper`` stops the ones the proxy ranks in the bottom ``--quantile`` at their
  first report, before they train.

The experiment is written under ``--storage-path``; run the same command again with
``--resume`` after an interruption and Tune continues it (the searcher does not score
the pool again)::

    python examples/ray_tune_search.py --ghn path/to/ghn.pt --pool 32 --trials 6
    python examples/ray_tune_search.py --ghn path/to/ghn.pt --pool 32 --trials 6 --resume

The defaults (a pool of 32, 6 trials of 50 steps, 2 trials at a time) took 4 minutes of
wall clock with a small GHN (hid=16) on a heavily shared 2-core machine, Ray's start-up
included. ``--address auto`` runs on an existing Ray cluster (``ray start --head`` /
``ray start --address=HEAD:6379``; ghnas installed on every node); the GHN and the images
are shipped to the workers through Ray's object store.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402

import search_spaces  # noqa: E402
from ghnas.data import train_val  # noqa: E402
from ghnas.integrations import ProxyScorer, default_build_kwargs, resolve_ghn  # noqa: E402
from ghnas.integrations.ray_tune import GHNSearcher, ProxyStopper, warm_start  # noqa: E402
from ghnas.train import evaluate, train  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--space", default="nb201")
    p.add_argument("--ghn", default=None, help="GHN name or checkpoint path (default: ghnas-<space>-cifar10)")
    p.add_argument("--searcher", choices=("ghn", "random"), default="ghn")
    p.add_argument("--pool", type=int, default=32, help="candidate architectures scored by the proxy")
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--quantile", type=float, default=0.5, help="ProxyStopper quantile (--searcher random)")
    p.add_argument("--steps", type=int, default=50, help="fine-tuning steps per trial")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--proxy-images", type=int, default=None, help="images the GHN proxy evaluates on")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=500)
    p.add_argument("--data", choices=("sample", "cifar10"), default="sample")
    p.add_argument("--root", default=None, help="CIFAR-10 folder for --data cifar10")
    p.add_argument("--score-workers", type=int, default=1, help="Ray tasks that score the pool")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    p.add_argument("--address", default=None, help="Ray cluster address, e.g. 'auto'")
    p.add_argument("--storage-path", default="ray_results", help="where Tune writes the experiment")
    p.add_argument("--name", default="ghnas-ray-tune")
    p.add_argument("--resume", action="store_true", help="continue the experiment in --storage-path/--name")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write a JSON summary here")
    return p.parse_args(argv)


def trainable(config, ghn=None, space="nb201", build_kwargs=None, train_data=None, val_data=None,
              steps=100, batch_size=64):
    """One trial: build ``config['arch']``, warm-start it from the GHN, fine-tune, report."""
    model = search_spaces.get(space).build(config["arch"], **(build_kwargs or {}))
    if ghn is not None:
        # calibrating batch norm on a few training batches makes the step-0 numbers meaningful
        warm_start(model, ghn, data=train_data, calib_batches=2, batch_size=batch_size)
    acc0 = evaluate(model, val_data).accuracy
    tune.report({"step": 0, "acc": acc0, "acc_init": acc0})  # a ProxyStopper decides here
    result = train(model, train_data, steps=steps, batch_size=batch_size, lr=config["lr"], progress=False)
    acc = 0.0 if result.diverged else evaluate(model, val_data).accuracy
    tune.report({"step": steps, "acc": acc, "acc_init": acc0})


def main(argv=None):
    args = parse_args(argv)
    if not ray.is_initialized():
        if args.address:
            ray.init(address=args.address)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False)
    space = search_spaces.get(args.space)
    ghn_ref = args.ghn or f"ghnas-{space.name}-cifar10"
    ghn = resolve_ghn(ghn_ref)  # loaded once here, shipped to the trials by with_parameters
    build = default_build_kwargs(space.name, ghn_ref)
    train_data, val_data = train_val(args.data, args.root, args.train_images, args.val_images)
    scorer = ProxyScorer(space, ghn=ghn, build_kwargs=build, batch_size=args.proxy_images, device="cpu")

    param_space = {"lr": tune.loguniform(1e-3, 0.3)}
    stopper = None
    if args.searcher == "ghn":
        search_alg = GHNSearcher(space, pool=args.pool, scorer=scorer, pool_seed=args.seed,
                                 sample_seed=args.seed, num_workers=args.score_workers)
    else:
        pool = space.sample_many(args.pool, seed=args.seed, unique=True)
        param_space["arch"] = tune.choice(pool)
        search_alg = None
        stopper = ProxyStopper(scorer=scorer, quantile=args.quantile, reference=pool)

    run = tune.with_parameters(trainable, ghn=ghn, space=space.name, build_kwargs=build,
                               train_data=train_data, val_data=val_data, steps=args.steps,
                               batch_size=args.batch_size)
    storage = str(Path(args.storage_path).expanduser().resolve())
    path = os.path.join(storage, args.name)
    if args.resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=run, resume_errored=True)
    else:
        tuner = tune.Tuner(
            run, param_space=param_space,
            tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=args.trials, metric="acc",
                                        mode="max"),
            run_config=tune.RunConfig(name=args.name, storage_path=storage, stop=stopper, verbose=0))
    results = tuner.fit()

    rows = []
    for r in results:
        if r.config is None or r.metrics is None:
            continue
        rows.append({"arch": r.config.get("arch"), "lr": r.config.get("lr"),
                     "proxy_score": r.config.get("proxy_score"), "acc_init": r.metrics.get("acc_init"),
                     "acc": r.metrics.get("acc"), "step": r.metrics.get("step"),
                     "error": r.error is not None})
    summary = {"n_trials": len(rows), "n_stopped": len(stopper.stopped) if stopper else 0,
               "best": max((r for r in rows if r["acc"] is not None), key=lambda r: r["acc"], default=None),
               "trials": rows, "path": path}
    print(json.dumps({k: v for k, v in summary.items() if k != "trials"}, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
