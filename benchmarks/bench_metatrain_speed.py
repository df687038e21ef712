"""Meta-training throughput: architecture-steps per second, before and after the speed-ups.

Times the steps of meta-training exactly as ``ghnas.metatrain.meta_train`` takes them
(sampling, network building, graph extraction and batching, GHN forward, predicted
networks' forward and backward, GHN backward, Adam), for each space, at the proxy size
(GHN-2's meta-batch of 8 architectures x 64 images) and on the space's multi-size
distribution, with torch's average pooling ("before") and the box-kernel pooling of
``search_spaces.ops.AvgPool2D`` ("after"). Steps draw new architectures, so graphs are
extracted every step, as in a real run.

Both wall-clock and CPU time of the process are reported: on a shared machine the CPU
time is the fairer measure of the work a step needs.

    python benchmarks/bench_metatrain_speed.py --steps 10 --out benchmarks/results/metatrain_speed
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


def time_steps(space: str, sizes: str, pool_impl: str, steps: int, warmup: int, seed: int) -> dict:
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
    try:
        for i in range(steps + warmup):
            w0, c0 = time.perf_counter(), time.process_time()
            _, archs, counts, image_seed, models, batch = inputs[i]
            gen = torch.Generator().manual_seed(image_seed)
            idx = torch.randint(len(images), (cfg.batch_size,), generator=gen)
            x = images.normalize(ghnas.data.random_crop_flip(images.images[idx], generator=gen))
            x = x.contiguous(memory_format=torch.channels_last)
            _train_mode(models)
            meta_step(ghn, opt, models, batch, x, images.labels[idx], cfg.grad_clip, False, counts)
            if i >= warmup:
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
    finally:
        AvgPool.forward = real_forward
    return {"space": space, "sizes": sizes, "pool": pool_impl, "steps": steps, "meta_batch": cfg.meta_batch,
            "wall_s_per_step": float(np.mean(walls)), "cpu_s_per_step": float(np.mean(cpus)),
            "arch_steps_per_s_wall": cfg.meta_batch / float(np.mean(walls)),
            "arch_steps_per_s_cpu": cfg.meta_batch / float(np.mean(cpus))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", default="nb201,darts")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "metatrain_speed"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    rows = []
    for space in args.spaces.split(","):
        for sizes in ("fixed", "space"):
            for impl in ("torch", "fast"):
                r = time_steps(space, sizes, impl, args.steps, args.warmup, args.seed)
                rows.append(r)
                print(json.dumps(r), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"threads": args.threads, "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "torch": torch.__version__,
            "command": "python benchmarks/bench_metatrain_speed.py " + " ".join(argv or sys.argv[1:])}
    atomic_write_text(out / "speed.json", json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"Meta-training throughput, {args.threads} thread(s), load average {meta['load_avg'][0]:.1f} "
             f"during the run (`{meta['command']}`).", "",
             "| space | sizes | pooling | s/step wall | s/step CPU | arch-steps/s (CPU) | speed-up (CPU) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        base = next(b for b in rows if b["space"] == r["space"] and b["sizes"] == r["sizes"] and b["pool"] == "torch")
        lines.append(f"| {r['space']} | {r['sizes']} | {r['pool']} | {r['wall_s_per_step']:.3f} | "
                     f"{r['cpu_s_per_step']:.3f} | {r['arch_steps_per_s_cpu']:.2f} | "
                     f"{base['cpu_s_per_step'] / r['cpu_s_per_step']:.2f}x |")
    atomic_write_text(out / "speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
