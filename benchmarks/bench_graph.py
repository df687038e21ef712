"""Time GHN-2 graph extraction (:func:`ghnas.graph.extract`).

For each model we time, separately and as the median of ``--reps`` runs after one
warm-up run:

* ``extract`` with the default tracing (``trace='auto'``: a forward pass on the meta
  device, shapes only);
* ``extract`` with ``trace='real'`` (a real forward pass on CPU, as ppuda does);
* ``hop_edges(50)``, GHN-2's virtual edges (all-pairs shortest paths up to 50 hops).

Models: torchvision ResNet-18 and ResNet-50 adjusted to 32x32 (``adjust_net``),
ResNet-50 at 224x224, ViT-B/16 at 224x224, and the DARTS (DARTS_V2 genotype) CIFAR
network with C=16, 8 cells and C=36, 20 cells at 32x32.

The reference: ppuda builds the ResNet-18 graph in about 0.02 s (fixture README, 2 vCPU,
torch with 2 threads). The machine here is shared with other jobs, so the load average
is recorded with the results; compare the rows of one run with each other.

Results: ``benchmarks/results/graph.json`` and ``benchmarks/results/graph.md``.

Usage::

    python benchmarks/bench_graph.py            # all models, 7 repetitions
    python benchmarks/bench_graph.py --reps 3 --models resnet18 darts_c16_l8
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torchvision  # noqa: E402

import search_spaces  # noqa: E402
from ghnas.graph import extract  # noqa: E402
from ghnas.nets import adjust_net  # noqa: E402
from search_spaces.darts import DARTS_V2  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def _models():
    """name -> (constructor, input shape)."""
    def darts(C, layers):
        return lambda: search_spaces.get("darts").build(DARTS_V2, C=C, layers=layers, num_classes=10)

    return {
        "resnet18_32": (lambda: adjust_net(torchvision.models.resnet18(num_classes=10)), (1, 3, 32, 32)),
        "resnet50_32": (lambda: adjust_net(torchvision.models.resnet50(num_classes=10)), (1, 3, 32, 32)),
        "resnet50_224": (lambda: torchvision.models.resnet50(), (1, 3, 224, 224)),
        "vit_b_16_224": (lambda: torchvision.models.vit_b_16(), (1, 3, 224, 224)),
        "darts_c16_l8": (darts(16, 8), (1, 3, 32, 32)),
        "darts_c36_l20": (darts(36, 20), (1, 3, 32, 32)),
    }


def _time(fn, reps: int) -> tuple[float, list[float]]:
    fn()  # warm-up: first calls pay for lazy imports and allocator growth
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def run(names: list[str], reps: int) -> dict:
    models = _models()
    unknown = [n for n in names if n not in models]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; valid: {', '.join(models)}")
    rows = []
    load_before = os.getloadavg()
    for name in names:
        build, shape = models[name]
        torch.manual_seed(0)
        model = build().eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = extract(model, shape)
            t_auto, all_auto = _time(lambda: extract(model, shape), reps)
            t_real, all_real = _time(lambda: extract(model, shape, trace="real"), reps)
        t_hop, all_hop = _time(lambda: graph.hop_edges(50), reps)
        row = {
            "model": name, "input_shape": list(shape), "nodes": len(graph),
            "real_edges": int(len(graph.edges)), "edges_with_virtual": int(len(graph.hop_edges(50))),
            "params": sum(p.numel() for p in model.parameters()),
            "extract_s": t_auto, "extract_real_s": t_real, "hop_edges_s": t_hop,
            "extract_runs_s": all_auto, "extract_real_runs_s": all_real, "hop_edges_runs_s": all_hop,
        }
        rows.append(row)
        print(f"{name:15s} {len(graph):4d} nodes  extract {t_auto:.4f} s  (real forward {t_real:.4f} s)"
              f"  hop_edges {t_hop:.4f} s", flush=True)
        del model
    return {
        "benchmark": "ghnas.graph.extract",
        "reps": reps,
        "statistic": "median after one warm-up run",
        "machine": {
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "note": "2-core CPU shared with other jobs; absolute times vary with the load",
        },
        "ppuda_reference": {"resnet18_32_graph_s": 0.02,
                            "source": "../shared/fixtures/ghn2_parity/README.md (2 vCPU, 2 threads)"},
        "rows": rows,
    }


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# Graph extraction speed (`ghnas.graph.extract`)",
        "",
        f"Median of {res['reps']} runs after a warm-up, on a {m['cpu_count']}-core CPU "
        f"({m['processor']}, torch {m['torch']} with {m['torch_threads']} threads), shared with other "
        f"jobs: load average {m['loadavg_before'][0]} before, {m['loadavg_after'][0]} after.",
        "`extract` traces on the meta device (default, `trace='auto'`); `real forward` is "
        "`trace='real'`, a real CPU forward pass as in ppuda. `hop_edges(50)` adds GHN-2's "
        "virtual edges. ppuda's reference: ~0.02 s for the ResNet-18 graph (unloaded 2 vCPU).",
        "",
        "| model | input | nodes | edges (real / +virtual) | extract (s) | real forward (s) | hop_edges(50) (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["rows"]:
        shape = "x".join(str(s) for s in r["input_shape"][2:])
        lines.append(f"| {r['model']} | {shape} | {r['nodes']} | {r['real_edges']} / {r['edges_with_virtual']} "
                     f"| {r['extract_s']:.4f} | {r['extract_real_s']:.4f} | {r['hop_edges_s']:.4f} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=7, help="timed runs per model (after a warm-up)")
    ap.add_argument("--models", nargs="+", default=list(_models()), help="subset of models")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for graph.json / graph.md")
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit("--reps must be >= 1")
    res = run(args.models, args.reps)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "graph.json", json.dumps(res, indent=1) + "\n")
    _write(args.out / "graph.md", markdown(res))
    print(f"wrote {args.out / 'graph.json'} and {args.out / 'graph.md'}")


if __name__ == "__main__":
    main()
