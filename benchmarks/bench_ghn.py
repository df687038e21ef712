"""Speed and memory of GHN-2 parameter prediction on this machine's CPU.

Measures, for a GHN-2 with the configuration of ppuda's released CIFAR-10 GHN-2
(hid 32, max_shape 64x64x11x11, 50-hop virtual edges, layer norm; random weights, which
do not change the cost):

* ``ghn(model)`` for one network at a time (graph extraction + prediction + copying into
  the model): torchvision ResNet-50 and ResNet-18 (32x32 adjusted, 10 classes), and the
  DARTS_V2 network with C=16/8 cells and C=36/20 cells. First call and median of reps,
  with a breakdown of one extra call into stages.
* 100 DARTS architectures sampled from the DARTS space (seed 0, C=16, 8 cells): graphs
  are extracted once, then predicted with ``ghn.predict(graphs)`` in batches of
  1/10/25/100 graphs per GHN call; per-architecture time of the GHN part, and of
  building the networks and extracting their graphs.

Each case runs in its own subprocess so that its peak resident memory (``ru_maxrss``)
is its own; ``rss_before_mb`` is the peak before the timed work started (imports, model,
graphs), so ``peak - before`` is what prediction added.

Two thread settings are compared: ``ghn1`` (the default: torch keeps its thread count,
the GHN runs its ops with one intra-op thread, ``GHN2.cpu_threads = 1``) and ``torch``
(``cpu_threads = None``: every op uses torch's thread count). The load average of the
machine is recorded, since other jobs share the CPU.

Usage::

    python benchmarks/bench_ghn.py            # everything, writes benchmarks/results/ghn.{json,md}
    python benchmarks/bench_ghn.py --quick    # fewer reps, no C=36 network, batches of 100 only
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_ARCHS = 100
SEED = 0


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_ghn(mode: str):
    import torch

    from ghnas.ghn import GHN2
    from ghnas.ghn.layers import GatedGNN
    torch.manual_seed(0)
    ghn = GHN2().eval()  # = ppuda's GHN-2 CIFAR-10 config
    if mode == "torch":
        ghn.cpu_threads = None
        GatedGNN.cpu_threads = None
    return ghn


def build(name: str):
    import torch
    torch.manual_seed(0)
    if name in ("resnet50", "resnet18"):
        import torchvision

        from ghnas.nets import adjust_net
        return adjust_net(getattr(torchvision.models, name)(num_classes=10)).eval()
    import search_spaces
    from search_spaces.darts import DARTS_V2
    c, layers = {"darts_c16_l8": (16, 8), "darts_c36_l20": (36, 20)}[name]
    return search_spaces.get("darts").build(DARTS_V2, C=c, layers=layers, num_classes=10).eval()


def stages(ghn, model) -> dict[str, float]:
    """One ghn(model) call split into its stages (seconds)."""
    import torch

    from ghnas.ghn.layers import cpu_threads
    from ghnas.graph import extract
    t = [time.perf_counter()]
    g = extract(model)
    t.append(time.perf_counter())
    batch = ghn.prepare([g])
    t.append(time.perf_counter())
    with torch.no_grad(), cpu_threads(ghn.cpu_threads):
        x = ghn.embed_nodes(batch)
        t.append(time.perf_counter())
        pred = ghn.decode(x, batch)[0]
        t.append(time.perf_counter())
        for k, p in model.named_parameters():
            p.copy_(pred[k])
    t.append(time.perf_counter())
    names = ["extract_graph", "prepare_batch", "gnn", "decode", "copy_into_model"]
    return {n: t[i + 1] - t[i] for i, n in enumerate(names)}


def case_single(name: str, mode: str, reps: int) -> dict:
    import torch
    ghn = make_ghn(mode)
    model = build(name)
    n_params = sum(p.numel() for p in model.parameters())
    before = rss_mb()
    t0 = time.perf_counter()
    ghn(model)
    first = time.perf_counter() - t0
    times, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        ghn(model)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    st = stages(ghn, model)
    return {"case": name, "mode": mode, "params": n_params, "first_call_s": first,
            "median_s": statistics.median(times), "min_s": min(times), "reps": reps, "times_s": times,
            "median_cpu_s": statistics.median(cpu),
            "stages_s": st, "rss_before_mb": before, "rss_peak_mb": rss_mb(),
            "torch_threads": torch.get_num_threads()}


def case_batch(graph_file: str, batch_size: int, mode: str) -> dict:
    import torch
    ghn = make_ghn(mode)
    with open(graph_file, "rb") as f:
        graphs = pickle.load(f)
    before = rss_mb()
    per_call, prep, fwd = [], 0.0, 0.0
    t_all, c_all = time.perf_counter(), time.process_time()
    for i in range(0, len(graphs), batch_size):
        chunk = graphs[i:i + batch_size]
        t0 = time.perf_counter()
        batch = ghn.prepare(chunk)
        t1 = time.perf_counter()
        with torch.no_grad():
            out = ghn.predict(batch)
        t2 = time.perf_counter()
        assert len(out) == len(chunk)
        prep += t1 - t0
        fwd += t2 - t1
        per_call.append(t2 - t0)
    total = time.perf_counter() - t_all
    cpu = time.process_time() - c_all
    return {"case": f"batch{batch_size}", "mode": mode, "batch_size": batch_size, "n_archs": len(graphs),
            "total_s": total, "per_arch_ms": 1000 * total / len(graphs), "cpu_per_arch_ms": 1000 * cpu / len(graphs),
            "prepare_per_arch_ms": 1000 * prep / len(graphs), "predict_per_arch_ms": 1000 * fwd / len(graphs),
            "first_call_s": per_call[0], "calls": len(per_call), "rss_before_mb": before,
            "rss_peak_mb": rss_mb(), "torch_threads": torch.get_num_threads()}


def make_graphs(path: str) -> dict:
    """Sample, build and extract the 100 DARTS networks once (timed), pickle the graphs."""
    import search_spaces

    from ghnas.graph import extract
    space = search_spaces.get("darts")
    archs = space.sample_many(N_ARCHS, seed=SEED)
    t_build = t_extract = 0.0
    graphs, n_nodes, n_params = [], [], []
    for a in archs:
        t0 = time.perf_counter()
        net = space.build(a, C=16, layers=8, num_classes=10).eval()
        t1 = time.perf_counter()
        g = extract(net)
        t2 = time.perf_counter()
        t_build += t1 - t0
        t_extract += t2 - t1
        graphs.append(g)
        n_nodes.append(len(g.nodes))
        n_params.append(sum(p.numel() for p in net.parameters()))
    with open(path, "wb") as f:
        pickle.dump(graphs, f)
    return {"n_archs": N_ARCHS, "seed": SEED, "build_per_arch_ms": 1000 * t_build / N_ARCHS,
            "extract_per_arch_ms": 1000 * t_extract / N_ARCHS, "nodes_mean": statistics.mean(n_nodes),
            "nodes_max": max(n_nodes), "params_mean": statistics.mean(n_params)}


def run_sub(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise RuntimeError(f"case {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def write_md(res: dict, path: Path) -> None:
    lines = ["# GHN-2 prediction speed (CPU)", "",
             f"Machine: {res['machine']['cpus']} CPUs ({res['machine']['processor'] or res['machine']['platform']}), "
             f"torch {res['machine']['torch']}, {res['machine']['torch_threads']} torch threads; "
             f"load average {res['loadavg_start']} at start, {res['loadavg_end']} at end "
             "(the machine is shared with other jobs).", "",
             "GHN: ppuda's GHN-2 CIFAR-10 configuration (hid 32, max_shape 64x64x11x11, 50-hop virtual edges). "
             "Modes: `ghn1` = default (GHN ops on 1 intra-op thread), `torch` = torch's thread count for every op.",
             "", "## One network per call: `ghn(model)`", "",
             "| network | params | mode | first call (s) | median (s) | median CPU (s) | extract | prepare | GNN | decode | copy | peak RSS (MB) | added RSS (MB) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["single"]:
        st = r["stages_s"]
        lines.append(f"| {r['case']} | {r['params']:,} | {r['mode']} | {r['first_call_s']:.3f} | {r['median_s']:.3f} | "
                     f"{r['median_cpu_s']:.3f} | "
                     f"{st['extract_graph']:.3f} | {st['prepare_batch']:.3f} | {st['gnn']:.3f} | {st['decode']:.3f} | "
                     f"{st['copy_into_model']:.3f} | {r['rss_peak_mb']:.0f} | {r['rss_peak_mb'] - r['rss_before_mb']:.0f} |")
    g = res["darts_graphs"]
    lines += ["", f"Stage columns: seconds of one extra call. Median over {res['single'][0]['reps']} calls after the first.",
              "", f"## {g['n_archs']} sampled DARTS architectures (C=16, 8 cells), batched `ghn.predict(graphs)`", "",
              f"Building a network: {g['build_per_arch_ms']:.1f} ms, extracting its graph: "
              f"{g['extract_per_arch_ms']:.1f} ms per architecture (done once, not in the table). "
              f"Graphs: {g['nodes_mean']:.0f} nodes on average (max {g['nodes_max']}), "
              f"{g['params_mean']:,.0f} parameters on average.", "",
              "| graphs per GHN call | mode | per arch (ms) | CPU per arch (ms) | of which prepare (ms) | GNN + decoders (ms) | first call (s) | peak RSS (MB) | added RSS (MB) |",
              "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["batched"]:
        lines.append(f"| {r['batch_size']} | {r['mode']} | {r['per_arch_ms']:.1f} | {r['cpu_per_arch_ms']:.1f} | "
                     f"{r['prepare_per_arch_ms']:.1f} | "
                     f"{r['predict_per_arch_ms']:.1f} | {r['first_call_s']:.2f} | {r['rss_peak_mb']:.0f} | "
                     f"{r['rss_peak_mb'] - r['rss_before_mb']:.0f} |")
    lines += ["", "Times are wall-clock. CPU = CPU seconds used by the benchmark process (all its threads); on "
              "a loaded machine wall time exceeds it by the time spent waiting for a core.",
              "", "Targets: ResNet-50 well under 1 s; batched DARTS under 50 ms per architecture.",
              "Reference (ppuda README of the parity fixtures, its own 2-vCPU machine, incl. graph construction): "
              "ResNet-18 median 0.09 s, DARTS C=16/8 cells 0.39 s.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--modes", default="ghn1,torch")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "ghn"))
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="ghn1", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=7, help=argparse.SUPPRESS)
    ap.add_argument("--graphs", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=10, help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.simplefilter("ignore")

    if args.case == "graphs":
        print(json.dumps(make_graphs(args.graphs)))
        return
    if args.case == "batch":
        print(json.dumps(case_batch(args.graphs, args.batch, args.mode)))
        return
    if args.case:
        print(json.dumps(case_single(args.case, args.mode, args.reps)))
        return

    import torch
    modes = args.modes.split(",")
    reps = 3 if args.quick else 7
    nets = ["resnet50", "resnet18", "darts_c16_l8"] + ([] if args.quick else ["darts_c36_l20"])
    batches = [100] if args.quick else [1, 10, 25, 100]
    res = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor(), "platform": platform.platform(),
                       "python": platform.python_version(), "torch": torch.__version__,
                       "torch_threads": torch.get_num_threads()},
           "loadavg_start": loadavg(), "single": [], "batched": []}
    for name in nets:
        for mode in modes:
            r = run_sub(["--case", name, "--mode", mode, "--reps", str(reps if name != "darts_c36_l20" else 3)])
            print(f"{name:14s} {mode:5s} first {r['first_call_s']:.3f}s median {r['median_s']:.3f}s "
                  f"peak {r['rss_peak_mb']:.0f} MB  {r['stages_s']}", flush=True)
            res["single"].append(r)
    with tempfile.TemporaryDirectory() as tmp:
        gfile = os.path.join(tmp, "graphs.pkl")
        res["darts_graphs"] = run_sub(["--case", "graphs", "--graphs", gfile])
        print("graphs", res["darts_graphs"], flush=True)
        for bs in batches:
            for mode in modes:
                r = run_sub(["--case", "batch", "--graphs", gfile, "--batch", str(bs), "--mode", mode])
                print(f"batch {bs:3d} {mode:5s} {r['per_arch_ms']:.1f} ms/arch (prepare {r['prepare_per_arch_ms']:.1f}) "
                      f"peak {r['rss_peak_mb']:.0f} MB", flush=True)
                res["batched"].append(r)
    res["loadavg_end"] = loadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = out.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(res, indent=1))
    os.replace(tmp_json, out.with_suffix(".json"))
    write_md(res, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
