"""Meta-training throughput: architecture-steps per second, before and after the speed-ups.

Times the steps of meta-training exactly as ``ghnas.metatrain.meta_train`` takes them
(sampling, network building, graph extraction and batching, GHN forward, predicted
networks' forward and backward, GHN backward, Adam), for each space, at the proxy size
(GHN-2's meta-batch of 8 architectures x 64 images) and on the space's multi-size
distribution, with torch's average pooling ("before") and the box-kernel pooling of
``search_spaces.ops.AvgPool2D`` ("after"). ``--amp`` times float32 against bfloat16
autocast instead (box-kernel pooling both; worth it only on CPUs with native bfloat16,
e.g. AVX512-BF16). Steps draw new architectures, so graphs are extracted every step, as
in a real run.

Both wall-clock and CPU time of the process are reported: on a shared machine the CPU
time is the fairer measure of the work a step needs.

    python benchmarks/bench_metatrain_speed.py --steps 10 --out benchmarks/results/metatrain_speed
    python benchmarks/bench_metatrain_speed.py --amp --steps 6 --out benchmarks/results/metatrain_speed/bf16
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ghnas.data  # noqa: E402
from ghnas._io import atomic_write_text  # noqa: E402
from ghnas.ghn import GHN2  # noqa: E402
from ghnas.metatrain import MetaTrainConfig, _ArchPool, _StepInputs, _train_mode, meta_step, resolve_sizes  # noqa: E402
from search_spaces.ops import AvgPool  # noqa: E402

PROXY = {"nb201": {"C": 8, "N": 1}, "darts": {"C": 8, "layers": 5}}


def time_steps(space: str, sizes: str, pool_impl: str, steps: int, warmup: int, seed: int,
               profile: Path | None = None, amp: bool = False) -> dict:
    cfg = MetaTrainConfig(space=space, data="sample", sizes=sizes, build_kwargs=PROXY[space] if sizes == "fixed" else {},
                          steps=steps + warmup, eval_archs=0, seed=seed)
    pool = _ArchPool(cfg)
    train, _ = resolve_sizes(cfg, space, pool.build_kwargs, pool.cost)
    cfg.sizes = tuple(train)
    ghn = GHN2(max_shape=cfg.max_shape, num_classes=10, hid=cfg.hid)
    ghn.shape_enc.warn_unknown = False
    inputs = _StepInputs(pool, cfg, copy.deepcopy(ghn.shape_enc), 10)
    opt = torch.optim.Adam(ghn.parameters(), lr=cfg.lr)
    images = ghnas.data.load("sample")
    real_forward = AvgPool.forward
    if pool_impl == "torch":  # torch's own nn.AvgPool2d.forward
        AvgPool.forward = torch.nn.AvgPool2d.forward
    walls, cpus = [], []
    prof = None
    try:
        for i in range(steps + warmup):
            if profile is not None and i == warmup:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                prof.__enter__()
            w0, c0 = time.perf_counter(), time.process_time()
            _, archs, counts, image_seed, models, batch = inputs[i]
            gen = torch.Generator().manual_seed(image_seed)
            idx = torch.randint(len(images), (cfg.batch_size,), generator=gen)
            x = images.normalize(ghnas.data.random_crop_flip(images.images[idx], generator=gen))
            x = x.contiguous(memory_format=torch.channels_last)
            _train_mode(models)
            meta_step(ghn, opt, models, batch, x, images.labels[idx], cfg.grad_clip, amp, counts)
            if i >= warmup:
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
    finally:
        AvgPool.forward = real_forward
        if prof is not None:
            prof.__exit__(None, None, None)
            precision = "bfloat16 autocast" if amp else "float32"
            write_profile(prof, profile, f"{space}, sizes={sizes}, pooling={pool_impl}, {precision}, {steps} steps")
    return {"space": space, "sizes": sizes, "pool": pool_impl, "amp": amp, "steps": steps, "meta_batch": cfg.meta_batch,
            "wall_s_per_step": float(np.mean(walls)), "cpu_s_per_step": float(np.mean(cpus)),
            "arch_steps_per_s_wall": cfg.meta_batch / float(np.mean(walls)),
            "arch_steps_per_s_cpu": cfg.meta_batch / float(np.mean(cpus))}


def _native_bf16() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


#: op names of the predicted networks' layers (convolutions, batch norm, ReLU, pooling)
NETWORK_OPS = ("convolution", "conv2d", "batch_norm", "threshold_backward", "clamp_min", "relu",
               "avg_pool", "AvgPool", "max_pool")


def write_profile(prof, path: Path, title: str, top: int = 25) -> None:
    """The ops that take the CPU time of the profiled steps (self time, largest first)."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    net = sum(e.self_cpu_time_total for e in events if any(w in e.key for w in NETWORK_OPS))
    lines = [f"# Where a meta-training step's CPU time goes: {title}", "",
             "torch.profiler, self CPU time per op, summed over the profiled steps "
             "(`python benchmarks/bench_metatrain_speed.py --profile`).", "",
             f"The predicted networks' own layers (ops matching {', '.join(NETWORK_OPS)}, forward and "
             f"backward) take **{100 * net / total:.1f}%** of it; removing everything else would make a "
             f"step at most {total / max(net, 1.0):.2f}x faster.", "",
             "| op | calls | self CPU ms | share |", "| --- | ---: | ---: | ---: |"]
    for e in events[:top]:
        lines.append(f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e3:.1f} | "
                     f"{100 * e.self_cpu_time_total / total:.1f}% |")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", default="nb201,darts")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "metatrain_speed"))
    ap.add_argument("--profile", action="store_true",
                    help="instead of the timings: profile the steps (fast pooling) and write "
                         "profile_<space>_<sizes>.md with the ops that take the time")
    ap.add_argument("--amp", action="store_true",
                    help="float32 against bfloat16 autocast (box-kernel pooling), instead of the two poolings")
    args = ap.parse_args(argv)
    if args.profile:
        torch.set_num_threads(args.threads)
        warnings.filterwarnings("ignore", category=UserWarning)
        for space in args.spaces.split(","):
            for sizes in ("fixed", "space"):
                path = Path(args.out) / f"profile_{space}_{sizes}{'_bf16' if args.amp else ''}.md"
                time_steps(space, sizes, "fast", args.steps, args.warmup, args.seed, profile=path, amp=args.amp)
                print(path.read_text())
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    rows = []
    for space in args.spaces.split(","):
        for sizes in ("fixed", "space"):
            for impl, amp in ((("fast", False), ("fast", True)) if args.amp else (("torch", False), ("fast", False))):
                r = time_steps(space, sizes, impl, args.steps, args.warmup, args.seed, amp=amp)
                rows.append(r)
                print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "cpu_bf16": _native_bf16(), "load_avg": os.getloadavg(), "torch": torch.__version__,
            "command": "python benchmarks/bench_metatrain_speed.py " + " ".join(argv or sys.argv[1:])}
    atomic_write_text(out / "speed.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"Meta-training throughput, {args.threads} thread(s), load average {meta['load_avg'][0]:.1f} "
             f"during the run (`{meta['command']}`).", "",
             f"CPU with native bfloat16 (AVX512-BF16 / AMX): {meta['cpu_bf16']}.", "",
             "| space | sizes | pooling | precision | s/step wall | s/step CPU | arch-steps/s (CPU) | speed-up (CPU) |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        # the first timing of the same space and sizes: torch pooling, or float32 under --amp
        base = next(b for b in rows if b["space"] == r["space"] and b["sizes"] == r["sizes"])
        lines.append(f"| {r['space']} | {r['sizes']} | {r['pool']} | {'bfloat16' if r['amp'] else 'float32'} | "
                     f"{r['wall_s_per_step']:.3f} | "
                     f"{r['cpu_s_per_step']:.3f} | {r['arch_steps_per_s_cpu']:.2f} | "
                     f"{base['cpu_s_per_step'] / r['cpu_s_per_step']:.2f}x |")
    atomic_write_text(out / "speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
