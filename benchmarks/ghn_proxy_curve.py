"""The GHN proxy's rank correlation as a function of meta-training step, and what steadies it.

Two stages, on the two halves of a dev set (``../shared/data/nb201/cifar10_dev.csv`` or
``../shared/data/nb301/cifar10_dev.csv``): data rows with an even index form the
*tuning* half, odd rows the *reporting* half.

``--half tune``: over the run's kept snapshots (``ghn_step<N>.pt``), score every
tuning-half architecture at the proxy size with each snapshot on CIFAR-10 *training*
images (``ghnas.data.load('cifar10', split='train')``, the split :func:`ghnas.proxies.score`
uses by default; never test images): image seeds ``--seeds`` (0-2), the first 200 / 500 /
1000 images of each seed's batch, five metrics (``neg_loss``: minus the cross-entropy;
``acc``: accuracy; ``prob``: mean probability of the true label; ``neg_clipped_loss``: minus
the cross-entropy capped per image at chance, ln 10; ``neg_prob``: minus ``prob``). Batch norm uses batch statistics in batches of 100, so the first n
images of a seed's 1000 give exactly the GHN proxy's score with ``batch_size=n`` and that
seed. Then the formulations meant to steady it, all at the last snapshot (``at_step``):

* ``single``: one image batch (the zero-cost proxy as it is), mean over seeds;
* ``seeds``: rank mean over the image seeds (several image batches);
* ``ckpts k``: rank mean over the last k snapshots, per seed;
* ``ckpts+seeds k``: both;
* ``finetune s``: the low-cost proxy :class:`ghnas.proxies.ghn_finetune.GHNFinetuneProxy`
  (s full-batch SGD steps from the prediction on the seed's first 64 images, scored on
  the next ``--finetune-images``).

It writes every Kendall tau / Spearman rho, the spread across seeds and across consecutive
snapshots, and the chosen formulation: the best mean Kendall tau at ``at_step``.

``--half report``: reads the choice (and ``at_step``) from the tuning stage's JSON and
measures that formulation once on the reporting half (its curve over the snapshots too),
next to the GHN proxy's default for the space (its metric and image count, :meth:`GHNProxy.for_space`) and the 200-image batch for reference. Nothing is chosen there.

Results go to ``benchmarks/results/ghn_proxy_curve/<run>_<half>.json``, ``.md`` and ``.png``;
scores are cached per (snapshot weights, architecture, seed) in ``runs/bench_cache/``.

    nice -n 10 python benchmarks/ghn_proxy_curve.py --run runs/ghn-nb201 --half tune --every 500
    nice -n 10 python benchmarks/ghn_proxy_curve.py --run runs/ghn-nb201 --half report --every 500
    # DARTS: a fixed subsample of each half for CPU time
    nice -n 10 python benchmarks/ghn_proxy_curve.py --run runs/ghn-darts --half tune --max-archs 120 --every 100
    python benchmarks/ghn_proxy_curve.py --run runs/ghn-nb201 --half tune --quick   # smoke test
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ghnbench import (CACHE_ROOT, DEV_SETS, REPO, JsonlCache, dev_half, discover_snapshots, file_digest,  # noqa: E402
                       machine, mean_std, parse_build, write_atomic, command_line, repo_relative)

import search_spaces  # noqa: E402
from ghnas.correlation import kendall_tau, spearman_rho  # noqa: E402
from ghnas.ghn import load_ghn  # noqa: E402
from ghnas.ghn.evaluate import evaluate_predicted  # noqa: E402
from ghnas.metatrain import size_label  # noqa: E402
from ghnas.proxies import arch_seed  # noqa: E402
from ghnas.proxies.ghn_finetune import GHNFinetuneProxy  # noqa: E402
from ghnas.searching import PROXY_BUILD_KWARGS  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "ghn_proxy_curve"
# minus the loss, accuracy, and the bounded measures of PredictedEval: the mean true-label
# probability and minus the loss capped at chance per image (confident mistakes count as chance);
# and minus that probability: on NB301 the DARTS GHN is most confident on the worse architectures
METRICS = ("neg_loss", "acc", "prob", "neg_clipped_loss", "neg_prob")
_RECORD = {"acc": "acc", "loss": "loss", "prob": "prob", "closs": "clipped_loss"}  # cached field -> PredictedEval
EVAL_BATCH = 100
RECENT = 3  # the choice on the tuning half: mean Kendall tau over the last 3 snapshots of a formulation
# the low-cost proxy's fine-tuning batch and scored images, as GHNFinetuneProxy ships them
FT_TRAIN_IMAGES = GHNFinetuneProxy().train_images
FT_SCORED_IMAGES = GHNFinetuneProxy.scored_images


# ------------------------------------------------------------------------------ scoring
class Networks:
    """Each architecture built once at the scoring size (torch seed ``arch_seed(0, hash)``, as
    the GHN proxy builds them with seed 0) and its graph. The image seed does not need its
    own build: predicted parameters replace every parameter the forward pass uses, and
    batch norm in training mode ignores its running buffers."""

    def __init__(self, space, archs: Sequence[str], build: dict[str, Any]):
        from ghnas.graph import extract

        self.models, self.graphs = {}, {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # dead ops of degenerate cells
            for a in archs:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(arch_seed(0, space.hash(a)))
                    m = space.build(a, **build)
                self.models[a], self.graphs[a] = m, extract(m)


def image_batch(data, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of seed ``seed``'s shuffled order: what the GHN proxy gets with
    ``batch_size=n, seed=seed`` (and a prefix of the batch of any larger ``n``)."""
    return next(iter(data.batches(n, shuffle=True, seed=seed)))


@torch.no_grad()
def score_snapshot(ghn, digest: str, nets: Networks, archs: Sequence[str], x: torch.Tensor, y: torch.Tensor,
                   seed: int, build: dict, cache: JsonlCache, chunk: int = 16) -> dict[str, dict[str, list]]:
    """Per architecture: each measure of :data:`_RECORD` on each batch of 100 of the seed's
    images (``{'acc': [...], 'loss': [...], ...}``), through the one evaluator of predicted networks."""
    n_batches = len(y) // EVAL_BATCH
    key = lambda a: ["base2", digest, build, a, seed, len(y), EVAL_BATCH]  # noqa: E731
    todo = [a for a in archs if key(a) not in cache]
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        preds = ghn.predict([nets.graphs[a] for a in part])
        for a, params in zip(part, preds):
            rec: dict[str, list] = {f: [] for f in _RECORD}
            for b in range(n_batches):
                sl = slice(b * EVAL_BATCH, (b + 1) * EVAL_BATCH)
                r = evaluate_predicted(nets.models[a], params, x[sl], y[sl], EVAL_BATCH)
                for f, attr in _RECORD.items():
                    rec[f].append(getattr(r, attr))
            cache.put(key(a), rec)
    return {a: cache.get(key(a)) for a in archs}


def metric_value(rec: dict[str, Any], metric: str) -> float:
    """``metric`` (higher is better) from one record of mean measures; NaN when the loss is
    not finite (a degenerate network), as the GHN proxy scores it."""
    if not np.isfinite(rec["loss"]):
        return np.nan
    return {"acc": rec["acc"], "neg_loss": -rec["loss"], "prob": rec["prob"],
            "neg_clipped_loss": -rec["closs"], "neg_prob": -rec["prob"]}[metric]


def base_vector(recs: dict[str, dict], archs: Sequence[str], metric: str, n: int) -> np.ndarray:
    """Scores of ``metric`` on the first ``n`` images (higher is better; NaN: degenerate)."""
    k = n // EVAL_BATCH
    return np.array([metric_value({f: np.mean(recs[a][f][:k]) for f in _RECORD}, metric) for a in archs],
                    dtype=float)


def rank_mean(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Mean rank over several score vectors (NaN ranks last in each)."""
    from scipy.stats import rankdata

    return np.mean([rankdata(np.where(np.isfinite(v), v, -np.inf), method="average") for v in vectors], axis=0)


def correlations(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    return float(kendall_tau(list(scores), list(truth))), float(spearman_rho(list(scores), list(truth)))


def finetune_snapshot(ghn, digest: str, nets: Networks, archs: Sequence[str], x: torch.Tensor, y: torch.Tensor,
                      seed: int, build: dict, steps: int, lr: float, train_images: int, cache: JsonlCache,
                      chunk: int = 16) -> dict[str, dict[str, float]]:
    """The low-cost proxy (:class:`~ghnas.proxies.ghn_finetune.GHNFinetuneProxy`'s computation,
    both metrics from one fine-tuning): ``steps`` SGD steps on ``x[:train_images]``, then
    accuracy and loss on the rest."""
    from ghnas.proxies.ghn_finetune import finetune_predicted

    key = lambda a: ["finetune2", digest, build, a, seed, len(y), steps, lr, train_images]  # noqa: E731
    todo = [a for a in archs if key(a) not in cache]
    for i in range(0, len(todo), chunk):
        part = todo[i:i + chunk]
        with torch.no_grad():
            preds = ghn.predict([nets.graphs[a] for a in part])
        for a, params in zip(part, preds):
            m = nets.models[a]
            tuned = finetune_predicted(m, params, x[:train_images], y[:train_images], steps, lr)
            r = evaluate_predicted(m, tuned, x[train_images:], y[train_images:], EVAL_BATCH)
            cache.put(key(a), {f: getattr(r, attr) for f, attr in _RECORD.items()})
    return {a: cache.get(key(a)) for a in archs}


def finetune_vector(recs: dict[str, dict], archs: Sequence[str], metric: str) -> np.ndarray:
    return np.array([metric_value(recs[a], metric) for a in archs], dtype=float)


# ------------------------------------------------------------------------------ formulations
def formulation_label(f: dict) -> str:
    k = f["kind"]
    base = f"{f['metric']}, {f['n']} images" if not k.startswith("finetune") else \
        f"{f['metric']}, {f['steps']} SGD steps, {f['n']} scored images"
    return {"single": "single batch", "seeds": "rank mean over image seeds",
            "ckpts": f"rank mean over last {f.get('k')} snapshots",
            "ckpts_seeds": f"rank mean over last {f.get('k')} snapshots x image seeds",
            "finetune": "finetune",
            "finetune_seeds": "finetune, rank mean over image seeds"}[k] + f" ({base})"


def formulation_taus(f: dict, idx: int, steps: list[int], base: dict, archs, truth: np.ndarray,
                     seeds: Sequence[int], ft: dict | None = None) -> list[tuple[float, float]] | None:
    """Kendall/Spearman of formulation ``f`` at snapshot index ``idx``: one pair per seed, or one
    pair when the formulation pools the seeds; ``None`` where it is not defined (too few
    snapshots before ``idx``, no fine-tuned scores)."""
    vec = lambda s, i: base_vector(base[(steps[i], s)], archs, f["metric"], f["n"])  # noqa: E731
    kind = f["kind"]
    if kind == "single":
        return [correlations(vec(s, idx), truth) for s in seeds]
    if kind == "seeds":
        return [correlations(rank_mean([vec(s, idx) for s in seeds]), truth)]
    if kind in ("ckpts", "ckpts_seeds"):
        k = f["k"]
        if idx + 1 < k:
            return None
        window = range(idx - k + 1, idx + 1)
        if kind == "ckpts":
            return [correlations(rank_mean([vec(s, i) for i in window]), truth) for s in seeds]
        return [correlations(rank_mean([vec(s, i) for i in window for s in seeds]), truth)]
    if kind in ("finetune", "finetune_seeds"):
        if ft is None:
            return None
        recs = [r for r in (ft.get((steps[idx], s, f["steps"], f["n"])) for s in finetune_seeds_of(ft)) if r is not None]
        vecs = [finetune_vector(r, archs, f["metric"]) for r in recs]
        if kind == "finetune":
            return [correlations(v, truth) for v in vecs] or None
        # one fine-tuning per image seed, ranks averaged: the noise of 64 images averaged out
        return [correlations(rank_mean(vecs), truth)] if len(vecs) > 1 else None
    raise ValueError(f"unknown formulation kind {kind!r}")


def finetune_seeds_of(ft: dict) -> list[int]:
    """The image seeds the low-cost proxy was measured with (keys: step, seed, steps, images)."""
    return sorted({k[1] for k in ft})


def summarise_formulation(f: dict, steps, base, archs, truth, seeds, ft, at: int) -> dict[str, Any]:
    """Tau at snapshot ``at`` (mean, std, min, max over seeds), and the curve over snapshots
    with the spread between consecutive ones (mean and max |change| of the seed-mean tau)."""
    curve = []
    for i in range(len(steps)):
        if steps[i] > steps[at]:
            break
        r = formulation_taus(f, i, steps, base, archs, truth, seeds, ft)
        if r is not None:
            curve.append({"step": steps[i], "kendall": [t for t, _ in r], "spearman": [s for _, s in r]})
    row: dict[str, Any] = {"formulation": f, "label": formulation_label(f), "curve": curve}
    last = next((c for c in curve if c["step"] == steps[at]), None)
    if last is not None:
        row["kendall_mean"], row["kendall_std"] = mean_std(last["kendall"])
        row["spearman_mean"], _ = mean_std(last["spearman"])
        row["kendall_min"], row["kendall_max"] = min(last["kendall"]), max(last["kendall"])
        row["n_values"] = len(last["kendall"])
    means = [float(np.mean(c["kendall"])) for c in curve]
    # the selection criterion: recent snapshots, not one, since single snapshots swing
    row["kendall_recent"] = float(np.mean(means[-RECENT:])) if means else None
    row["recent_points"] = min(RECENT, len(means))
    diffs = np.abs(np.diff(means))
    row["consecutive_abs_change_mean"] = float(diffs.mean()) if diffs.size else None
    row["consecutive_abs_change_max"] = float(diffs.max()) if diffs.size else None
    row["consecutive_abs_change_last3"] = float(diffs[-3:].mean()) if diffs.size else None
    return row


def candidate_formulations(images: Sequence[int], ks: Sequence[int], ft_steps: Sequence[int], ft_images: int,
                           n_seeds: int, n_ft_seeds: int = 1) -> list[dict]:
    out = []
    for metric in METRICS:
        for n in images:
            out.append({"kind": "single", "metric": metric, "n": n})
            if n_seeds > 1:
                out.append({"kind": "seeds", "metric": metric, "n": n})
            for k in ks:
                out.append({"kind": "ckpts", "metric": metric, "n": n, "k": k})
                if n_seeds > 1:
                    out.append({"kind": "ckpts_seeds", "metric": metric, "n": n, "k": k})
        for s in ft_steps:
            out.append({"kind": "finetune", "metric": metric, "n": ft_images, "steps": s})
            if n_ft_seeds > 1:
                out.append({"kind": "finetune_seeds", "metric": metric, "n": ft_images, "steps": s})
    return out


# ------------------------------------------------------------------------------ output
def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [f"# GHN proxy rank correlation vs meta-training step: {m['run']} ({m['half']} half)", "",
             f"Dev set `{m['dev_set']}`, **{m['half']} half** ({'even' if m['half'] == 'tune' else 'odd'} "
             f"data rows), {m['n_archs']} architectures{' (fixed subsample of the half)' if m['subsampled'] else ''}; "
             f"scored at {m['size']} on CIFAR-10 **train-split** images (image seeds {m['seeds']}), batch norm on "
             f"batch statistics in batches of {EVAL_BATCH}. Snapshots: steps {m['steps']}. "
             f"Kendall tau / Spearman rho against the dev set's accuracy.", ""]
    if res.get("chosen"):
        c = res["chosen"]
        lines += [f"**Chosen on the tuning half** (criterion: mean Kendall tau over the last {RECENT} snapshots "
                  f"up to step {m['at_step']} where the formulation is defined; the low-cost proxy is measured at "
                  f"the last one only): {c['label']}: criterion {c['kendall_recent']:.3f} over "
                  f"{c['recent_points']} snapshot(s); at step {m['at_step']} tau {c['kendall_mean']:.3f} "
                  f"(std over seeds {c['kendall_std']:.3f}), Spearman {c['spearman_mean']:.3f}.", ""]
    if res.get("report"):
        lines += ["## Reporting half: the formulation chosen on the tuning half, measured once", "",
                  "| formulation | step | Kendall tau mean | std over seeds | min | max | Spearman | "
                  "mean abs change between consecutive snapshots | tau, mean over last snapshots |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in res["report"]:
            lines.append(_row(r, m["at_step"]))
        lines.append("")
    lines += ["## Kendall tau per snapshot (single image batch): mean over seeds [min, max]", "",
              "| metric | images | " + " | ".join(f"step {s}" for s in m["steps"]) + " | mean abs change, consecutive |",
              "| --- | ---: |" + " ---: |" * (len(m["steps"]) + 1)]
    for c in res["curves"]:
        cells = [f"{np.mean(t):.3f} [{min(t):.2f}, {max(t):.2f}]" for t in c["kendall"]]
        d = c["consecutive_abs_change_mean"]
        lines.append(f"| {c['metric']} | {c['n']} | " + " | ".join(cells) + f" | {'-' if d is None else f'{d:.3f}'} |")
    if res.get("formulations"):
        lines += ["", f"## Formulations at step {m['at_step']} (tuning half)", "",
                  "| formulation | step | Kendall tau mean | std over seeds | min | max | Spearman | "
                  "mean abs change between consecutive snapshots | tau, mean over last snapshots (criterion) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in sorted(res["formulations"], key=lambda r: -r["kendall_recent"]):
            lines.append(_row(r, m["at_step"]))
    lines += ["", f"Command: `{m['command']}`; {m['machine']}; {m['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _row(r: dict, at_step: int) -> str:
    if "kendall_mean" not in r:
        return f"| {r['label']} | {at_step} | n/a | | | | | |"
    d = r["consecutive_abs_change_mean"]
    return (f"| {r['label']} | {at_step} | {r['kendall_mean']:.3f} | {r['kendall_std']:.3f} | {r['kendall_min']:.3f} | "
            f"{r['kendall_max']:.3f} | {r['spearman_mean']:.3f} | {'-' if d is None else f'{d:.3f}'} | "
            f"{r['kendall_recent']:.3f} ({r['recent_points']}) |")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ghnas._io import atomic_savefig

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5.5 * len(METRICS), 4), sharey=True)
    steps = res["meta"]["steps"]
    for ax, metric in zip(axes, METRICS):
        for j, c in enumerate([c for c in res["curves"] if c["metric"] == metric]):
            mean = [np.mean(v) for v in c["kendall"]]
            ax.plot(steps, mean, "o-", color=f"C{j}", label=f"{c['n']} images (mean over seeds)")
            ax.fill_between(steps, [min(v) for v in c["kendall"]], [max(v) for v in c["kendall"]],
                            color=f"C{j}", alpha=0.15)
        for r in res.get("report") or []:
            if r["formulation"].get("metric") == metric and r["curve"]:
                ax.plot([p["step"] for p in r["curve"]], [np.mean(p["kendall"]) for p in r["curve"]], "k*--",
                        label=f"chosen: {r['label'][:40]}")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_title(f"metric {metric} ({res['meta']['half']} half, {res['meta']['n_archs']} archs)", fontsize=9)
        ax.set_xlabel("meta-training step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("Kendall tau vs dev-set accuracy")
    fig.tight_layout()
    atomic_savefig(fig, path)
    plt.close(fig)


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="meta-training run folder with ghn_step<N>.pt snapshots")
    ap.add_argument("--half", choices=("tune", "report"), required=True,
                    help="tune: even dev rows, choose the formulation; report: odd rows, measure the choice once")
    ap.add_argument("--every", type=int, default=0, help="use snapshots at multiples of this step (0: all)")
    ap.add_argument("--max-step", type=int, default=None, help="ignore snapshots after this step")
    ap.add_argument("--min-step", type=int, default=0, help="ignore snapshots before this step")
    ap.add_argument("--name", default=None,
                    help="stem of the result files (default: the run folder's name); a later stretch of "
                         "a run gets its own, e.g. ghn-nb201-late")
    ap.add_argument("--max-archs", type=int, default=0, help="fixed subsample of the half (0: all of it)")
    ap.add_argument("--images", default="200,500,1000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ckpt-k", default="2,3,5", help="window sizes of the snapshot rank mean")
    ap.add_argument("--finetune-steps", default="5,20", help="SGD steps of the low-cost proxy ('' to skip)")
    ap.add_argument("--finetune-lr", type=float, default=0.05)
    ap.add_argument("--finetune-images", type=int, default=FT_SCORED_IMAGES, help="images scored after the SGD steps")
    ap.add_argument("--finetune-seeds", default="0,1,2")
    ap.add_argument("--report-seeds", default=None,
                    help="--half report: image seeds to measure the chosen formulation on (default: the tuning "
                         "stage's); more seeds than were tuned on measure the spread without changing the choice")
    ap.add_argument("--size", default=None, help="scoring size, e.g. C=8,N=1 (default: the proxy size)")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared/data/cifar10"))
    ap.add_argument("--tune-json", type=Path, default=None,
                    help="report stage: the tuning stage's JSON (default: <out>/<run>_tune.json)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--cache-dir", type=Path, default=CACHE_ROOT / "ghn_proxy_curve")
    ap.add_argument("--quick", action="store_true", help="smoke test: 12 archs, 2 seeds, 200 images, last 2 snapshots")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    t0 = time.time()

    cfg = json.loads((args.run / "config.json").read_text())
    space = search_spaces.get(cfg["space"])
    build = dict(PROXY_BUILD_KWARGS.get(space.name, {}))
    if args.size:
        build = parse_build(args.size)
    images = sorted(int(v) for v in args.images.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    ks = [int(k) for k in args.ckpt_k.split(",") if k]
    ft_steps = [int(s) for s in args.finetune_steps.split(",") if s]
    ft_seeds = [int(s) for s in args.finetune_seeds.split(",") if s]
    snaps = [(s, p) for s, p in discover_snapshots(args.run, args.every, args.max_step) if s >= args.min_step]
    stem = (args.name or args.run.name) + ("_quick" if args.quick else "")
    if args.quick:
        images, seeds, ks, ft_steps, ft_seeds = [100, 200], seeds[:2], [2], [2], [0]
        args.max_archs, args.finetune_images, snaps = 12, 100, snaps[-2:]
    if any(n % EVAL_BATCH for n in images):
        raise SystemExit(f"--images must be multiples of {EVAL_BATCH}, got {images}")
    if not snaps:
        raise SystemExit(f"no ghn_step<N>.pt snapshots in {args.run} (with --every {args.every})")

    if args.report_seeds and args.half != "report":
        raise SystemExit("--report-seeds is for --half report (the tuning stage takes --seeds / --finetune-seeds)")
    tune = None
    if args.half == "report":
        tj = args.tune_json or args.out / f"{stem}_tune.json"
        if not tj.exists():
            raise SystemExit(f"report stage needs the tuning stage's choice: {tj} does not exist (run --half tune first)")
        tune = json.loads(tj.read_text())
        at_step = tune["meta"]["at_step"]
        snaps = [(s, p) for s, p in snaps if s <= at_step]
        if not snaps or snaps[-1][0] != at_step:
            raise SystemExit(f"the tuning stage chose at step {at_step}, which is not among the snapshots used here")
        chosen = tune["chosen"]["formulation"]
        # the GHN proxy as it is shipped (its metric and image count)
        from ghnas.proxies.ghn import GHNProxy

        reference = {"kind": "single", "metric": GHNProxy().metric_for(space),
                     "n": GHNProxy().for_space(space).default_batch_size}
        todo_f = [chosen] + ([reference] if reference != chosen else [])
        images = sorted({f["n"] for f in todo_f if not f["kind"].startswith("finetune")} | {200, reference["n"]})
        seeds = tune["meta"]["seeds"]
        ft_steps = [f["steps"] for f in todo_f if f["kind"].startswith("finetune")]
        ft_seeds = tune["meta"].get("finetune_seeds", ft_seeds)
        if args.report_seeds:
            seeds = ft_seeds = [int(s) for s in args.report_seeds.split(",")]
        args.max_archs, args.finetune_images = tune["meta"]["max_archs"], tune["meta"]["finetune_images"]
        args.finetune_lr = tune["meta"]["finetune_lr"]
    steps = [s for s, _ in snaps]
    at = len(steps) - 1

    truth_map = dev_half(space, args.half, max_archs=args.max_archs)
    archs = list(truth_map)
    truth = np.array([truth_map[a] for a in archs])
    print(f"{space.name} {args.half} half: {len(archs)} archs; snapshots {steps}; size {build}", flush=True)
    import ghnas.data

    data = ghnas.data.load("cifar10", root=args.data_root, split="train")
    nets = Networks(space, archs, build)
    cache = JsonlCache(args.cache_dir / f"{args.run.name}.jsonl")
    base: dict[tuple[int, int], dict] = {}
    for s, p in snaps:
        ghn, digest = load_ghn(p), file_digest(p)
        for seed in seeds:
            t1 = time.time()
            x, y = image_batch(data, max(images), seed)
            base[(s, seed)] = score_snapshot(ghn, digest, nets, archs, x, y, seed, build, cache)
            print(f"  step {s} seed {seed}: {time.time() - t1:.0f}s", flush=True)

    ft: dict[tuple, dict] = {}
    if ft_steps:
        s, p = snaps[-1]
        ghn, digest = load_ghn(p), file_digest(p)
        for n_steps in ft_steps:
            for seed in ft_seeds:
                t1 = time.time()
                x, y = image_batch(data, FT_TRAIN_IMAGES + args.finetune_images, seed)
                ft[(s, seed, n_steps, args.finetune_images)] = finetune_snapshot(
                    ghn, digest, nets, archs, x, y, seed, build, n_steps, args.finetune_lr, FT_TRAIN_IMAGES, cache)
                print(f"  finetune {n_steps} steps seed {seed} at step {s}: {time.time() - t1:.0f}s", flush=True)

    curves = []
    for metric in METRICS:
        for n in images:
            row = summarise_formulation({"kind": "single", "metric": metric, "n": n}, steps, base, archs, truth,
                                        seeds, None, at)
            curves.append({"metric": metric, "n": n, "kendall": [c["kendall"] for c in row["curve"]],
                           "spearman": [c["spearman"] for c in row["curve"]],
                           "consecutive_abs_change_mean": row["consecutive_abs_change_mean"],
                           "consecutive_abs_change_max": row["consecutive_abs_change_max"]})
    meta = {"run": repo_relative(str(args.run)), "half": args.half, "dev_set": repo_relative(str(DEV_SETS[space.name][0])),
            "n_archs": len(archs), "subsampled": bool(args.max_archs), "max_archs": args.max_archs,
            "size": size_label(build), "build": build, "seeds": seeds, "images": images, "steps": steps,
            "at_step": steps[at], "finetune_seeds": ft_seeds, "finetune_images": args.finetune_images,
            "finetune_lr": args.finetune_lr, "split": "train",
            "command": command_line("ghn_proxy_curve.py", argv),
            "machine": machine(), "torch": torch.__version__}
    res: dict[str, Any] = {"meta": meta, "curves": curves}
    if tune is None:
        forms = [summarise_formulation(f, steps, base, archs, truth, seeds, ft, at)
                 for f in candidate_formulations(images, ks, ft_steps, args.finetune_images, len(seeds),
                                                 len(ft_seeds))]
        forms = [f for f in forms if "kendall_mean" in f]
        res["formulations"] = forms
        best = max(forms, key=lambda f: (f["kendall_recent"], f["kendall_mean"]))
        res["chosen"] = {k: best[k] for k in ("formulation", "label", "kendall_mean", "kendall_std", "spearman_mean",
                                              "kendall_recent", "recent_points")}
    else:
        res["chosen"] = tune["chosen"]
        res["report"] = [summarise_formulation(f, steps, base, archs, truth, seeds, ft, at) for f in todo_f]
        res["report"][0]["label"] = "CHOSEN: " + res["report"][0]["label"]
        if len(res["report"]) > 1:
            res["report"][1]["label"] = "reference, the ghn proxy's default: " + res["report"][1]["label"]
    meta["seconds"] = time.time() - t0
    name = f"{stem}_{args.half}"
    write_atomic(args.out / f"{name}.json", json.dumps(res, indent=1, default=float) + "\n")
    text = markdown(res)
    write_atomic(args.out / f"{name}.md", text)
    plot(res, args.out / f"{name}.png")
    print(text)


if __name__ == "__main__":
    main()
