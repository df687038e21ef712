"""Time GHN-2 graph extraction (:func:`ghnas.graph.extract`).

For each model we time, as the median (and min) of ``--reps`` runs after one warm-up:

* ``extract`` with each tracing mode: ``trace='real'`` (a real forward pass on CPU, as
  ppuda does), ``trace='meta'`` (a forward pass on the meta device, shapes only) and
  the default ``trace='auto'`` (real up to 128x128 inputs, meta above); the three are
  interleaved within each repetition so that changes of machine load hit them alike;
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
    python benchmarks/bench_graph.py --threads 1
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


MODES = ("auto", "meta", "real")


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
        times: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, list[float]] = {m: [] for m in MODES}  # CPU seconds of this process
        hop: list[float] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = extract(model, shape)
            for m in MODES:  # warm-up: first calls pay for lazy imports and allocator growth
                extract(model, shape, trace=m)
            for _ in range(reps):
                # modes interleaved, so that a change of machine load hits them alike
                for m in MODES:
                    t0, c0 = time.perf_counter(), time.process_time()
                    extract(model, shape, trace=m)
                    times[m].append(time.perf_counter() - t0)
                    cpu[m].append(time.process_time() - c0)
                t0 = time.perf_counter()
                graph.hop_edges(50)
                hop.append(time.perf_counter() - t0)
        row = {
            "model": name, "input_shape": list(shape), "nodes": len(graph),
            "real_edges": int(len(graph.edges)), "edges_with_virtual": int(len(graph.hop_edges(50))),
            "params": sum(p.numel() for p in model.parameters()),
            "auto_uses": "meta" if shape[2] * shape[3] > 128 * 128 else "real",
        }
        for m in MODES:
            row[f"extract_{m}_s"] = statistics.median(times[m])
            row[f"extract_{m}_min_s"] = min(times[m])
            row[f"extract_{m}_runs_s"] = times[m]
            row[f"extract_{m}_cpu_s"] = statistics.median(cpu[m])
        row["hop_edges_s"] = statistics.median(hop)
        row["hop_edges_runs_s"] = hop
        rows.append(row)
        print(f"{name:15s} {len(graph):4d} nodes  " + "  ".join(
            f"{m} {row[f'extract_{m}_s']:.4f} s (min {row[f'extract_{m}_min_s']:.4f})" for m in MODES)
            + f"  hop_edges {row['hop_edges_s']:.4f} s", flush=True)
        del model
    return {
        "benchmark": "ghnas.graph.extract",
        "reps": reps,
        "statistic": "median (and min) over reps after one warm-up run; trace modes interleaved",
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
        f"Seconds per call, median (min) of {res['reps']} runs after a warm-up, on a "
        f"{m['cpu_count']}-core CPU ({m['processor']}; torch {m['torch']} with {m['torch_threads']} "
        f"thread(s)), shared with other jobs: load average {m['loadavg_before'][0]} before, "
        f"{m['loadavg_after'][0]} after, so absolute times are noisy; the columns of one row were "
        "measured interleaved and compare fairly.",
        "",
        "`real`: a real CPU forward pass, as ppuda does (run with one intra-op thread, "
        "whatever the setting above: a batch of one does not gain from more, and on this busy "
        "machine two threads made it 10-100x slower); `meta`: a forward pass on the meta "
        "device (shapes only); `auto` (the default) picks `real` up to 128x128 inputs and "
        "`meta` above. `auto CPU` is the median CPU time of this process for `auto` (less "
        "sensitive to the load than wall time). `hop_edges(50)` adds GHN-2's virtual edges. "
        "ppuda's reference: about 0.02 s "
        "for the ResNet-18 graph (2 vCPU, 2 threads, unloaded).",
        "",
        "| model | input | nodes | edges (real / +virtual) | auto (s) | meta (s) | real (s) | auto CPU (s) | hop_edges(50) (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["rows"]:
        shape = "x".join(str(s) for s in r["input_shape"][2:])
        cells = " | ".join(f"{r[f'extract_{k}_s']:.3f} ({r[f'extract_{k}_min_s']:.3f})" for k in MODES)
        lines.append(f"| {r['model']} | {shape} | {r['nodes']} | {r['real_edges']} / {r['edges_with_virtual']} "
                     f"| {cells} | {r['extract_auto_cpu_s']:.3f} | {r['hop_edges_s']:.4f} |")
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
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    args = ap.parse_args(argv)
    if args.reps < 1:
        raise SystemExit("--reps must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    res = run(args.models, args.reps)
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "graph.json", json.dumps(res, indent=1) + "\n")
    _write(args.out / "graph.md", markdown(res))
    print(f"wrote {args.out / 'graph.json'} and {args.out / 'graph.md'}")


if __name__ == "__main__":
    main()
